"""Shards of one cache, filled apart and merged into one view, on the tiny model and real ARC
records: the merged file equals a cache made in one process, array for array."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import write_jsonl
from test_cache import _config, contents

from truthprobe.activations import ActivationCache, CacheError, extract
from truthprobe.activations.extraction import plan_cache
from truthprobe.activations.shards import fill_shard, merge_shards, shard_path, shard_ranges
from truthprobe.configs import CacheConfig, PromptConfig
from truthprobe.data import load_dataset
from truthprobe.tasks import choice_records


def test_shard_ranges_tile_the_rows_in_whole_chunks():
    assert shard_ranges(50, 2) == [(0, 32), (32, 50)]
    assert shard_ranges(64, 4) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    for n, k in ((1, 1), (17, 2), (1000, 7), (3839, 16)):
        ranges = shard_ranges(n, k)
        assert ranges[0][0] == 0 and ranges[-1][1] == n and len(ranges) == k
        assert all(a == b for (_, a), (b, _) in zip(ranges, ranges[1:], strict=False))
        assert all(lo % 16 == 0 and hi > lo for lo, hi in ranges)
    with pytest.raises(CacheError, match="at most one shard per 16 rows"):
        shard_ranges(40, 4)


@pytest.fixture()
def sharded(tiny, tiny_model_dir, load, tmp_path):
    """50 real ARC records: a cache made in one process, and the same cache's plan for shards."""
    path = write_jsonl(tmp_path / "arc50.jsonl", [r for r in load("arc").records if r.choices][:50])
    dataset = load_dataset(str(path))
    records = choice_records(dataset)
    template = PromptConfig().resolve(records)
    config = _config(tmp_path, path, tiny_model_dir, cache_path=str(tmp_path / "whole.h5"))
    whole = extract(config, loaded=tiny).path
    cache = CacheConfig(cache_dir=str(tmp_path / "sharded"))
    plan = plan_cache(dataset.name, records, tiny, template, None, cache)
    return whole, plan, records, template


def test_two_shards_merged_equal_a_one_process_cache(tiny, sharded):
    whole, plan, records, template = sharded
    for index in (1, 0):  # in any order
        made = fill_shard(plan, records, tiny, template, index, 2, progress=False)
        assert made == shard_path(plan.path, index, 2) and made.is_file()
    merged = merge_shards(plan.path, 2)

    a, b = contents(whole), contents(merged)
    assert a.keys() == b.keys()
    for key in a:
        if key != "attrs":
            assert np.array_equal(a[key], b[key]), key
    assert {k: v for k, v in b["attrs"].items() if k != "shards"} == a["attrs"]

    with ActivationCache(merged) as view, ActivationCache(whole) as one:
        assert view.shards and view.is_complete and view.verify() == []
        assert view.content_hash() == one.content_hash()
        rows = np.array([3, 17, 40])
        for layer in view.layers:
            assert np.array_equal(view.answer_end(layer, rows), one.answer_end(layer, rows))
        assert "shards        2, all present" in view.describe()


def test_a_finished_shard_is_not_made_again(tiny, sharded, monkeypatch):
    _, plan, records, template = sharded
    first = fill_shard(plan, records, tiny, template, 0, 2, progress=False)
    stamp = first.stat().st_mtime_ns

    def no_forward(*args, **kwargs):
        raise AssertionError("a finished shard ran the model again")

    import truthprobe.activations.extraction as extraction

    monkeypatch.setattr(extraction, "forward_batch", no_forward)
    assert fill_shard(plan, records, tiny, template, 0, 2, progress=False) == first
    assert first.stat().st_mtime_ns == stamp


def test_a_shard_of_another_model_or_cut_is_refused(tiny, sharded):
    _, plan, records, template = sharded
    fill_shard(plan, records, tiny, template, 0, 2, progress=False)
    other = dataclasses.replace(
        plan, spec=dataclasses.replace(plan.spec, model=json.dumps({"name": "another-model"}))
    )
    with pytest.raises(CacheError, match="made for something else; differing: model"):
        fill_shard(other, records, tiny, template, 0, 2, progress=False)
    shard_path(plan.path, 0, 3).parent.mkdir(exist_ok=True)
    shard_path(plan.path, 0, 2).rename(shard_path(plan.path, 0, 3))  # cut in 2, named 0 of 3
    with pytest.raises(CacheError, match="another cut of this cache"):
        fill_shard(plan, records, tiny, template, 0, 3, progress=False)


def test_a_merged_cache_with_a_shard_missing_is_refused_and_never_written(tiny, sharded):
    _, plan, records, template = sharded
    with pytest.raises(CacheError, match="2 shards not finished"):
        merge_shards(plan.path, 2)
    for index in range(2):
        fill_shard(plan, records, tiny, template, index, 2, progress=False)
    merged = merge_shards(plan.path, 2)
    with ActivationCache(merged) as view, pytest.raises(CacheError, match="read-only"):
        with view.writing():
            pass
    shard_path(plan.path, 1, 2).rename(plan.path.with_name("elsewhere.h5"))
    with pytest.raises(CacheError, match="1 of its 2 shard files are missing"):
        ActivationCache(merged)


@pytest.mark.slow
def test_merge_info_and_verify_from_the_console(tiny, sharded):
    from test_cli_config import truthprobe

    _, plan, records, template = sharded
    for index in range(2):
        fill_shard(plan, records, tiny, template, index, 2, progress=False)
    shard = truthprobe("cache", "info", str(shard_path(plan.path, 1, 2)))
    assert shard.returncode == 0, shard.stderr
    assert "shard         1 of 2: rows 32..49 of 50" in shard.stdout
    merged = truthprobe("cache", "merge", str(plan.path))
    assert merged.returncode == 0, merged.stderr
    assert "50 rows from 2 shards, merged in" in merged.stdout
    info = truthprobe("cache", "info", str(plan.path))
    assert "shards        2, all present" in info.stdout and "50 extracted" in info.stdout
    checked = truthprobe("cache", "verify", str(plan.path))
    assert checked.returncode == 0 and "50 written rows" in checked.stdout, checked.stdout


@pytest.mark.slow
def test_two_local_workers_through_submitit_equal_one_process(tiny_model_dir, load, tmp_path):
    """`truthprobe extract --shards 2 --launcher local`: two worker processes (submitit's local
    executor), each one shard, merged; equal array for array to one process's cache."""
    from test_cli_config import truthprobe

    path = write_jsonl(tmp_path / "arc50.jsonl", [r for r in load("arc").records if r.choices][:50])
    base = ("extract", "--dataset", str(path), "--model", str(tiny_model_dir), "--no-progress")
    one = truthprobe(*base, "--cache-dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = truthprobe(*base, "--cache-dir", str(tmp_path / "two"), "--shards", "2")
    assert two.returncode == 0, two.stderr
    assert "50 rows in 2 shards (local launcher), all extracted" in two.stdout
    (whole,) = (tmp_path / "one").rglob("*.h5")
    merged = tmp_path / "two" / whole.relative_to(tmp_path / "one")
    assert sorted(p.name for p in merged.with_name(merged.stem + ".shards").glob("*.h5")) == [
        "0-of-2.h5", "1-of-2.h5"]  # fmt: skip
    a, b = contents(whole), contents(merged)
    assert a.keys() == b.keys()
    for key in a:
        if key != "attrs":
            assert np.array_equal(a[key], b[key]), key


def test_the_slurm_array_asks_for_what_the_flags_say(tmp_path, monkeypatch):
    """Without a cluster: submit through submitit's SLURM executor with `sbatch` replaced, and
    read the job script it wrote."""
    import submitit.slurm.slurm as slurm

    from truthprobe.activations.launch import Launch, SlurmConfig, submit

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # srun
    monkeypatch.setattr(
        slurm.SlurmExecutor, "_make_submission_command",
        lambda self, path: ["echo", "Submitted batch job 4242"],
    )  # fmt: skip
    launch = Launch(
        5, "slurm", folder=str(tmp_path / "jobs"),
        slurm=SlurmConfig(partition="gpu-a100", gpus_per_task=4, time=180, parallelism=3,
                          account="lab42"),
    )  # fmt: skip
    jobs = submit(len, ("unused",), launch)
    assert [j.job_id for j in jobs] == [f"4242_{i}" for i in range(5)]
    (script,) = (tmp_path / "jobs").glob("4242_submission.sh")
    text = script.read_text()
    for flag in (
        "--partition=gpu-a100",
        "--gpus-per-node=4",
        "--time=180",
        "--array=0-4%3",
        "--account=lab42",
        "--ntasks-per-node=1",
        "--signal=USR2@90",
    ):  # fmt: skip (the signal that requeues a task)
        assert f"#SBATCH {flag}" in text, (flag, text)


def test_slurm_where_there_is_none_is_one_clear_error(tmp_path):
    from truthprobe.activations.launch import Launch, LaunchError, submit

    with pytest.raises(LaunchError, match="no SLURM here.*--launcher local"):
        submit(len, ("unused",), Launch(2, "slurm", folder=str(tmp_path / "jobs")))


@pytest.mark.slow
def test_a_shard_killed_mid_way_is_finished_by_the_next_run_alone(
    tiny_model_dir, arc_sample, extracted, tmp_path
):
    """SIGKILL the worker (and the launcher) while shard 1 of 2 is half written; the same
    command again leaves the finished shard 0 untouched, finishes shard 1 from its written
    rows, and merges a cache equal to one process's."""
    import os
    import signal
    import subprocess
    import time

    import h5py
    from test_cli_config import SCRIPT

    cache_dir = tmp_path / "act"
    args = [str(SCRIPT), "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
            "--cache-dir", str(cache_dir), "--shards", "2", "--workers", "1", "--batch-size", "1",
            "--no-progress"]  # fmt: skip
    run = subprocess.Popen(args, start_new_session=True, stdout=subprocess.PIPE, text=True)
    merged = cache_dir / extracted.relative_to(extracted.parents[1])
    first, second = shard_path(merged, 0, 2), shard_path(merged, 1, 2)
    filling = second.with_name(second.name + ".filling")
    deadline, size = time.monotonic() + 300, 0
    while run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # shard 1 made, then grown by its written rows: kill it there
        if filling.is_file():
            size = size or filling.stat().st_size
            if filling.stat().st_size > size:  # rows being written: let a few finish
                time.sleep(0.5)
                break
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    while time.monotonic() < deadline:  # until the worker too is gone (its file lock with it)
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    assert first.is_file() and filling.is_file() and not second.exists()
    with h5py.File(filling, "r") as f:  # what the killed worker had written and flushed
        written, rows = int(f["rows/done"][:].sum()), len(f["rows/done"])
    assert 0 < written < rows, (written, rows)
    stamp = first.stat().st_mtime_ns

    again = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert first.stat().st_mtime_ns == stamp  # the finished shard was not made again
    assert second.is_file() and not filling.exists()
    a, b = contents(extracted), contents(merged)
    for key in a:
        if key != "attrs":
            assert np.array_equal(a[key], b[key]), key


def test_a_cache_made_in_one_process_is_never_sharded_over(tiny, sharded):
    """Sharding where a whole cache lies would let the merge replace finished work."""
    import shutil

    whole, plan, records, template = sharded
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(whole, plan.path)
    with pytest.raises(CacheError, match="a cache made in one process is there already"):
        fill_shard(plan, records, tiny, template, 0, 2, progress=False)
    with pytest.raises(CacheError, match="a cache made in one process is there already"):
        merge_shards(plan.path, 2)
    assert not shard_path(plan.path, 0, 2).parent.exists()


def test_merge_and_slurm_errors_are_one_line_from_the_console(tiny_model_dir, arc_sample, tmp_path):
    """As a user meets them: exit 2, one `error:` line, nothing written."""
    from test_bad_input import one_error_line
    from test_cli_config import truthprobe

    cache = tmp_path / "act" / "arc.h5"
    one_error_line(truthprobe("cache", "merge", str(cache)), "no shard files", "run the shards")
    assert not cache.exists()
    slurm = truthprobe(
        "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir), "--shards", "2",
        "--launcher", "slurm", "--cache-dir", str(tmp_path / "act"),
    )  # fmt: skip
    one_error_line(slurm, "no SLURM here", "--launcher local")
    assert not list((tmp_path / "act").rglob("*.h5"))
