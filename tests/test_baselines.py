"""All methods through one harness on the real default model (tiny settings)."""

from __future__ import annotations

import csv

import numpy as np

from truthprobe.baselines.compare import BaselinesConfig, baselines_table, run_baselines


def test_every_method_on_the_same_split(tmp_path):
    config = BaselinesConfig(
        tasks=("arc:grade",), seeds=(0,), max_per_stratum=30, max_test=6, validation_size=4,
        probe_n_train=8, icl_k=2, qlora_n_train=4, qlora_max_updates=1, n_boot=200,
        cache_dir=str(tmp_path / "act"), runs_dir=str(tmp_path / "runs"),
        plots_dir=str(tmp_path / "plots"), progress=False,
    )
    run_dir = run_baselines(config)
    correct = dict(np.load(run_dir / "correct.npz"))
    methods = {k.split("|")[1].split("@")[0] for k in correct}
    assert methods == {"zero_shot", "icl", "probe", "qlora"}
    assert all(m.shape == (6, 1) for m in correct.values())  # same 6 test items everywhere
    table = baselines_table(run_dir)
    assert "icl" in table and "qlora" in table and "wall time" in table
    with (run_dir / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(r["n_test"] == "6" for r in rows)
    assert (tmp_path / "plots" / run_dir.name / "sgr-bars.png").is_file()
