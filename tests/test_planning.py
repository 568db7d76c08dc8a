"""`--dry-run` and the disk check: a plan made from the model's configuration alone agrees
with what extraction then does (path, tokens, bytes on disk), and a fill that would not fit
is refused before it starts, naming both numbers (tiny model, real ARC records)."""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import re

import h5py
import pytest
from conftest import write_jsonl

from truthprobe.activations import extract
from truthprobe.activations.cache import CHUNK_ROWS
from truthprobe.activations.extract_command import ExtractConfig, plan_request
from truthprobe.configs import CacheConfig, DataConfig, ModelConfig
from truthprobe.models import load_configured, load_planning

#: A split the 600-record ARC sample affords.
SPLIT = ("--n-train", "12", "--seeds", "2", "--validation-size", "10")


@pytest.fixture()
def arc50(load, tmp_path):
    return write_jsonl(tmp_path / "arc50.jsonl", [r for r in load("arc").records if r.choices][:50])


def _config(arc50, tiny_model_dir, tmp_path, **cache) -> ExtractConfig:
    return ExtractConfig(
        dataset=str(arc50),
        model=ModelConfig(str(tiny_model_dir)),
        cache=CacheConfig(cache_dir=str(tmp_path / "act"), **cache),
        data=DataConfig(max_per_stratum=0),
        progress=False,
    )


def test_a_plan_made_without_weights_is_what_extraction_does(arc50, tiny_model_dir, tmp_path):
    """Planning model (meta weights) and loaded model share a fingerprint, so a path; the
    planned tokens are the tokens extraction runs; the planned bytes per item are the bytes
    HDF5 stores (whole 16-row chunks, each with its 4-byte checksum)."""
    config = _config(arc50, tiny_model_dir, tmp_path)
    assert load_planning(config.model).fingerprint == load_configured(config.model).fingerprint
    planned = plan_request(config)
    assert planned.cached == 0 and len(planned.wanted) == 50
    done = extract(config)
    assert done.path == planned.plan.path
    assert done.tokens == sum(planned.plan.lengths)
    with h5py.File(done.path, "r") as f:
        stored = sum(f[f"hidden/{k}"].id.get_storage_size() for k in ("answer_end", "question_end"))
        chunks = sum(f[f"hidden/{k}"].id.get_num_chunks() for k in ("answer_end", "question_end"))
    padded = math.ceil(50 / CHUNK_ROWS) * CHUNK_ROWS
    assert stored == planned.per_item * padded + 4 * chunks == planned.new_bytes + 4 * chunks
    assert plan_request(config).cached == 50 and plan_request(config).new_bytes == 0


def test_rows_spread_over_a_cache_are_planned_as_the_chunks_they_fill(
    arc_sample, tiny_model_dir, tmp_path
):
    """A selection (one hardness measure's items) lies spread over the cache's length-sorted
    rows, and HDF5 allocates whole 16-row chunks: the plan counts the chunks, and its bytes
    are the bytes stored."""
    config = dataclasses.replace(
        _config(arc_sample, tiny_model_dir, tmp_path), measure="grade",
        data=DataConfig(max_per_stratum=10),
    )  # fmt: skip
    planned = plan_request(config)
    assert len(planned.wanted) == 30 and planned.new_bytes > 30 * planned.per_item
    done = extract(config)
    with h5py.File(done.path, "r") as f:
        stored = sum(f[f"hidden/{k}"].id.get_storage_size() for k in ("answer_end", "question_end"))
        chunks = sum(f[f"hidden/{k}"].id.get_num_chunks() for k in ("answer_end", "question_end"))
    assert stored == planned.new_bytes + 4 * chunks


@pytest.mark.slow
def test_dry_run_from_the_console_writes_nothing(arc_sample, tiny_model_dir, tmp_path):
    from test_cli_config import truthprobe

    model = str(tiny_model_dir)
    run = truthprobe(
        "sweep", "--tasks", f"{arc_sample}:grade", "--model", model, model, "--quantization",
        "none", "8bit", "--dry-run", "--shards", "2", "--cache-dir", str(tmp_path / "act"),
        "--runs-dir", str(tmp_path / "runs"), *SPLIT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert out.startswith("dry run: nothing is loaded, extracted or written")
    assert len(re.findall(r"^model .*: 91,072 parameters, 2 layers, d_model 64", out, re.M)) == 2
    items = re.findall(r"items ([\d,]+) of ([\d,]+) \(0 already cached\)", out)
    assert len(items) == 2 and all(a == b for a, b in items)  # --shards fills whole caches
    assert "shards: 2 of " in out and ": fits" in out
    assert not (tmp_path / "act").exists() and not (tmp_path / "runs").exists()


def test_a_fill_that_would_not_fit_is_refused_naming_both_numbers(
    arc_sample, tiny_model_dir, tmp_path, monkeypatch, cli
):
    """With the disk's free space just under the estimate (and above what a cache's empty
    skeleton needs), `extract` and a sharded `sweep` end in one error line naming the estimate
    and the free space, and no row is written."""
    import truthprobe.activations.cache as cache_module

    config = _config(arc_sample, tiny_model_dir, tmp_path)
    need = plan_request(config).new_bytes
    real = cache_module.shutil.disk_usage
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda p: usage(*real(p)[:2], need - 1))
    args = ("--model", str(tiny_model_dir), "--cache-dir", str(tmp_path / "act"), "--no-progress")
    refused = cli("extract", "--dataset", str(arc_sample), *args)
    assert refused.returncode == 2
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert (
        f"estimated cache is {need / 1e6:.1f} MB, more than the {(need - 1) / 1e6:.1f} MB" in line
    )
    (made,) = (tmp_path / "act").rglob("*.h5")  # the skeleton, not one row in it
    from truthprobe.activations import ActivationCache

    with ActivationCache(made) as cache:
        assert cache.rows_done == 0
    made.unlink()
    sharded = cli("sweep", "--tasks", f"{arc_sample}:grade", "--shards", "2", *args, *SPLIT,
                  "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert sharded.returncode == 2 and "estimated cache is" in sharded.stderr
    assert not list((tmp_path / "act").rglob("*.h5")) and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_sweep_in_shards_equals_the_sweep_in_one_process(arc_sample, tiny_model_dir, tmp_path):
    """`truthprobe sweep --shards 2` (local submitit workers) fills the caches in shards, merges
    them, and reports the very table of the same sweep run in one process."""
    from test_cli_config import truthprobe

    common = (
        "sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
        *SPLIT, "--n-boot", "200", "--no-progress", "--probe-preset", "validated",
    )  # fmt: skip
    tables = []
    for name, extra in (("one", ()), ("two", ("--shards", "2"))):
        run = truthprobe(*common, *extra, "--cache-dir", str(tmp_path / name / "act"),
                         "--runs-dir", str(tmp_path / name / "runs"),
                         "--plots-dir", str(tmp_path / name / "plots"))  # fmt: skip
        assert run.returncode == 0, run.stderr
        (table,) = (tmp_path / name / "runs").glob("layer_sweep-*/table.csv")
        with open(table, newline="") as f:
            tables.append(list(csv.DictReader(f)))
    assert tables[0] == tables[1]
    (merged,) = [
        p for p in (tmp_path / "two" / "act").rglob("*.h5") if p.parent.suffix != ".shards"
    ]
    assert sorted(p.name for p in merged.with_name(merged.stem + ".shards").glob("*.h5")) == [
        "0-of-2.h5", "1-of-2.h5"]  # fmt: skip


@pytest.mark.slow
def test_a_sweep_over_full_caches_loads_no_weights(
    arc_sample, tiny_model_dir, tmp_path, cli, monkeypatch
):
    """Caches and parts are found from the model's identity alone (configuration, tokenizer,
    fingerprint): once the caches hold every row, a sweep with new settings computes its parts
    without loading the weights (here, loading them would fail)."""
    import truthprobe.models as models

    common = ("sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir), *SPLIT,
              "--n-boot", "100", "--no-progress", "--probe-preset", "validated",
              "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
              "--plots-dir", str(tmp_path / "plots"))  # fmt: skip
    first = cli(*common)
    assert first.returncode == 0, first.stderr
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    again = cli(*common, "--seeds", "3")  # another run directory: every part computed
    assert again.returncode == 0, again.stderr
    assert "rows extracted: " in again.stdout and " 0 reused" in again.stdout
