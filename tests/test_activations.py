"""What the real default model (Gemma 3 270M) computes: the fast packed path against the
per-sequence reference and the nnsight / TransformerLens backends, and cached against freshly
computed hidden states. Cache plumbing is tested on the tiny model (test_cache.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from truthprobe.activations import ActivationCache, ExtractConfig, extract
from truthprobe.activations.cache import from_storage, to_storage
from truthprobe.configs import CacheConfig, ModelConfig
from truthprobe.data import load_dataset
from truthprobe.min_k import min_k_rows
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import encode, forward_batch, forward_per_sequence

LAYERS = list(range(19))
#: Packed against per-sequence log-likelihoods in float32: a logit (Gemma 3's reach about 30)
#: minus the log-sum-exp of 262k of them, from states equal to 1e-5 of their scale, so within
#: ~3e-4 (measured up to 1.7e-4 with AVX-512 kernels, which block the products differently).
LOGPROB = 5e-4


def _close(a: np.ndarray, b: np.ndarray, rel: float) -> None:
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= rel * scale, (np.abs(a - b).max(), scale)


@pytest.fixture(scope="module")
def mixed(gemma_fp32, mixed_arc_file):
    records = load_dataset(mixed_arc_file).records
    return records, [encode(gemma_fp32.tokenizer, MULTIPLE_CHOICE, r) for r in records]


def test_batched_equals_one_by_one(gemma_fp32, mixed):
    """Packed pass == one full forward per (question, choice) with the LM head."""
    _, items = mixed
    fast = forward_batch(gemma_fp32, items, LAYERS, 5, question_scores=True)
    reference = forward_per_sequence(gemma_fp32, items, LAYERS, 5, question_scores=True)
    for i, item in enumerate(items):
        # Min-K% inputs: from the prefix pass (only question rows through the LM head) against
        # the full vocabulary at every position of a full forward
        assert len(fast.question_logprob[i]) == item.question[1] - item.question[0] > 3
        np.testing.assert_allclose(
            fast.question_logprob[i], reference.question_logprob[i], atol=1e-3
        )
        np.testing.assert_allclose(fast.question_zscore[i], reference.question_zscore[i], atol=1e-3)
        n = len(item.choices)
        _close(fast.answer_end[:, i, :n], reference.answer_end[:, i, :n], 1e-5)
        _close(fast.question_end[:, i], reference.question_end[:, i], 1e-5)
        np.testing.assert_allclose(fast.logprob[i, :n], reference.logprob[i, :n], atol=LOGPROB)
        assert (fast.tokens[i, :n] == [len(c) for c in item.choices]).all()
        assert (fast.tokens[i, n:] == 0).all() and (fast.logprob[i, n:] == 0).all()
    single = forward_batch(gemma_fp32, items[:1], LAYERS, 5)
    _close(single.answer_end[:, 0], fast.answer_end[:, 0], 1e-5)


def test_nnsight_backend_equals_default(gemma_fp32, mixed):
    from truthprobe.backends.nnsight_runner import nnsight_runner

    _, items = mixed
    reference = forward_per_sequence(gemma_fp32, items[:3], LAYERS, 5)
    traced = forward_per_sequence(gemma_fp32, items[:3], LAYERS, 5, nnsight_runner(gemma_fp32))
    np.testing.assert_allclose(traced.answer_end, reference.answer_end, rtol=0, atol=1e-3)
    np.testing.assert_allclose(traced.question_end, reference.question_end, rtol=0, atol=1e-3)
    np.testing.assert_allclose(traced.logprob, reference.logprob, atol=1e-5)


def test_transformer_lens_backend_equals_default(gemma_fp32, mixed):
    from truthprobe.backends.lens_runner import lens_runner
    from truthprobe.models import load_model

    _, items = mixed
    reference = forward_per_sequence(gemma_fp32, items[:2], LAYERS, 5)
    own = load_model("default", dtype="float32", attn_implementation="eager")  # bridge adapts it
    lens = forward_per_sequence(own, items[:2], LAYERS, 5, lens_runner(own))
    np.testing.assert_allclose(lens.answer_end, reference.answer_end, rtol=0, atol=1e-3)
    np.testing.assert_allclose(lens.logprob, reference.logprob, atol=1e-5)


def _config(tmp_path, mixed_arc_file, **changes) -> ExtractConfig:
    base = ExtractConfig(
        dataset=str(mixed_arc_file),
        model=ModelConfig(dtype="float32"),
        cache=CacheConfig(storage="float32", batch_size=3),
        cache_path=str(tmp_path / "cache.h5"),
        progress=False,
    )
    return dataclasses.replace(base, **changes)


def test_cached_equals_freshly_computed(gemma_fp32, mixed, mixed_arc_file, tmp_path):
    records, items = mixed
    result = extract(_config(tmp_path, mixed_arc_file, question_scores=True), loaded=gemma_fp32)
    reference = forward_per_sequence(gemma_fp32, items, LAYERS, 5, question_scores=True)
    with ActivationCache(result.path) as cache:
        assert cache.is_complete and cache.n_items == len(records)
        rows = cache.item("row")
        assert [records[r].id for r in rows] == cache.ids
        mask = cache.item("choice_mask")
        assert (mask.sum(1) == [records[r].n_choices for r in rows]).all()
        assert (cache.item("answer_index") == [records[r].answer_index for r in rows]).all()
        for layer in (0, 6, 18):
            got = cache.answer_end(layer)
            want = reference.answer_end[layer][rows]
            _close(got[mask], want[mask], 1e-5)
            _close(cache.question_end(layer), reference.question_end[layer][rows], 1e-5)
        np.testing.assert_allclose(
            cache.score("choice_logprob")[mask], reference.logprob[rows][mask], atol=LOGPROB
        )
        want = min_k_rows([reference.question_logprob[r] for r in rows], cache.min_k_percents)
        np.testing.assert_allclose(cache.score("min_k"), want, atol=1e-3)
        want = min_k_rows([reference.question_zscore[r] for r in rows], cache.min_k_percents)
        np.testing.assert_allclose(cache.score("min_k_pp"), want, atol=1e-3)
        assert (
            cache.score("question_tokens") == [len(reference.question_logprob[r]) for r in rows]
        ).all()
        chars = cache.score("choice_chars")  # lm-eval's acc_norm divisor: no separator
        assert chars[0, 0] == len(records[rows[0]].choices[0])
        assert [r.id for r in cache.records()] == cache.ids  # opens without the dataset


def test_real_residual_stream_needs_bfloat16_not_float16(gemma_fp32, mixed):
    """Gemma 3's residual stream exceeds float16's 65504; bfloat16 storage keeps it finite."""
    import torch

    _, items = mixed
    with torch.no_grad():
        out = gemma_fp32.model(torch.tensor([items[0].prefix]), output_hidden_states=True)
    states = torch.stack(out.hidden_states).numpy()
    assert np.abs(states).max() > 65504
    with np.errstate(over="ignore"):
        assert not np.isfinite(states.astype(np.float16)).all()
    back = from_storage(to_storage(states, "bfloat16"), "bfloat16")
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back, states, rtol=2**-8, atol=1e-30)


def test_bfloat16_cache_matches_float32_cache(gemma_fp32, mixed_arc_file, tmp_path):
    config = _config(tmp_path, mixed_arc_file, limit=4)
    full = extract(config, loaded=gemma_fp32)
    half = extract(
        dataclasses.replace(
            config,
            cache=CacheConfig(storage="bfloat16", batch_size=3),
            cache_path=str(tmp_path / "bf16.h5"),
        ),
        loaded=gemma_fp32,
    )
    with ActivationCache(full.path) as a, ActivationCache(half.path) as b:
        rows = np.flatnonzero(a.done_rows())
        assert len(rows) == 4
        for layer in range(19):
            x, y = a.answer_end(layer, rows), b.answer_end(layer, rows)
            assert np.isfinite(y).all()
            np.testing.assert_allclose(y, x, rtol=2**-8, atol=1e-30)
