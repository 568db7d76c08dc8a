"""Extraction and the activation cache on the real default model (Gemma 3 270M) and real items."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

import truthprobe.activations.extraction as extract_module
from truthprobe.activations import (
    ActivationCache,
    CacheError,
    ExtractConfig,
    encode,
    extract,
    forward_batch,
    forward_per_sequence,
)
from truthprobe.activations.cache import from_storage, to_storage
from truthprobe.activations.extraction import ExtractError
from truthprobe.data import load_dataset
from truthprobe.prompts import MULTIPLE_CHOICE

LAYERS = list(range(19))


def _close(a: np.ndarray, b: np.ndarray, rel: float) -> None:
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= rel * scale, (np.abs(a - b).max(), scale)


@pytest.fixture(scope="module")
def mixed(gemma_fp32, mixed_arc_file):
    records = load_dataset(mixed_arc_file).records
    return records, [encode(gemma_fp32.tokenizer, MULTIPLE_CHOICE, r) for r in records]


def test_batched_equals_one_by_one(gemma_fp32, mixed):
    """KV-cached, padded batch == one full forward per (question, choice) with the LM head."""
    _, items = mixed
    fast = forward_batch(gemma_fp32, items, LAYERS, 5)
    reference = forward_per_sequence(gemma_fp32, items, LAYERS, 5)
    for i, item in enumerate(items):
        n = len(item.choices)
        _close(fast.answer_end[:, i, :n], reference.answer_end[:, i, :n], 1e-5)
        _close(fast.question_end[:, i], reference.question_end[:, i], 1e-5)
        np.testing.assert_allclose(fast.logprob[i, :n], reference.logprob[i, :n], atol=1e-4)
        assert (fast.tokens[i, :n] == [len(c) for c in item.choices]).all()
        assert (fast.tokens[i, n:] == 0).all() and (fast.logprob[i, n:] == 0).all()
    single = forward_batch(gemma_fp32, items[:1], LAYERS, 5)
    _close(single.answer_end[:, 0], fast.answer_end[:, 0], 1e-5)


def test_nnsight_backend_equals_default(gemma_fp32, mixed):
    from truthprobe.activations.nnsight_backend import nnsight_runner

    _, items = mixed
    reference = forward_per_sequence(gemma_fp32, items[:3], LAYERS, 5)
    traced = forward_per_sequence(gemma_fp32, items[:3], LAYERS, 5, nnsight_runner(gemma_fp32))
    np.testing.assert_allclose(traced.answer_end, reference.answer_end, rtol=0, atol=1e-3)
    np.testing.assert_allclose(traced.question_end, reference.question_end, rtol=0, atol=1e-3)
    np.testing.assert_allclose(traced.logprob, reference.logprob, atol=1e-5)


def test_transformer_lens_backend_equals_default(gemma_fp32, mixed):
    from truthprobe.activations.lens_backend import lens_runner
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
        dtype="float32",
        storage="float32",
        batch_size=3,
        cache_path=str(tmp_path / "cache.h5"),
        progress=False,
    )
    return dataclasses.replace(base, **changes)


def test_cached_equals_freshly_computed(gemma_fp32, mixed, mixed_arc_file, tmp_path):
    records, items = mixed
    result = extract(_config(tmp_path, mixed_arc_file), loaded=gemma_fp32)
    reference = forward_per_sequence(gemma_fp32, items, LAYERS, 5)
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
            cache.score("choice_logprob")[mask], reference.logprob[rows][mask], atol=1e-4
        )
        chars = cache.score("choice_chars")
        assert chars[0, 0] == len(" " + records[rows[0]].choices[0])
        assert [r.id for r in cache.records()] == cache.ids  # opens without the dataset


def _contents(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        out["attrs"] = {k: v for k, v in f.attrs.items() if k not in ("created", "extract_seconds")}
    return out


def test_resume_after_crash_gives_identical_file(gemma_fp32, mixed_arc_file, tmp_path, monkeypatch):
    clean = extract(_config(tmp_path, mixed_arc_file, storage="bfloat16"), loaded=gemma_fp32)

    calls = {"n": 0}
    real = extract_module.forward_batch

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    crashed = _config(
        tmp_path, mixed_arc_file, storage="bfloat16", cache_path=str(tmp_path / "crashed.h5")
    )
    monkeypatch.setattr(extract_module, "forward_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        extract(crashed, loaded=gemma_fp32)
    with ActivationCache(crashed.cache_path) as partial:
        assert partial.completed_rows == 6 and not partial.is_complete
        with pytest.raises(CacheError, match="incomplete cache"):
            partial.answer_end(3)
    monkeypatch.setattr(extract_module, "forward_batch", real)
    resumed = extract(crashed, loaded=gemma_fp32)
    assert resumed.rows_written == 4
    a, b = _contents(clean.path), _contents(resumed.path)
    assert a.keys() == b.keys()
    for key in a:
        if key == "attrs":
            assert {k: str(v) for k, v in a[key].items()} == {k: str(v) for k, v in b[key].items()}
        else:
            assert np.array_equal(a[key], b[key]), key


def test_fingerprint_mismatch_is_refused(gemma_fp32, mixed_arc_file, tmp_path):
    config = _config(tmp_path, mixed_arc_file, limit=3)
    extract(config, loaded=gemma_fp32)
    other = dataclasses.replace(
        gemma_fp32,
        fingerprint=dataclasses.replace(gemma_fp32.fingerprint, revision="another-model"),
    )
    with pytest.raises(CacheError, match="differing: model: cache has .*another-model"):
        extract(config, loaded=other)
    with pytest.raises(CacheError, match="differing: template"):
        extract(dataclasses.replace(config, template="qa"), loaded=gemma_fp32)
    with pytest.raises(CacheError, match="dataset_hash"):
        extract(dataclasses.replace(config, limit=4), loaded=gemma_fp32)


def test_more_choices_than_the_cache_was_made_for(gemma_fp32, mixed_arc_file, tmp_path):
    """A cache made for 3-choice items is refused for a dataset with up to 5 choices."""
    config = _config(tmp_path, mixed_arc_file, limit=2)  # the two 3-choice items
    extract(config, loaded=gemma_fp32)
    with ActivationCache(config.cache_path) as cache:
        assert cache.n_choices_max == 3
    with pytest.raises(CacheError, match="n_choices_max: cache has 3, requested 5"):
        extract(dataclasses.replace(config, limit=None), loaded=gemma_fp32)


def test_bfloat16_storage_round_trips_without_overflow():
    values = np.array([1e5, -1.2e5, 70000.0, 3.14159, 1e-3, 0.0], np.float32)
    stored = to_storage(values, "bfloat16")
    assert stored.dtype == np.uint16
    back = from_storage(stored, "bfloat16")
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back, values, rtol=2**-8)
    assert not np.isfinite(values.astype(np.float16)[:3]).any()  # why not float16


def test_real_residual_stream_needs_bfloat16_not_float16(gemma_fp32, mixed):
    """Gemma 3's residual stream exceeds float16's 65504; bfloat16 storage keeps it finite."""
    import torch

    _, items = mixed
    with torch.no_grad():
        out = gemma_fp32.model(torch.tensor([items[0].prefix]), output_hidden_states=True)
    states = torch.stack(out.hidden_states).numpy()
    assert np.abs(states).max() > 65504
    assert not np.isfinite(states.astype(np.float16)).all()
    back = from_storage(to_storage(states, "bfloat16"), "bfloat16")
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back, states, rtol=2**-8, atol=1e-30)


def test_bfloat16_cache_matches_float32_cache(gemma_fp32, mixed_arc_file, tmp_path):
    config = _config(tmp_path, mixed_arc_file, limit=4)
    full = extract(config, loaded=gemma_fp32)
    half = extract(
        dataclasses.replace(config, storage="bfloat16", cache_path=str(tmp_path / "bf16.h5")),
        loaded=gemma_fp32,
    )
    with ActivationCache(full.path) as a, ActivationCache(half.path) as b:
        for layer in range(19):
            x, y = a.answer_end(layer), b.answer_end(layer)
            assert np.isfinite(y).all()
            np.testing.assert_allclose(y, x, rtol=2**-8, atol=1e-30)


def test_non_finite_states_are_refused(gemma_fp32, mixed_arc_file, tmp_path, monkeypatch):
    real = extract_module.forward_batch

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.answer_end[5, 0, 0, 0] = np.inf
        return out

    monkeypatch.setattr(extract_module, "forward_batch", poisoned)
    with pytest.raises(CacheError, match="non-finite hidden state in answer_end at layer 5"):
        extract(_config(tmp_path, mixed_arc_file, limit=2), loaded=gemma_fp32)


def test_layer_out_of_range(gemma_fp32, mixed_arc_file, tmp_path):
    with pytest.raises(ExtractError, match=r"layer index 19 out of range.*0\.\.18"):
        extract(_config(tmp_path, mixed_arc_file, layers=(3, 19)), loaded=gemma_fp32)


def test_truncated_file_is_a_clear_error(gemma_fp32, mixed_arc_file, tmp_path):
    result = extract(_config(tmp_path, mixed_arc_file, limit=2), loaded=gemma_fp32)
    data = result.path.read_bytes()
    broken = tmp_path / "truncated.h5"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="truncated.h5: not a readable truthprobe activation"):
        ActivationCache(broken)


def test_selected_layers_only(gemma_fp32, mixed_arc_file, tmp_path):
    result = extract(_config(tmp_path, mixed_arc_file, layers=(9, 0), limit=2), loaded=gemma_fp32)
    with ActivationCache(result.path) as cache:
        assert cache.layers == (0, 9)
        with pytest.raises(CacheError, match="layer 4 not cached"):
            cache.answer_end(4)


def test_cache_info_cli(gemma_fp32, mixed_arc_file, tmp_path, capsys):
    from truthprobe.cli import main

    result = extract(_config(tmp_path, mixed_arc_file, limit=2), loaded=gemma_fp32)
    assert main(["cache", "info", str(result.path)]) == 0
    out = capsys.readouterr().out
    assert "items         2 (2 complete)" in out and "layers 19 x items 2 x choices 3" in out
    assert main(["cache", "info", str(tmp_path / "missing.h5")]) == 2
    assert "no such cache file" in capsys.readouterr().err
