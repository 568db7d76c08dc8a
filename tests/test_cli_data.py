"""`truthprobe data summary` and `truthprobe data validate` on real data."""

from __future__ import annotations

import json

import pytest

from truthprobe.cli import main
from truthprobe.data import DATASET_NAMES
from truthprobe.hardness import MEASURES, measures_for

PAIRS = [(d, m) for d in DATASET_NAMES for m in measures_for(d) if not MEASURES[m].needs_model]


@pytest.mark.parametrize(("dataset", "measure"), PAIRS)
def test_summary_has_nonempty_easy_and_hard(capsys, dataset, measure):
    assert main(["data", "summary", "--dataset", dataset, "--measure", measure]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:]}
    assert int(rows["easy"][1]) > 0 and int(rows["hard"][1]) > 0
    assert len(rows["easy"]) > 2  # example ids are printed


def test_summary_counts_for_arc_grade(capsys):
    main(["data", "summary", "--dataset", "arc", "--measure", "grade"])
    out = capsys.readouterr().out
    assert "easy       1434" in out and "hard       2032" in out and "unrated    3266" in out


def test_summary_wrong_measure_is_one_line_error(capsys):
    assert main(["data", "summary", "--dataset", "mmlu", "--measure", "grade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: hardness measure 'grade' does not apply") and "level" in err


def test_validate_good_and_bad_files(capsys, tmp_path, load):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in load("arc").records[:50]))
    assert main(["data", "validate", str(good)]) == 0
    assert "50 valid records" in capsys.readouterr().out
    lines = good.read_text().splitlines()
    broken = json.loads(lines[3])
    broken["answer_index"] = 7
    lines[3] = json.dumps(broken)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["data", "validate", str(bad)]) == 2
    assert f"{bad}:4" in capsys.readouterr().err


def test_baselines_flags_build_the_config():
    """Defaults come from `BaselinesConfig`; `--cot` with no datasets turns CoT off."""
    from truthprobe.baselines.compare import BaselinesConfig
    from truthprobe.cli import parse_config

    default = parse_config(BaselinesConfig, [], "truthprobe baselines")
    assert default == BaselinesConfig() and "gsm8k:steps" in default.tasks
    assert default.cot.cot == ("gsm8k", "strategyqa")
    custom = parse_config(
        BaselinesConfig,
        ["--tasks", "strategyqa:steps", "--cot", "--max-new-tokens", "50"],
        "truthprobe baselines",
    )
    assert custom.tasks == ("strategyqa:steps",) and custom.cot.cot == ()
    assert custom.cot.max_new_tokens == 50
    assert custom.harness().run_hash() != default.harness().run_hash()


def test_summary_of_a_model_based_measure_says_how_to_compute_it(tmp_path):
    from test_cli_config import truthprobe

    result = truthprobe(
        "data", "summary", "--dataset", "arc", "--measure", "probe_mdl", "--cache-dir",
        str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "truthprobe sweep --tasks arc:probe_mdl" in err[0]
    assert not any(tmp_path.iterdir())  # nothing written
