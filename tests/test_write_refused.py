"""Writes the system refuses during extraction, as a user meets them (issue 20, items 2 and 3):
a file-size limit (`ulimit -f`) and a full disk (a 1 MiB tmpfs, where the test machine lets the
test mount one). Each ends in one `error:` line (exit 2, no traceback, no crash), keeps the
rows written before it, and the same command afterwards resumes to a file equal to one
extracted without interruption.

Two ways in for each: the room check before a pass's write (it sees the limit coming and stops
before HDF5 writes), and a write refused after the check passed (another process filled the
disk meanwhile; simulated by switching the check off in the subprocess), which leaves the file
shorter than its recorded end: the next command extends it, verifies every written row and
resumes. A disk that cannot hold the estimated cache at all is refused before the first row
(the disk check at the start of a fill); the mid-way cases switch that check off, as a disk
that filled after it passed."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cache import assert_same_file
from test_cli_config import SCRIPT, truthprobe
from test_processes import error_lines

from truthprobe.activations import ActivationCache

pytestmark = pytest.mark.slow  # console-script runs of several seconds each: -m slow, CI

#: The room check before each write switched off: the write itself is refused.
NO_ROOM_CHECK = "import truthprobe.activations.cache as c; c.room_problem = lambda path, need: None"
#: The disk check at the start of a fill switched off: the disk fills after it passed (another
#: process wrote meanwhile), so the refusal comes mid-way.
LATE = "import truthprobe.activations.extraction as e; e.require_disk = lambda *args: None"


def extract(arc_sample, model_dir, cache_dir, raced=False, file_limit=0, late=False,
            dry_run=False):  # fmt: skip
    """`truthprobe extract` of the ARC sample in passes of 4, optionally under `ulimit -f`."""
    args = ["extract", "--dataset", str(arc_sample), "--model", str(model_dir),
            "--cache-dir", str(cache_dir), "--batch-size", "4", "--no-progress",
            *(["--dry-run"] if dry_run else [])]  # fmt: skip
    return console(args, raced, file_limit, late)


def console(args, raced=False, file_limit=0, late=False):
    """The console script (`raced`: without the room check before each write; `late`: without
    the disk check at the start), optionally under `ulimit -f`."""
    patches = [LATE] * late + [NO_ROOM_CHECK] * raced
    main = "from truthprobe.cli import main; sys.exit(main(sys.argv[1:]))"
    script = "; ".join(["import sys", *patches, main])
    command = [sys.executable, "-c", script] if patches else [str(SCRIPT)]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.RLIM_INFINITY))

    return subprocess.run(
        command + args, capture_output=True, text=True, timeout=600, check=False,
        preexec_fn=limit if file_limit else None,
    )  # fmt: skip


def assert_one_clean_error(result, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = error_lines(result.stderr)
    assert all(word in line for word in words), line
    assert "delete" not in line, line


def written_rows(cache_dir: Path) -> int:
    (path,) = cache_dir.rglob("*.h5")
    with ActivationCache(path) as cache:
        return cache.rows_done


@pytest.mark.parametrize("raced", [False, True], ids=["checked", "refused-write"])
def test_a_file_size_limit_stops_extraction_in_one_line_and_it_resumes(
    raced, extracted, tiny_model_dir, arc_sample, tmp_path
):
    cache_dir = tmp_path / "act"
    stopped = extract(arc_sample, tiny_model_dir, cache_dir, raced, file_limit=1_000_000)
    why = "File too large" if raced else "file-size limit"
    assert_one_clean_error(stopped, why, "ulimit -f", "rows written before them are kept")
    if raced:  # the file ends before its recorded end, which lies past the limit
        (path,) = cache_dir.rglob("*.h5")
        size = path.stat().st_size
        still = console(["cache", "info", str(path)], file_limit=1_000_000)
        assert_one_clean_error(still, "could not be extended", "ulimit -f")
        assert path.stat().st_size == size  # nothing changed
    kept = written_rows(cache_dir)  # a refused write's file is extended and verified here
    assert 0 < kept < 599
    resumed = extract(arc_sample, tiny_model_dir, cache_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"extracted {599 - kept} rows now" in resumed.stdout
    assert_same_file(extracted, next(cache_dir.rglob("*.h5")))


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs (the full cache is about 2 MiB); skipped where mounting is not allowed."""
    mount = shutil.which("mount")
    where = tmp_path / "disk"
    where.mkdir()
    made = mount and subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if not made or made.returncode != 0:
        pytest.skip("this machine does not let the test mount a small filesystem")
    yield where
    subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("raced", [False, True], ids=["checked", "refused-write"])
def test_a_full_disk_stops_extraction_in_one_line_and_it_resumes(
    raced, small_disk, extracted, tiny_model_dir, arc_sample
):
    cache_dir = small_disk / "act"
    stopped = extract(arc_sample, tiny_model_dir, cache_dir, raced, late=True)
    why = "No space left on device" if raced else "free on its disk"
    assert_one_clean_error(stopped, why, "free space there", "rows written before them are kept")
    assert not list(cache_dir.rglob("*.partial-*"))
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    kept = written_rows(cache_dir)
    assert 0 < kept < 599
    resumed = truthprobe("extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
                         "--cache-dir", str(cache_dir), "--no-progress")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"extracted {599 - kept} rows now" in resumed.stdout
    assert_same_file(extracted, next(cache_dir.rglob("*.h5")))


def test_a_disk_too_small_for_the_cache_is_refused_before_a_row_is_written(
    small_disk, tiny_model_dir, arc_sample
):
    """The disk check at the start, on a real 1 MiB filesystem: `--dry-run` says the plan does
    not fit, and the extraction itself ends in one line naming the estimate and the free
    space, with no row written."""
    cache_dir = small_disk / "act"
    planned = extract(arc_sample, tiny_model_dir, cache_dir, dry_run=True)
    assert planned.returncode == 0 and "does NOT fit" in planned.stdout, planned.stderr
    sharded = console(["extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
                       "--cache-dir", str(cache_dir), "--shards", "2"])  # fmt: skip
    assert_one_clean_error(sharded, "in 2 shards: the estimated cache is", "free space there")
    assert not list(small_disk.rglob("*.h5*"))  # no shard, no worker started
    stopped = extract(arc_sample, tiny_model_dir, cache_dir)
    assert_one_clean_error(stopped, "the estimated cache is", "MB free on the disk of",
                           "free space there")  # fmt: skip
    assert written_rows(cache_dir) == 0


def test_a_full_disk_under_the_runs_dir_is_one_line_and_the_run_resumes(
    small_disk, extracted, tiny_model_dir, arc_sample, tmp_path
):
    """A sweep whose run folder is on a full disk: one `error:` line naming the file and what to
    free, no half-written part or staging file left, and the same command completes once
    there is room, computing only the parts not stored before."""
    cache = tmp_path / "act" / extracted.parent.name / extracted.name
    cache.parent.mkdir(parents=True)
    shutil.copy(extracted, cache)
    filler = small_disk / "filler"
    filler.write_bytes(bytes(shutil.disk_usage(small_disk).free - 200_000))
    args = ["sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
            "--n-train", "12", "--seeds", "2", "--validation-size", "10",
            "--max-per-stratum", "0", "--n-boot", "100", "--no-progress",
            "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(small_disk / "runs"),
            "--plots-dir", str(tmp_path / "plots")]  # fmt: skip
    full = truthprobe(*args)
    assert_one_clean_error(full, str(small_disk / "runs"), "No space left", "free space there")
    assert not list((small_disk / "runs").rglob("*.partial-*"))
    stored = len(list((small_disk / "runs").rglob("*.npz")))
    assert stored > 0  # the disk filled mid-run, after some parts were stored
    filler.unlink()
    resumed = truthprobe(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{stored} reused" in resumed.stdout, resumed.stdout
