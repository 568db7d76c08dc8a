"""The transfer studies through the command line, on the tiny model and real ARC records:
each writes its tidy CSV, per-item results, config (model and data fingerprints) and figure;
a second run reproduces every number; bad settings are one-line errors before any work.

The studies' outputs are made in-process (`truthprobe.cli.main`, what the console script
calls) to keep the default test run short; bad settings go through the console script in a
subprocess, as a user meets them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_cli_config import truthprobe

from truthprobe.cli import main

STUDY_ARGS = {
    "transfer-matrix": ["--tasks", "{F}:grade", "{F}:difficulty", "--every-layer"],
    "hardness-gap": ["--tasks", "{F}:difficulty", "--min-test-per-level", "5"],
    "learning-curves": ["--tasks", "{F}:grade", "--sizes", "4", "8", "12"],
    "noisy-labels": ["--tasks", "{F}:grade", "--noise", "0", "0.5"],
    "third-grade-to-college": ["--tasks", "{F}:grade", "{M}:level"],
}
#: Studies whose defaults are the sweep's: with the same flags they share its run directory.
SWEEP_DEFAULTS = ("transfer-matrix", "learning-curves", "noisy-labels")
#: The settings a study and the sweep share in these tests.
SHARED = ["--n-train", "12", "--seeds", "2", "--validation-size", "10", "--n-boot", "200",
          "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One activation cache for every study here: the sample is extracted once."""
    return tmp_path_factory.mktemp("study-activations")


@pytest.fixture(scope="module")
def mmlu_sample(tmp_path_factory, load) -> Path:
    """Every 4th real MMLU-STEM-5 record (high school and college levels), as a JSONL file."""
    from conftest import write_jsonl

    records = load("mmlu").records[::4]
    return write_jsonl(tmp_path_factory.mktemp("data") / "mmlu-sample.jsonl", records)


def study(name: str, sample, model, tmp_path, cache, capsys, *extra: str, mmlu=None):
    args = [a.replace("{F}", str(sample)).replace("{M}", str(mmlu)) for a in STUDY_ARGS[name]]
    status = main([
        name, *args, *extra, "--model", str(model), *SHARED,
        "--cache-dir", str(cache), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"),
    ])  # fmt: skip
    out = capsys.readouterr()
    return SimpleNamespace(returncode=status, stdout=out.out, stderr=out.err)


def study_folder(tmp_path: Path, kind: str) -> Path:
    (folder,) = (tmp_path / "runs").glob(f"layer_sweep-*/studies/{kind}-*")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDY_ARGS))
def test_each_study_writes_its_table_config_and_figure_reproducibly(
    name, arc_sample, mmlu_sample, tiny_model_dir, tmp_path, shared_cache, capsys
):
    def again():
        return study(
            name, arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys, mmlu=mmlu_sample
        )

    first = again()
    assert first.returncode == 0, first.stderr
    kind = name.replace("-", "_")
    folder = study_folder(tmp_path, kind)  # a study folder inside the sweep's run directory
    run_dir = folder.parent.parent
    layers = json.loads((folder / "layers.json").read_text())
    assert all(v["chosen_on"].startswith("easy validation") for v in layers.values())
    figure = next((tmp_path / "plots").glob(f"{run_dir.name}/{kind}-*.png"))
    table = pd.read_csv(folder / f"{kind}.csv")
    assert len(table) > 0 and table["accuracy"].between(0, 1).all()
    assert (table["accuracy_low"] <= table["accuracy"] + 1e-12).all()
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["model_fingerprint"]["name"] == str(tiny_model_dir)
    assert figure.with_suffix(".pdf").is_file()
    assert "table:" in first.stdout
    if name == "transfer-matrix":  # every layer of the tiny model and mid+last, one chosen
        assert set(table["layer"]) == {0, 1, 2, -2} and table["chosen"].sum() == 2 * 3 * 2
    if name == "learning-curves":  # cost: easy items 1 each, hard items --hard-cost (2)
        cost = table.set_index(["train_on", "n_train"])["cost"]
        assert cost[("easy", 8)] == 8 and cost[("hard", 8)] == 16
    if name == "hardness-gap":  # each level's test half stored with the study, but the hard
        plan = json.loads((folder / "plan.json").read_text())  # stratum's: the sweep's
        task = f"{arc_sample}:difficulty"
        own = [lv for lv in plan["levels"][task]["levels"] if lv["scored_set"]]
        assert len(plan["sets"][task]) == len(own) == table["test_level"].nunique() - 1
    second = again()
    assert second.returncode == 0, second.stderr
    assert "parts: 0 computed" in second.stdout
    pd.testing.assert_frame_equal(pd.read_csv(folder / f"{kind}.csv"), table)


def part_files(run_dir: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*.npz")}


@pytest.mark.slow
def test_a_studys_cells_are_the_sweeps_own_parts(
    arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys
):
    """The transfer matrix's diagonal, the learning curve at the sweep's n_train and noise 0
    are the sweep's stored parts: the study reuses those very files (bytes and modification
    times unchanged) and its cells are computed from them."""
    from truthprobe.runstore import load_run

    tasks = [f"{arc_sample}:grade", f"{arc_sample}:difficulty"]
    status = main([
        "sweep", "--tasks", *tasks, "--model", str(tiny_model_dir), *SHARED,
        "--cache-dir", str(shared_cache), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"),
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").glob("layer_sweep-*")
    swept = part_files(run_dir)
    for name in SWEEP_DEFAULTS:
        made = study(name, arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys)
        assert made.returncode == 0, made.stderr
    after = part_files(run_dir)
    assert all(after[p] == swept[p] for p in swept), "the study rewrote a sweep part"
    sweep = load_run(run_dir).items
    sweep = sweep[
        (sweep["role"] == "test") & (sweep["family"] == "mc_linear") & (sweep["n_train"] == 12)
        & (sweep["noise"] == 0) & (sweep["test_task"] == sweep["task"])
    ]  # fmt: skip

    def swept_accuracy(task: str, layer: int, train_on: str) -> float:
        mine = sweep[(sweep["task"] == task) & (sweep["layer"] == layer)]
        return float(mine[mine["train_on"] == train_on]["correct"].mean())

    matrix = load_run(study_folder(tmp_path, "transfer_matrix")).study
    diagonal = matrix[(matrix["train_task"] == matrix["test_task"]) & matrix["chosen"]]
    assert len(diagonal) == 2 * 3
    for row in diagonal.itertuples():
        assert row.accuracy == swept_accuracy(row.train_task, row.layer, row.train_on)
    curves = load_run(study_folder(tmp_path, "learning_curves")).study
    for row in curves[curves["n_train"] == 12].itertuples():
        assert row.accuracy == swept_accuracy(row.task, row.layer, row.train_on)
    noisy = load_run(study_folder(tmp_path, "noisy_labels")).study
    for row in noisy[noisy["p"] == 0].itertuples():
        train_on = "easy" if row.train_on == "easy (clean)" else "hard"
        assert row.accuracy == swept_accuracy(row.task, row.layer, train_on)
    # the study's parts sit beside the sweep's: more items, noisy labels, other tasks
    extra = load_run(run_dir).summary
    assert {12, 4, 8} <= set(extra["n_train"]) and {0.0, 0.5} <= set(extra["noise"])
    assert set(extra["test_task"]) == set(tasks)


def test_the_hardness_gaps_hard_level_is_the_sweeps_hard_stratum(
    arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys
):
    """A level whose items are the hard stratum is split as the sweep splits it: its probes are
    the sweep's `hard` parts (files untouched by the study), and its level-to-same-level cell is
    their accuracy on the sweep's hard test set, computed from those very parts."""
    from truthprobe.runstore import load_run

    task = f"{arc_sample}:difficulty"
    status = main([
        "sweep", "--tasks", task, "--max-per-stratum", "0", "--model", str(tiny_model_dir),
        *SHARED, "--cache-dir", str(shared_cache), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"),
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").glob("layer_sweep-*")
    swept = part_files(run_dir)
    made = study("hardness-gap", arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys)
    assert made.returncode == 0, made.stderr
    assert part_files(run_dir).items() >= swept.items(), "the study rewrote a sweep part"
    folder = study_folder(tmp_path, "hardness_gap")
    plan = json.loads((folder / "plan.json").read_text())["levels"][task]["levels"]
    (hard,) = [lv for lv in plan if lv["train_on"] == "hard"]
    table = pd.read_csv(folder / "hardness_gap.csv")
    pair = table[(table["kind"] == "pair") & (table["train_level"] == hard["value"])]
    cell = pair[pair["test_level"] == hard["value"]].iloc[0]
    items = load_run(run_dir).items
    mine = items[
        (items["task"] == task) & (items["family"] == "mc_linear") & (items["train_on"] == "hard")
        & (items["layer"] == cell["layer"]) & (items["role"] == "test") & (items["n_train"] == 12)
        & (items["noise"] == 0) & (items["test_task"] == task)
    ]  # fmt: skip
    assert len(mine) > 0 and cell["accuracy"] == float(mine["correct"].mean())


def test_a_moved_run_folder_still_reports_its_sweep_and_studies(
    arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys
):
    first = study("noisy-labels", arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys)
    assert first.returncode == 0, first.stderr
    folder = study_folder(tmp_path, "noisy_labels")
    table = pd.read_csv(folder / "noisy_labels.csv")
    moved = tmp_path / "elsewhere" / folder.parent.parent.name
    shutil.move(folder.parent.parent, moved)  # the run folder alone: no cache, no model
    for target in (moved, moved / "studies" / folder.name):
        assert main(["report", str(target), "--plots-dir", str(tmp_path / "p2")]) == 0
        assert "table" in capsys.readouterr().out  # `tables:` of the sweep, `table:` of a study
    again = pd.read_csv(moved / "studies" / folder.name / "noisy_labels.csv")
    pd.testing.assert_frame_equal(again, table)


def test_a_study_with_lm_evals_prompt_reads_that_template_s_cache(
    arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys
):
    from truthprobe.prompts import LMEVAL

    status = main([
        "noisy-labels", "--tasks", f"{arc_sample}:grade", "--noise", "0", "--template", "lmeval",
        "--model", str(tiny_model_dir), "--n-train", "12", "--seeds", "1",
        "--validation-size", "10", "--n-boot", "50", "--layer", "1",
        "--cache-dir", str(shared_cache), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"), "--no-progress",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").iterdir()
    (task,) = json.loads((run_dir / "config.json").read_text())["datasets"].values()
    assert task["template"] == {"name": "lmeval", "hash": LMEVAL.hash}
    (stored,) = run_dir.glob("parts/*/task.json")
    assert Path(json.loads(stored.read_text())["cache"]["path"]).name.startswith(
        "arc-sample-lmeval-"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["noisy-labels", "--noise", "0", "1.5"], "--noise must be fractions"),
        (["learning-curves", "--hard-cost", "0"], "--hard-cost must be positive"),
        (["transfer-matrix", "--tasks", "gsm8k:steps"], "no answer choices"),
        (["transfer-matrix", "--tasks", "arc:mdl"], "human-rated measures only"),
        (["hardness-gap", "--tasks", "arc:level"], "level"),
        (["third-grade-to-college", "--tasks", "arc:grade", "arc:grade"], "twice"),
        (["third-grade-to-college", "--tasks", "mmlu:level", "arc:grade"], "by grade"),
        (["noisy-labels", "--tasks", "{F}:grade", "--layer", "99"], "not a probed layer"),
    ],
)
def test_bad_study_settings_are_one_line_errors(
    args, message, tmp_path, tiny_model_dir, arc_sample
):
    """Through the console script, as a user meets them: exit 2, one line, no folder (a
    layer the model lacks is known once the model is: the sweep's parts made by then stay)."""
    args = [a.replace("{F}", str(arc_sample)) for a in args]
    result = truthprobe(
        *args, "--n-train", "12", "--validation-size", "10", "--model", str(tiny_model_dir),
        "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "act"),
        "--no-progress",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    if "--layer" not in args:
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
        assert not (tmp_path / "runs").exists()
    else:  # after the model's loading messages: one error line, the last; nothing half-written
        assert [x for x in lines if x.startswith("error:")] == lines[-1:], lines
        assert message in lines[-1]
        assert not list((tmp_path / "runs").rglob("studies"))
        assert not list((tmp_path / "runs").rglob("*.partial-*"))
