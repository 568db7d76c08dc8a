"""The transfer studies through the command line, on the tiny model and real ARC records:
each writes its tidy CSV, per-item results, config (model and data fingerprints) and figure;
a second run reproduces every number; bad settings are one-line errors before any work.

The studies' outputs are made in-process (`truthprobe.cli.main`, what the console script
calls) to keep the default test run short; bad settings go through the console script in a
subprocess, as a user meets them."""

from __future__ import annotations

import json
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
}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One activation cache for every study here: the sample is extracted once."""
    return tmp_path_factory.mktemp("study-activations")


def study(name: str, sample, model, tmp_path, cache, capsys):
    args = [a.replace("{F}", str(sample)) for a in STUDY_ARGS[name]]
    status = main([
        name, *args, "--model", str(model), "--n-train", "12", "--seeds", "2",
        "--validation-size", "10", "--n-boot", "200", "--layer", "1",
        "--cache-dir", str(cache), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"), "--no-progress",
    ])  # fmt: skip
    out = capsys.readouterr()
    return SimpleNamespace(returncode=status, stdout=out.out, stderr=out.err)


@pytest.mark.parametrize("name", sorted(STUDY_ARGS))
def test_each_study_writes_its_table_items_config_and_figure_reproducibly(
    name, arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys
):
    first = study(name, arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys)
    assert first.returncode == 0, first.stderr
    kind = name.replace("-", "_")
    (run_dir,) = (tmp_path / "runs").glob(f"{kind}-*")
    table = pd.read_csv(run_dir / f"{kind}.csv")
    assert len(table) > 0 and table["accuracy"].between(0, 1).all()
    assert (table["accuracy_low"] <= table["accuracy"] + 1e-12).all()
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["model_fingerprint"]["name"] == str(tiny_model_dir)
    assert all(d["content_sha256"] for d in meta["datasets"].values())
    assert all(v["layer"] == 1 for v in meta["layers"].values())
    figure = next((tmp_path / "plots").glob(f"{kind}-*/{kind}.png"))
    assert figure.with_suffix(".pdf").is_file()
    assert "table:" in first.stdout and "time:" in first.stdout
    if name == "transfer-matrix":  # every layer of the tiny model, the chosen one marked
        assert set(table["layer"]) == {0, 1, 2} and table["chosen"].sum() == 2 * 3 * 2
        assert figure.with_name("transfer_matrix-layers.png").is_file()
    again = study(name, arc_sample, tiny_model_dir, tmp_path, shared_cache, capsys)
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / f"{kind}.csv"), table)


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
    assert Path(task["cache"]).name.startswith("arc-sample-lmeval-")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["noisy-labels", "--noise", "0", "1.5"], "--noise must be fractions"),
        (["learning-curves", "--hard-cost", "0"], "--hard-cost must be positive"),
        (["transfer-matrix", "--tasks", "gsm8k:steps"], "no answer choices"),
        (["transfer-matrix", "--tasks", "arc:mdl"], "human-rated measures only"),
        (["hardness-gap", "--tasks", "arc:level"], "level"),
    ],
)
def test_bad_study_settings_are_one_line_errors(args, message, tmp_path, tiny_model_dir):
    """Through the console script, as a user meets them: exit 2, one line, no folder."""
    result = truthprobe(
        *args, "--model", str(tiny_model_dir), "--runs-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "act"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not (tmp_path / "runs").exists()
