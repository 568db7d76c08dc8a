"""The layer sweep end to end on the real default model (small settings), and layer choice."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from truthprobe.cli import main
from truthprobe.report import best_layers, write_report
from truthprobe.transfer import SweepConfig, layer_sweep


def test_best_layer_is_chosen_on_validation_not_test():
    rows = []
    for layer, test_acc, val_acc in ((1, 0.9, 0.4), (2, 0.3, 0.8), (3, 0.5, 0.5)):
        for seed in range(2):
            rows.append(
                dict(
                    dataset="arc",
                    measure="grade",
                    layer=str(layer),
                    method="mc_linear",
                    train_on="easy",
                    seed=str(seed),
                    accuracy=str(test_acc),
                    validation_accuracy=str(val_acc),
                )
            )
            rows.append(dict(rows[-1], train_on="hard", validation_accuracy="1.0"))
    assert best_layers(rows) == {("arc:grade", "mc_linear"): 2}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = SweepConfig(
        tasks=("arc:grade",),
        layers=(0, 9, 18),
        probes=("mc_linear", "mass_mean"),
        n_train=20,
        seeds=(0, 1),
        validation_size=10,
        max_per_stratum=40,
        n_boot=300,
        cache_dir=str(root / "act"),
        runs_dir=str(root / "runs"),
        plots_dir=str(root / "plots"),
        progress=False,
    )
    return config, layer_sweep(config)


def test_sweep_writes_tidy_results(small_run):
    config, run = small_run
    with (run.run_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    probe_rows = [r for r in rows if int(r["layer"]) >= 0]
    assert len(probe_rows) == 3 * 2 * 3 * 2  # layers x probes x train_on x seeds
    assert {r["method"] for r in rows} == {
        "mc_linear",
        "mass_mean",
        "zero_shot_raw",
        "zero_shot_chars",
    }
    assert all(r["n_test"] == "20" for r in rows)  # half of the 40 hard items
    assert all(r["cache_file"] == run.caches["arc:grade"] for r in rows)
    assert all(json.loads(r["model"])["name"] == "default" and r["package_version"] for r in rows)
    meta = json.loads((run.run_dir / "config.json").read_text())
    assert meta["model_fingerprint"]["revision"].startswith("gguf-sha256:")
    assert meta["caches"]["arc:grade"].endswith(".h5") and meta["dataset_hashes"]["arc:grade"]
    assert run.run_dir.name == f"layer_sweep-{config.run_hash()}"


def test_report_is_reproducible_and_draws_plots(small_run, capsys, tmp_path):
    config, run = small_run
    first = write_report(run.run_dir)
    sgr_first = (run.run_dir / "sgr.csv").read_text()
    assert main(["report", str(run.run_dir), "--plots-dir", str(tmp_path)]) == 0
    assert (run.run_dir / "sgr.csv").read_text() == sgr_first
    assert "arc:grade" in capsys.readouterr().out and "mc_linear" in first
    pngs = sorted(p.name for p in (tmp_path / run.run_dir.name).glob("*.png"))
    assert pngs == [
        "arc-grade-mass_mean-accuracy.png",
        "arc-grade-mass_mean-sgr.png",
        "arc-grade-mc_linear-accuracy.png",
        "arc-grade-mc_linear-sgr.png",
    ]


def test_sweep_reuses_the_cache_and_is_deterministic(small_run):
    config, run = small_run
    with np.load(run.run_dir / "correct.npz") as saved:
        a = dict(saved)
    again = layer_sweep(config)
    assert again.extract_seconds < run.extract_seconds  # no re-extraction
    with np.load(again.run_dir / "correct.npz") as saved:
        b = dict(saved)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
