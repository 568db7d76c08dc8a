"""Real processes: SIGKILLs mid-extraction, two writers at once, a reader during a write, two
runs in one directory. Nothing is lost, nobody is told to delete live work, and a killed
extraction resumes to a file identical to an uninterrupted one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_jsonl
from test_cache import assert_same_file
from test_cli_config import SCRIPT, truthprobe

from truthprobe.activations import ActivationCache
from truthprobe.locks import holder

pytestmark = pytest.mark.slow  # console-script runs of several seconds each: -m slow, CI


@pytest.fixture(scope="module")
def arc_1113(load, tmp_path_factory) -> Path:
    """Every 7th ARC record: a tiny-model extraction of about 15 s, time to meet it mid-way."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "arc-1113.jsonl", load("arc").records[::7])


@pytest.fixture(scope="module")
def arc_520(load, tmp_path_factory) -> Path:
    """Every 15th ARC record: a tiny-model extraction of about 7 s."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "arc-520.jsonl", load("arc").records[::15])


def extract_args(data: Path, model: Path, cache_dir: Path) -> list[str]:
    return ["extract", "--dataset", str(data), "--model", str(model),
            "--cache-dir", str(cache_dir), "--no-progress"]  # fmt: skip


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def cache_file(cache_dir: Path) -> Path | None:
    found = list(cache_dir.rglob("*.h5"))
    return found[0] if found else None


def writing(cache_dir: Path) -> bool:
    """Whether a process holds a cache's writer lock in `cache_dir` (creating or filling)."""
    return any(holder(lock) is not None for lock in cache_dir.rglob("*.h5.lock"))


def error_lines(stderr: str) -> list[str]:
    """The `error:` lines (model-loading progress bars may print around them)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def peek_rows(cache_dir: Path) -> int:
    """Rows a running extraction has marked written (read without its lock, for waiting on
    progress instead of sleeping: the test holds on a busy machine as on an idle one)."""
    import h5py

    path = cache_file(cache_dir)
    if path is None:
        return 0
    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["rows/done"][:].sum())
    except (OSError, KeyError):
        return 0


def rows_done(path: Path) -> int:
    with ActivationCache(path) as cache:
        return cache.rows_done


def test_killed_extraction_resumes_to_an_identical_file(tiny_model_dir, arc_520, tmp_path):
    clean = truthprobe(*extract_args(arc_520, tiny_model_dir, tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    killed_dir = tmp_path / "killed"
    args = extract_args(arc_520, tiny_model_dir, killed_dir)
    done, written = [], 0
    for more in (0, 1, 1):  # as soon as it holds the writer lock, then once rows were added
        process = start(args)
        wait_for(lambda p=process: writing(killed_dir) or p.poll() is not None)
        wait_for(
            lambda p=process, target=written + more: (
                peek_rows(killed_dir) >= target or p.poll() is not None
            )
        )
        process.send_signal(signal.SIGKILL)
        process.wait()
        written = peek_rows(killed_dir)
        if cache_file(killed_dir) is not None:
            done.append(rows_done(cache_file(killed_dir)))  # no stale lock blocks a reader
    assert done == sorted(done) and 0 < done[-1] < 520, done
    info = truthprobe("cache", "info", str(cache_file(killed_dir)))
    assert info.returncode == 0 and f"({done[-1]} extracted" in info.stdout
    resumed = truthprobe(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"extracted {520 - done[-1]} rows now" in resumed.stdout
    assert_same_file(cache_file(tmp_path / "clean"), cache_file(killed_dir))


def test_a_second_writer_and_a_reader_are_told_who_is_writing(tiny_model_dir, arc_1113, tmp_path):
    args = extract_args(arc_1113, tiny_model_dir, tmp_path / "act")
    first = start(args)
    wait_for(lambda: cache_file(tmp_path / "act") is not None)
    time.sleep(0.5)
    second = truthprobe(*args)
    reader = truthprobe("cache", "info", str(cache_file(tmp_path / "act")))
    assert first.poll() is None, "the first extraction ended before the others were tried"
    for result in (second, reader):
        assert result.returncode == 2, result.stderr
        lines = error_lines(result.stderr)
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"in use by process {first.pid}" in lines[0] and "wait" in lines[0]
        assert "delete" not in lines[0].lower()
    assert first.wait() == 0, first.stderr.read()
    assert "1113 of 1113 cached" in first.stdout.read()  # undisturbed by the others


def test_a_reader_holding_the_cache_open_is_named_as_a_reader(tiny_model_dir, arc_sample, tmp_path):
    """A notebook that holds a cache open for reading blocks writing (HDF5's own lock): the
    writer is told a reader has it open, not that it is in use by its own process."""
    args = extract_args(arc_sample, tiny_model_dir, tmp_path / "act")
    first = truthprobe(*args, "--limit", "8")
    assert first.returncode == 0, first.stderr
    path = cache_file(tmp_path / "act")
    reader = subprocess.Popen(
        [sys.executable, "-c",
         f"import h5py, sys, time; f = h5py.File({str(path)!r}, 'r'); print('open', flush=True); "
         "time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "open"
        more = truthprobe(*args, "--limit", "16")  # rows 8..15 are to be written
        for result in (more, truthprobe("cache", "verify", str(path), "--repair")):
            if result.returncode == 0:  # verify with nothing to repair does not write
                continue
            lines = error_lines(result.stderr)
            assert result.returncode == 2 and len(lines) == 1, result.stderr
            assert "open in another process that reads it" in lines[0], lines[0]
            assert "in use by process" not in lines[0]
    finally:
        reader.kill()
        reader.wait()
    again = truthprobe(*args, "--limit", "16")
    assert again.returncode == 0 and "extracted 8 rows now" in again.stdout, again.stderr


def test_two_runs_in_one_run_directory(tiny_model_dir, arc_sample, tmp_path):
    args = [
        "sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
        "--probes", "mc_linear", "logistic", "--probe-preset", "paper", "--n-train", "12",
        "--seeds", "5",
        "--validation-size", "10", "--max-per-stratum", "0", "--n-boot", "100",
        "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"), "--no-progress",
    ]  # fmt: skip
    first = start(args)
    wait_for(lambda: any((tmp_path / "runs").glob("*/.lock")) or first.poll() is not None)
    second = truthprobe(*args)
    assert first.poll() is None, "the first run ended before the second was tried"
    assert second.returncode == 2, second.stderr
    assert "run directory" in second.stderr and f"in use by process {first.pid}" in second.stderr
    assert first.wait() == 0, first.stderr.read()
    third = truthprobe(*args)
    assert third.returncode == 0 and "0 computed" in third.stdout
    beside_data = sorted(p.name for p in arc_sample.parent.iterdir())
    assert beside_data == [arc_sample.name]  # figures and parts stay in their own folders
    # two kinds: accuracy and SGR each, and a reliability diagram each; the SGR bars and the
    # families' comparison
    assert len(list((tmp_path / "plots").rglob("*.png"))) == 2 * 3 + 2


def test_a_failed_run_leaves_no_folder_and_extracts_nothing(tiny_model_dir, arc_sample, tmp_path):
    result = truthprobe(
        "sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
        "--layers", "0", "99", "--n-train", "12", "--validation-size", "10",
        "--cache-dir", str(tmp_path / "act"),
        "--runs-dir", str(tmp_path / "runs"), "--plots-dir", str(tmp_path / "plots"),
    )  # fmt: skip
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "layer index 99 out of range" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runs/, activations/, plots/


def test_cache_path_never_overwrites_a_file_that_is_not_a_cache(
    tiny_model_dir, arc_sample, tmp_path
):
    precious = tmp_path / "notes.h5"
    precious.write_bytes(b"")
    result = truthprobe(
        "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
        "--cache-path", str(precious), "--limit", "2",
    )  # fmt: skip
    assert result.returncode == 2
    assert "not a readable truthprobe activation cache" in result.stderr
    assert "pass another --cache-path" in result.stderr
    assert precious.read_bytes() == b""


def parts_line(stdout: str) -> tuple[int, int]:
    """(computed, reused) from a study's `parts: X computed, Y reused` line."""
    import re

    found = re.search(r"parts: (\d+) computed, (\d+) reused", stdout)
    assert found, stdout
    return int(found[1]), int(found[2])


def test_a_study_killed_mid_run_resumes_computing_only_missing_parts(
    arc_520, tiny_model_dir, tmp_path
):
    """SIGKILL while a learning-curves study writes its parts: the parts already stored are
    kept and reused, only the missing ones are computed, and the table equals an uninterrupted
    run's."""
    import pandas as pd

    def args(runs: Path) -> list[str]:
        return ["learning-curves", "--tasks", f"{arc_520}:grade", "--sizes", "4", "8", "16",
                "--model", str(tiny_model_dir), "--n-train", "12", "--seeds", "3",
                "--validation-size", "10", "--n-boot", "100", "--no-progress",
                "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(runs),
                "--plots-dir", str(tmp_path / "plots")]  # fmt: skip

    reference = truthprobe(*args(tmp_path / "reference"))  # also fills the cache
    assert reference.returncode == 0, reference.stderr
    total, _ = parts_line(reference.stdout)
    runs = tmp_path / "runs"
    process = start(args(runs))

    def stored_parts() -> list[Path]:  # a staging file seen before its rename is not a part yet
        return [p for p in runs.rglob("*.npz") if ".partial-" not in p.name]

    wait_for(lambda: bool(stored_parts()), timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stored = stored_parts()
    assert 0 < len(stored) < total, (len(stored), total)
    again = truthprobe(*args(runs))
    assert again.returncode == 0, again.stderr
    assert parts_line(again.stdout) == (total - len(stored), len(stored))
    (mine,) = runs.glob("*/studies/*/learning_curves.csv")
    (theirs,) = (tmp_path / "reference").glob("*/studies/*/learning_curves.csv")
    pd.testing.assert_frame_equal(pd.read_csv(mine), pd.read_csv(theirs))
