"""Several models in one command: each run on its own, then compared by size and depth (tiny
model in full precision and under bitsandbytes 8-bit, real ARC records)."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from truthprobe.configs import ConfigError, ModelConfig, ModelsConfig
from truthprobe.sweep import SweepConfig


def test_several_models_are_checked_before_anything_runs():
    with pytest.raises(ConfigError, match="--quantization takes one value, or one per --model"):
        ModelsConfig(("a", "b", "c"), ("none", "8bit"))
    with pytest.raises(ConfigError, match="--model lists a .8bit. twice"):
        ModelsConfig(("a", "a"), ("8bit",))
    with pytest.raises(ConfigError, match="--model names several models; this needs one"):
        SweepConfig(model=ModelsConfig(("a", "b"))).harness()


def test_each_model_keeps_the_run_directory_it_has_alone():
    """`per_model` gives each model the config it would have alone: the same run directory
    as that model's single-model command (so its runs are reused either way), and the models'
    directories differ."""
    two = SweepConfig(model=ModelsConfig(("default", "default"), ("none", "8bit")))
    dirs = [c.harness().run_dir() for c in two.per_model()]
    alone = [
        SweepConfig(model=ModelConfig("default", q)).harness().run_dir() for q in ("none", "8bit")
    ]
    assert dirs == alone and dirs[0] != dirs[1]
    assert SweepConfig().harness().run_dir() == alone[0]  # a ModelConfig is that one model
    moved = dataclasses.replace(two.cache, shards=4, launcher="slurm", cache_dir="elsewhere")
    assert dataclasses.replace(two, cache=moved).per_model()[1].harness().run_dir() == dirs[1]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_models_in_one_sweep_then_a_transfer_study(tiny, tiny_model_dir, arc_sample, tmp_path):
    """`truthprobe sweep --model M M --quantization none 8bit` from the console: two run
    directories, each what the model's own sweep gives, and their comparison (a model column,
    the model-size and relative-depth figures), redrawn by `truthprobe report` from the runs
    alone; then the transfer study over the same two models reuses both runs' sweep parts."""
    from test_cli_config import truthprobe

    model = str(tiny_model_dir)
    both = ("--model", model, model, "--quantization", "none", "8bit")
    validated = ("--probe-preset", "validated")  # the studies' probe
    common = (
        "--n-train", "12", "--seeds", "2", "--validation-size", "10", "--n-boot", "200",
        "--no-progress",
        "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"),
    )  # fmt: skip
    sweep = truthprobe("sweep", "--tasks", f"{arc_sample}:grade", *both, *common, *validated)
    assert sweep.returncode == 0, sweep.stderr
    assert "models compared: 2" in sweep.stdout
    (folder,) = (tmp_path / "runs").glob("models-*")
    table = _rows(folder / "models.csv")
    models = sorted({r["model"] for r in table})
    assert len(models) == 2 and any("8bit" in m for m in models)
    parameters = sum(p.numel() for p in tiny.model.parameters())
    assert {int(r["parameters"]) for r in table} == {parameters}
    for row in table:  # each model's row is its own run's table row, at the same layer
        (own,) = [
            r for r in _rows(tmp_path / "runs" / row["run"] / "table.csv")
            if r["method"] == row["method"]
        ]  # fmt: skip
        assert (own["layer"], own["easy"], own["hard"]) == (row["layer"], row["easy"], row["hard"])
        layer = int(row["layer"])  # -2: mid+last, two depths
        depth = float(row["relative_depth"] or "nan")
        assert depth == pytest.approx(layer / 2) if layer >= 0 else depth != depth
    plots = tmp_path / "plots" / folder.name
    assert (plots / "model-size.png").stat().st_size > 0
    assert (plots / "relative-depth.png").stat().st_size > 0
    redrawn = truthprobe("report", str(folder))
    assert redrawn.returncode == 0 and redrawn.stdout == (folder / "summary.txt").read_text()

    eight = ("--model", model, "--quantization", "8bit")
    alone = truthprobe("sweep", "--tasks", f"{arc_sample}:grade", *eight, *common, *validated)
    assert alone.returncode == 0, alone.stderr
    assert " 0 computed" in alone.stdout and "models compared" not in alone.stdout

    study = truthprobe(
        "transfer-matrix",
        "--tasks",
        f"{arc_sample}:grade",
        f"{arc_sample}:difficulty",
        *both,
        *common,
    )
    assert study.returncode == 0, study.stderr
    (matrix,) = (tmp_path / "runs").glob("models-*/transfer_matrix.csv")
    assert sorted({r["model"] for r in _rows(matrix)}) == models

    gone = tmp_path / "runs" / table[0]["run"]  # a compared run moved away: one clear line
    gone.rename(tmp_path / "elsewhere")
    missing = truthprobe("report", str(folder))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    (line,) = [x for x in missing.stderr.splitlines() if x.startswith("error:")]
    assert f"compares {gone}, which is not there" in line
