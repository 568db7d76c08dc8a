"""Damaged run folders as a user meets them (issue 20, items 4, 6 and 7): a part with one
flipped byte or cut short, a torn `config.json`, a `task.json` with one changed character.

Through the console script: `report` refuses each in one `error:` line naming the file, and
the next run computes the damaged part again (the log names it) or writes the file anew, so
the run resumes to the same numbers, never using what is damaged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_cli_config import truthprobe
from test_processes import error_lines

from truthprobe.runstore import load_run

pytestmark = pytest.mark.slow  # console-script runs of several seconds each: -m slow, CI


@pytest.fixture(scope="module")
def swept(tiny_model_dir, arc_sample, tmp_path_factory):
    """A small sweep made once; each test damages its own copy of the run folder."""
    root = tmp_path_factory.mktemp("swept")
    args = [
        "sweep", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
        "--n-train", "12", "--seeds", "2", "--validation-size", "10", "--max-per-stratum", "0",
        "--n-boot", "100", "--probe-preset", "paper", "--no-mid-last",
        "--cache-dir", str(root / "act"), "--plots-dir", str(root / "plots"), "--no-progress",
    ]  # fmt: skip
    result = truthprobe(*args, "--runs-dir", str(root / "runs"))
    assert result.returncode == 0, result.stderr
    return args, next((root / "runs").iterdir())


@pytest.fixture()
def run(swept, tmp_path):
    args, made = swept
    copy = tmp_path / "runs" / made.name
    shutil.copytree(made, copy)
    return [*args, "--runs-dir", str(tmp_path / "runs")], copy, made


def flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def one_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def same_results(a, b) -> None:
    """The same answers; probabilities equal to float32 rounding (a part computed again alone
    is fitted outside the batched fit of its siblings, which may round in another order)."""
    x, y = load_run(a).items, load_run(b).items
    assert x["correct"].tolist() == y["correct"].tolist()
    assert all(
        np.allclose(p, q, rtol=0, atol=1e-6) for p, q in zip(x["probs"], y["probs"], strict=True)
    )


@pytest.mark.parametrize("damage", ["flipped byte", "cut short"])
def test_a_damaged_part_is_refused_by_report_and_computed_again_by_the_run(run, damage):
    sweep, run_dir, clean = run
    part = sorted(run_dir.glob("parts/*/mc_linear-paper@1/hard.1.npz"))[0]
    if damage == "flipped byte":
        flip(part, part.read_bytes().index(b"correct.npy") + 200)  # inside the member's data
    else:
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    line = one_error(truthprobe("report", str(run_dir)))
    assert f"{part}: damaged" in line and "compute it again" in line
    again = truthprobe(*sweep)
    assert again.returncode == 0, again.stderr
    assert f"{part}: damaged" in again.stderr and "parts: 1 computed" in again.stdout
    same_results(run_dir, clean)


def test_a_torn_config_is_refused_by_report_and_written_anew_by_the_run(run):
    sweep, run_dir, clean = run
    config = run_dir / "config.json"
    config.write_bytes(config.read_bytes()[:500])
    line = one_error(truthprobe("report", str(run_dir)))
    assert str(config) in line and "damaged" in line
    again = truthprobe(*sweep)
    assert again.returncode == 0, again.stderr
    assert "parts: 0 computed" in again.stdout and any(run_dir.glob("config.json.damaged-*"))
    assert truthprobe("report", str(run_dir)).returncode == 0
    same_results(run_dir, clean)


def test_one_changed_character_in_a_task_table_is_refused(run):
    """`"test"` -> `"tesu"` in a role would move an item out of the hard test set: a run
    folder whose item table does not match its digest is refused, never reported on."""
    sweep, run_dir, clean = run
    (table,) = run_dir.glob("parts/*/task.json")
    text = table.read_text()
    assert '"test"' in text
    table.write_text(text.replace('"test"', '"tesu"', 1))
    line = one_error(truthprobe("report", str(run_dir)))
    assert str(table) in line and "digest" in line
    again = truthprobe(*sweep)  # the run writes the table from the data again
    assert again.returncode == 0, again.stderr
    assert "parts: 0 computed" in again.stdout
    same_results(run_dir, clean)
