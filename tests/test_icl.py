"""ICL prompts, demonstrations and GSM8k answer extraction on real data."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from truthprobe import scoring
from truthprobe.baselines.icl import (
    DEFAULT_K,
    build_prompt,
    extract_final_number,
    icl_choice_probs,
    normalise_number,
    render_demonstration,
)
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import SplitConfig, make_split
from truthprobe.hardness import stratify
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import encode_texts


@pytest.fixture(scope="module")
def arc_split(load):
    records = [r for r in load("arc").records if r.meta["grade"] is not None]
    strata = stratify(records, "grade")
    return records, strata, make_split(strata, SplitConfig())


@pytest.mark.parametrize("train_on", ["easy", "hard", "all"])
def test_demonstrations_come_from_the_stratum_and_never_the_test_set(arc_split, train_on):
    records, strata, split = arc_split
    test_ids = {records[i].id for i in split.test}
    for seed in range(5):
        rows = split.train_rows(train_on, seed, n=10)
        demos = [records[i] for i in rows]
        assert len(demos) == 10 and not {d.id for d in demos} & test_ids
        if train_on != "all":
            assert {strata[i] for i in rows} == {train_on}
        prompt = build_prompt(MULTIPLE_CHOICE, demos, records[split.test[seed]])
        assert prompt.demonstration_ids == tuple(d.id for d in demos)
        for i in split.test[:50]:  # no test question appears in the demonstrations
            assert records[i].question not in prompt.prefix.rsplit("\n\n", 1)[0]


def test_prompt_layout(arc_split):
    records, _, split = arc_split
    demos = [records[i] for i in split.train_rows("easy", 0, n=2)]
    test = records[split.test[0]]
    prompt = build_prompt(MULTIPLE_CHOICE, demos, test).prefix
    first = render_demonstration(MULTIPLE_CHOICE, demos[0])
    assert prompt.startswith(first) and first.endswith(" " + demos[0].answer)
    assert prompt.endswith(MULTIPLE_CHOICE.prefix(test))
    assert prompt.count("\n\nQuestion: ") == 2


def test_test_item_as_its_own_demonstration_is_refused(arc_split):
    records, _, _ = arc_split
    with pytest.raises(TruthprobeError, match="among its own demonstrations"):
        build_prompt(MULTIPLE_CHOICE, records[:3], records[1])


def test_truncation_drops_demonstrations_not_the_question(arc_split, caplog):
    records, _, split = arc_split
    demos = [records[i] for i in split.train_rows("easy", 0, n=10)]
    test = records[split.test[0]]

    def words(text: str) -> int:
        return len(text.split())

    budget = words(MULTIPLE_CHOICE.prefix(test)) + 60
    with caplog.at_level(logging.WARNING):
        prompt = build_prompt(MULTIPLE_CHOICE, demos, test, words, budget)
    assert 0 < prompt.dropped < 10
    assert prompt.demonstration_ids == tuple(d.id for d in demos[: 10 - prompt.dropped])
    assert prompt.prefix.endswith(MULTIPLE_CHOICE.prefix(test))
    assert "dropped" in caplog.text
    bare = build_prompt(MULTIPLE_CHOICE, demos, test, words, 1)  # nothing fits: question stays
    assert bare.prefix == MULTIPLE_CHOICE.prefix(test) and bare.dropped == 10


def test_gsm8k_answers_extracted_from_real_solutions(load):
    """Every real solution, its `####` line phrased as the CoT trigger, yields the gold answer
    (1,080-style commas and negative answers included)."""
    records = load("gsm8k").records
    assert any("," in r.answer for r in records) and any(r.answer.startswith("-") for r in records)
    for r in records:
        text = r.meta["solution"].replace("####", "So the answer is")
        assert extract_final_number(text) == normalise_number(r.answer), r.id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays $2.50 each, so the answer is $7.50.", "7.5"),
        ("The answer is 3.0", "3"),
        ("It drops by 12 degrees. The answer is -12.", "-12"),
        ("First 1,000 then 2,500 more: 3,500", "3500"),
        ("I cannot tell.", None),
    ],
)
def test_answer_extraction_edge_cases(text, expected):
    assert extract_final_number(text) == expected


def test_zero_shot_icl_equals_cached_zero_shot(gemma_fp32, mixed_arc_file, tmp_path):
    """k = 0 through the ICL path reproduces the cache's zero-shot log-likelihoods."""
    from truthprobe.activations import ActivationCache, ExtractConfig, extract
    from truthprobe.choice_probs import zero_shot_probs
    from truthprobe.configs import CacheConfig, ModelConfig
    from truthprobe.data import load_dataset

    config = ExtractConfig(
        dataset=str(mixed_arc_file),
        model=ModelConfig(dtype="float32"),
        cache=CacheConfig(storage="float32"),
        cache_path=str(tmp_path / "c.h5"),
        progress=False,
        layers=(0,),
    )
    extract(config, loaded=gemma_fp32)
    with ActivationCache(config.cache_path) as cache:
        cached = zero_shot_probs(
            cache.ids,
            cache.score("choice_logprob"),
            cache.score("choice_chars"),
            cache.item("choice_mask"),
            "raw",
        )
        records = {r.id: r for r in load_dataset(mixed_arc_file).records}
        tests = [records[i] for i in cache.ids]
    icl = icl_choice_probs(gemma_fp32, MULTIPLE_CHOICE, [], tests)
    assert icl.ids == cached.ids
    np.testing.assert_allclose(icl.probs, cached.probs, atol=1e-4)


def test_demonstrations_change_the_scores(gemma_fp32, load):
    records = load("arc").records
    demos, tests = records[:3], records[10:12]
    zero = icl_choice_probs(gemma_fp32, MULTIPLE_CHOICE, [], tests)
    three = icl_choice_probs(gemma_fp32, MULTIPLE_CHOICE, demos, tests)
    assert not np.allclose(zero.probs, three.probs)
    with pytest.raises(TruthprobeError, match="demonstrations include test items"):
        icl_choice_probs(gemma_fp32, MULTIPLE_CHOICE, records[10:11], tests)


@pytest.mark.parametrize("dataset", ["arc", "mmlu", "strategyqa"])
def test_shared_demonstrations_equal_per_item_prompts(gemma_fp32, load, dataset):
    """The k demonstrations run once and every test item continues them: its choices' summed
    log-likelihoods equal those of its own full prompt within 2e-4 nats in float32. Why that
    bound: the same sums are computed by products and attention blocks of other shapes (the
    context alone, then each item; against whole prompts), which round differently in the last
    bits; over ~1,000-token prompts the differences measured 1.5-4.1e-5 nats."""
    records = [r for r in load(dataset).records if r.choices]
    demos, tests = records[: DEFAULT_K[dataset]], records[20:28]
    items = [
        encode_texts(
            gemma_fp32.tokenizer,
            build_prompt(MULTIPLE_CHOICE, demos, t).prefix,
            MULTIPLE_CHOICE.continuations(t),
            t.id,
        )
        for t in tests
    ]
    assert scoring.common_prefix(items) > scoring.SHARED_CONTEXT_TOKENS  # the demonstrations
    n_choices = max(t.n_choices for t in tests)
    shared, _ = scoring.score_continuations(gemma_fp32, items, n_choices, progress=False)
    alone, _ = scoring.score_continuations(
        gemma_fp32, items, n_choices, progress=False, share_prefix=False
    )
    assert np.count_nonzero(alone) == sum(t.n_choices for t in tests)
    np.testing.assert_allclose(shared, alone, atol=2e-4, rtol=0)
