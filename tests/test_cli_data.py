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
    from truthprobe.cli import parse
    from truthprobe.comparison import BaselinesConfig

    default = parse(["baselines"])
    assert default == BaselinesConfig() and "gsm8k:steps" in default.tasks
    assert default.cot.cot == ("gsm8k", "strategyqa")
    custom = parse(["baselines", "--tasks", "strategyqa:steps", "--cot", "--max-new-tokens", "50"])
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


@pytest.fixture()
def bare_env(tmp_path):
    """A fresh machine: no TRUTHPROBE_DATA_DIR, an empty home (nothing fetched), offline."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TRUTHPROBE_DATA_DIR"}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["HF_HOME"] = str(home / "hf")
    return env


def _one_line(result) -> str:
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    return line


@pytest.mark.parametrize(
    "args",
    [
        ("data", "summary", "--dataset", "arc", "--measure", "grade", "--source", "local"),
        ("data", "summary", "--dataset", "mmlu", "--measure", "level"),  # auto: the hub, offline
        ("sweep", "--tasks", "mmlu:level", "--source", "local"),
    ],
    ids=["local", "auto-offline", "sweep"],
)
def test_without_data_the_error_names_both_ways_to_give_it(args, bare_env, tmp_path):
    from test_cli_config import truthprobe

    line = _one_line(truthprobe(*args, env=bare_env, cwd=tmp_path))
    assert "--data-dir DIR" in line and "TRUTHPROBE_DATA_DIR=DIR" in line, line
    assert "truthprobe data fetch" in line


def test_data_dir_flag_and_a_missing_folder(bare_env, data_dir, tmp_path):
    from test_cli_config import truthprobe

    ok = truthprobe(
        "data", "summary", "--dataset", "mmlu", "--measure", "level", "--data-dir", str(data_dir),
        env=bare_env, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0 and "easy " in ok.stdout, ok.stderr
    line = _one_line(
        truthprobe(
            "data",
            "summary",
            "--dataset",
            "mmlu",
            "--measure",
            "level",
            "--data-dir",
            str(tmp_path / "nowhere"),
            env=bare_env,
            cwd=tmp_path,
        )  # fmt: skip
    )
    assert f"{tmp_path / 'nowhere'} (from --data-dir) does not exist" in line


def test_fetch_offline_is_one_line_and_writes_nothing(bare_env, tmp_path):
    from test_cli_config import truthprobe

    to = tmp_path / "fetched"
    line = _one_line(
        truthprobe("data", "fetch", "--to", str(to), "--datasets", "mmlu", env=bare_env)
    )
    assert "could not load cais/mmlu" in line and "--data-dir DIR" in line, line
    assert not to.exists() or not any(to.rglob("*.jsonl"))
