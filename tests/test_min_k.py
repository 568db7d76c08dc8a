"""Min-K% contamination scores: known answers, the question tokens they cover, a memorised text
against its own words shuffled on the real model, and `--tasks FILE:min_k` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli_config import truthprobe
from test_mdl import data_summary, model_rated_sweep

from truthprobe.activations import ActivationCache
from truthprobe.data import load_dataset
from truthprobe.hardness import stratify
from truthprobe.mdl import model_scores
from truthprobe.min_k import DEFAULT_PERCENT, hardness_column, min_k, min_k_rows
from truthprobe.prompts import MULTIPLE_CHOICE, YES_NO
from truthprobe.scoring import encode, encode_texts, forward_batch


def test_min_k_is_the_mean_of_the_lowest_k_percent():
    values = np.array([-0.5, -6.0, -1.0, -3.0, -0.1, -2.0, -0.2, -4.0, -0.3, -0.4])
    got = min_k(values, (10, 20, 30, 50, 100))
    want = [-6.0, (-6 - 4) / 2, (-6 - 4 - 3) / 3, (-6 - 4 - 3 - 2 - 1) / 5, values.mean()]
    np.testing.assert_allclose(got, want)
    assert min_k(values[:3], (10,))[0] == -6.0  # ceil: at least one token
    assert np.isnan(min_k(np.zeros(0), (20,))).all()  # nothing scored (truncated away)
    rows = min_k_rows([values, values[:1]], (20, 100))
    assert rows.shape == (2, 2) and rows.dtype == np.float32 and rows[1, 0] == -0.5
    # as hardness: negated, so the likely-seen (high Min-K%) item is the easier one
    easy, hard = hardness_column(np.array([[-0.2, 0.0], [-3.0, 0.0]]), (20, 100), 20)
    assert easy < hard and DEFAULT_PERCENT == 20


def test_question_tokens_are_exactly_the_question_text(gemma_fp32, load):
    for dataset, template in (("arc", MULTIPLE_CHOICE), ("strategyqa", YES_NO)):
        for record in load(dataset).records[:40]:
            item = encode(gemma_fp32.tokenizer, template, record)
            start, stop = item.question
            assert 1 <= start < stop <= len(item.prefix)
            text = gemma_fp32.tokenizer.decode(item.prefix[start:stop])
            assert text.strip() == record.question.strip(), record.id
        drop = start + 2  # tokens 1..start-1 precede the question: three of its tokens go
        cut = item.truncated(len(item.prefix) - drop + max(len(c) for c in item.choices))
        assert cut.question == (1, stop - drop)


def test_a_memorised_text_scores_higher_than_its_words_shuffled(gemma_fp32):
    """The premise of Min-K%: text seen in training has fewer very unlikely tokens."""
    famous = (
        "We hold these truths to be self-evident, that all men are created equal, that they "
        "are endowed by their Creator with certain unalienable Rights, that among these are "
        "Life, Liberty and the pursuit of Happiness."
    )
    words = famous.split()
    shuffled = " ".join(np.random.default_rng(0).permutation(words))
    items = [
        encode_texts(gemma_fp32.tokenizer, f"Q: {text}", [" A"], str(i), (3, 3 + len(text)))
        for i, text in enumerate((famous, shuffled))
    ]
    out = forward_batch(gemma_fp32, items, [], 1, question_scores=True)
    seen, unseen = min_k_rows(out.question_logprob, (20,))[:, 0]
    seen_pp, unseen_pp = min_k_rows(out.question_zscore, (20,))[:, 0]
    assert seen > unseen + 1.0, (seen, unseen)
    assert seen_pp > unseen_pp, (seen_pp, unseen_pp)


@pytest.mark.slow
def test_a_sweep_stratifies_by_min_k_read_from_the_cache(tiny_model_dir, arc_sample, tmp_path):
    sample, args = model_rated_sweep(
        ("min_k", "min_k_pp"), arc_sample, 120, tiny_model_dir, tmp_path
    )
    run = truthprobe(*args)
    assert run.returncode == 0, run.stderr
    assert ":min_k " in run.stdout and ":min_k_pp" in run.stdout and "min_k ~ grade" in run.stdout
    cache = next((tmp_path / "act").rglob("*.h5"))
    with ActivationCache(cache) as opened:
        scores = opened.score("min_k")
        assert scores.shape == (120, len(opened.min_k_percents)) and np.isfinite(scores).all()
        assert (np.diff(scores, axis=1) >= -1e-6).all()  # more tokens averaged: never lower
        assert (opened.score("question_tokens") > 0).all()
    assert not list((tmp_path / "act").rglob("*.hardness.npz"))  # nothing stored beside
    summary = data_summary(sample, "min_k", tmp_path / "act")
    assert "Spearman with grade" in summary.stdout and "zero-shot" in summary.stdout
    # each stratum's zero-shot accuracy, recomputed here from the cached log-likelihoods
    with ActivationCache(cache) as opened:
        logprob = opened.score("choice_logprob")
        logprob[~opened.item("choice_mask")] = -np.inf
        right = dict(zip(opened.ids, logprob.argmax(1) == opened.item("answer_index"), strict=True))
        scores = model_scores(opened, "min_k")
    records = load_dataset(sample).records
    strata = stratify(records, "min_k", scores)
    for stratum in ("easy", "hard"):
        hits = [right[r.id] for r, s in zip(records, strata, strict=True) if s == stratum]
        line = next(x for x in summary.stdout.splitlines() if x.startswith(stratum))
        assert line.split()[1:3] == [str(len(hits)), f"{np.mean(hits):.3f}"], line
