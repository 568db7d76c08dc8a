"""Damaged caches as a user meets them: random bytes and a torn write of zeros inside stored
blocks are found by `truthprobe cache verify` (naming layer and rows), never used by a run
(only their rows are extracted again, so results do not change), and repaired to a file
identical to an undamaged one."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from test_cache import assert_same_file
from test_cli_config import truthprobe
from test_processes import error_lines

from truthprobe.activations import ActivationCache
from truthprobe.data import load_dataset
from truthprobe.hardness import stratify
from truthprobe.runstore import load_run

pytestmark = pytest.mark.slow  # console-script runs of several seconds each: -m slow, CI


def chunk_span(path, name: str, coord: tuple) -> tuple[int, int]:
    """Byte offset and size in the file of the stored chunk at `coord` of dataset `name`."""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info_by_coord(coord)
    return info.byte_offset, info.size


def overwrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


@pytest.fixture()
def filled(extracted, tiny_model_dir, arc_sample, tmp_path):
    """This test's own copy of the cache (to damage), a clean copy, and sweep arguments."""
    path = tmp_path / "act" / extracted.parent.name / extracted.name
    path.parent.mkdir(parents=True)
    shutil.copy(extracted, path)
    sweep = [
        "sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
        "--n-train", "12", "--seeds", "2", "--validation-size", "10", "--max-per-stratum", "0",
        "--n-boot", "100", "--probe-preset", "paper", "--no-mid-last",
        "--cache-dir", str(tmp_path / "act"),
        "--plots-dir", str(tmp_path / "plots"), "--no-progress",
    ]  # fmt: skip
    return path, extracted, sweep, tmp_path


def first_rated_chunk(path, arc_sample) -> int:
    """The HDF5 chunk (of `CHUNK_ROWS` rows) of the first item the grade sweep uses."""
    records = load_dataset(arc_sample).records
    rated = [r.id for r, s in zip(records, stratify(records, "grade"), strict=True) if s]
    with ActivationCache(path) as cache:
        return int(cache.rows_of(rated[:1])[0]) // cache.chunk_rows


def assert_same_answers(tmp_path, path, clean):
    """The sweeps in runs-a (before the damage) and runs-b (after) gave the same probabilities,
    and the repaired cache verifies and equals the undamaged one. Returns both runs' items."""
    a = load_run(next((tmp_path / "runs-a").iterdir())).items
    b = load_run(next((tmp_path / "runs-b").iterdir())).items
    assert all(np.array_equal(x, y) for x, y in zip(a["probs"], b["probs"], strict=True))
    assert truthprobe("cache", "verify", str(path)).returncode == 0
    assert_same_file(clean, path)
    return a, b


def test_random_bytes_are_found_and_never_used(filled, arc_sample):
    path, clean, sweep, tmp_path = filled
    first = truthprobe(*sweep, "--runs-dir", str(tmp_path / "runs-a"))
    assert first.returncode == 0, first.stderr
    k = first_rated_chunk(path, arc_sample)
    offset, size = chunk_span(path, "hidden/answer_end", (1, 16 * k, 0, 0))  # layer 1, chunk k
    overwrite(path, offset + 8, np.random.default_rng(0).bytes(size - 16))

    verify = truthprobe("cache", "verify", str(path))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    rows = f"rows {16 * k}..{16 * k + 15}"
    assert f"  hidden/answer_end layer 1, {rows} (checksum mismatch)" in verify.stdout

    second = truthprobe(*sweep, "--runs-dir", str(tmp_path / "runs-b"))
    assert second.returncode == 0, second.stderr
    assert "(16 damaged, extracted again)" in second.stdout
    a, b = assert_same_answers(tmp_path, path, clean)
    assert a["correct"].tolist() == b["correct"].tolist()


def test_a_torn_write_of_zeros_is_repaired_to_the_undamaged_file(
    filled, tiny_model_dir, arc_sample
):
    path, clean, _, _ = filled
    torn = []
    for chunk in (5, 6):  # zeros over two stored chunks of layer 2 (rows 80..111)
        offset, size = chunk_span(path, "hidden/answer_end", (2, 16 * chunk, 0, 0))
        overwrite(path, offset, bytes(size))
        torn += range(16 * chunk, 16 * chunk + 16)
    # Zeroed with its checksum, a chunk passes fletcher32: the rows' digests find it.
    verify = truthprobe("cache", "verify", str(path))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "  row contents, rows 80..111 (they do not hash to what was written)" in verify.stdout
    repair = truthprobe("cache", "verify", str(path), "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert f"{len(torn)} of 599 written rows damaged" in repair.stdout
    with ActivationCache(path) as cache:
        assert cache.missing_rows().tolist() == torn
    refill = truthprobe(
        "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
        "--cache-path", str(path), "--no-progress",
    )  # fmt: skip
    assert refill.returncode == 0 and f"extracted {len(torn)} rows now" in refill.stdout
    assert_same_file(clean, path)


def test_damaged_item_records_are_a_clear_error(filled):
    path = filled[0]
    with h5py.File(path, "r+") as f:  # one character of one stored record changes
        record = f["items/record"].asstr()[3]
        f["items/record"][3] = record.replace('"id": "', '"id": "x', 1)
    result = truthprobe("cache", "verify", str(path))
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "item ids and records" in lines[0] and "damaged" in lines[0]


def flip_in_chunk(path, name: str) -> None:
    """Flip one byte in the middle of the first stored chunk of item table `name`."""
    offset, size = chunk_span(path, name, (0,) * (2 if name.endswith("mask") else 1))
    with open(path, "r+b") as handle:
        handle.seek(offset + size // 2)
        byte = handle.read(1)[0]
        handle.seek(offset + size // 2)
        handle.write(bytes([byte ^ 0xFF]))


def test_a_damaged_item_table_is_found_and_rewritten_by_the_next_run(filled):
    """Issue 20, item 8: one byte flipped in `items/choice_mask` passed `cache verify` and then
    ended the sweep in an HDF5 filter traceback."""
    path, clean, sweep, tmp_path = filled
    first = truthprobe(*sweep, "--runs-dir", str(tmp_path / "runs-a"))
    assert first.returncode == 0, first.stderr
    flip_in_chunk(path, "items/choice_mask")

    verify = truthprobe("cache", "verify", str(path))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "items/choice_mask damaged" in verify.stdout

    second = truthprobe(*sweep, "--runs-dir", str(tmp_path / "runs-b"))
    assert second.returncode == 0, second.stderr
    assert "item table(s) items/choice_mask damaged, rewriting them" in second.stderr
    assert_same_answers(tmp_path, path, clean)


def test_verify_repair_rewrites_item_tables_and_leaves_rows_to_the_dataset(
    filled, tiny_model_dir, arc_sample
):
    path, clean, _, _ = filled
    flip_in_chunk(path, "items/answer_index")
    repair = truthprobe("cache", "verify", str(path), "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "rewritten from the stored records: items/answer_index" in repair.stdout
    assert_same_file(clean, path)

    flip_in_chunk(path, "items/row")  # each item's place in the dataset: not in the records
    repair = truthprobe("cache", "verify", str(path), "--repair")
    assert repair.returncode == 2
    lines = error_lines(repair.stderr)
    assert len(lines) == 1 and "items/row" in lines[0] and "truthprobe extract" in lines[0]
    refill = truthprobe(
        "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
        "--cache-path", str(path), "--no-progress",
    )  # fmt: skip
    assert refill.returncode == 0, refill.stderr
    assert_same_file(clean, path)
