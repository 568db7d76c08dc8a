"""All methods through one harness on the real default model (tiny settings)."""

from __future__ import annotations

import csv

import pytest

from truthprobe.baselines.compare import (
    BaselinesConfig,
    baselines_table,
    load_parts,
    run_baselines,
)


def _config(tmp_path, **overrides) -> BaselinesConfig:
    settings = dict(
        tasks=("arc:grade",), seeds=(0,), max_per_stratum=30, max_test=6, validation_size=4,
        probe_n_train=8, icl_k=2, qlora_n_train=4, qlora_max_updates=1, n_boot=200,
        max_new_tokens=12, cache_dir=str(tmp_path / "act"), runs_dir=str(tmp_path / "runs"),
        plots_dir=str(tmp_path / "plots"), progress=False,
    )  # fmt: skip
    settings.update(overrides)
    return BaselinesConfig(**settings)


def test_every_method_on_the_same_split(tmp_path):
    run_dir = run_baselines(_config(tmp_path))
    correct, seconds = load_parts(run_dir, "arc:grade")
    methods = {k.split("|")[0].split("@")[0] for k in correct}
    assert methods == {"zero_shot", "icl", "probe", "qlora"}
    assert all(m.shape == (6, 1) for m in correct.values())  # same 6 test items everywhere
    assert {"extract", "icl", "qlora"} <= set(seconds)
    table = baselines_table(run_dir)
    assert "icl" in table and "qlora" in table and "wall time" in table
    with (run_dir / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(r["n_test"] == "6" for r in rows)
    assert (tmp_path / "plots" / run_dir.name / "sgr-bars.png").is_file()


def test_gsm8k_runs_cot_only_and_a_rerun_resumes_from_stored_parts(tmp_path):
    """GSM8k: zero-shot CoT as the unsupervised row, ICL+CoT and QLoRA+CoT, no probe; every
    part is stored as it finishes, so a re-run recomputes only what is missing."""
    config = _config(tmp_path, tasks=("gsm8k:steps",), max_test=2, validation_size=10)
    run_dir = run_baselines(config)
    parts = run_dir / "parts" / "gsm8k-steps"
    names = sorted(p.stem for p in parts.glob("*.npz"))
    assert names == sorted(
        ["zero_shot+cot.none.0"]
        + [f"{m}.{t}.0" for m in ("icl+cot", "qlora+cot") for t in ("easy", "hard", "all")]
    )
    completions = (parts / "icl+cot.easy.0.jsonl").read_text().splitlines()
    assert len(completions) == 2 and '"gold"' in completions[0]
    table = baselines_table(run_dir)
    assert "icl+cot" in table and "qlora+cot" in table and "probe" not in table

    stamps = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.npz")}
    (parts / "icl+cot.hard.0.npz").unlink()  # as if interrupted before this part finished
    assert run_baselines(config) == run_dir  # same settings, same run directory
    after = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.npz")}
    assert set(after) == set(stamps)
    changed = {n for n in after if after[n] != stamps.get(n)}
    assert changed == {"icl+cot.hard.0.npz"}


def test_run_directory_ignores_task_and_method_lists(tmp_path):
    one = _config(tmp_path, tasks=("arc:grade",), methods=("icl",))
    two = _config(tmp_path, tasks=("arc:grade", "gsm8k:steps"))
    assert one.run_hash() == two.run_hash()
    assert one.run_hash() != _config(tmp_path, max_test=7).run_hash()
    with pytest.raises(ValueError, match="unknown method"):
        _config(tmp_path, methods=("icl", "lora"))
