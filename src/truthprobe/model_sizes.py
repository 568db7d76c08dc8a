"""Several models in one study: each model's run on its own, then compared by size and depth.

`--model a b` (any command of the harness) runs the command once per model, exactly as it
runs for one: each model has its own caches and its own run directory (the model is part of
the run's hash and every part's fingerprint), reusable alone and by later commands. Then
`write_comparison` reads the runs' stored parts (`report.report_rows`: the same layer choice
and SGR as every table) into one table with a model column, and draws SGR and easy / hard
accuracy against model size (parameters), as the paper does for Llama-2 7B / 13B / 70B, and
accuracy per layer on a relative depth axis (layer / layers), where depths differ.

A comparison folder is `<runs_dir>/models-<hash>/`: `models.json` (the run directories, and
the study folders of a study), `models.csv`, `layers.csv`, `summary.txt`; its figures go to
`<plots_dir>/models-<hash>/`. `truthprobe report <folder>` redraws it from the runs alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from truthprobe.errors import TruthprobeError
from truthprobe.harness import RunSummary
from truthprobe.methods.base import MID_LAST, layer_name
from truthprobe.plots import plot_model_size, plot_relative_depth
from truthprobe.report import _write_csv, read_meta, report_rows, write_report
from truthprobe.runstore import read_json, weights_name, write_json

COMPARISON_FILE = "models.json"


def run_each_model(config: Any, one: Callable[[Any], tuple[Path, Path | None]]) -> int:
    """Run `config`'s command once per model and compare them (several models), or with
    `--dry-run` print the plan of every model's caches and stop.

    `one(config of one model)` runs the command as for a single model, printing its report,
    and returns (run directory, study folder or None)."""
    if config.cache.dry_run:
        from truthprobe.harness import Harness

        first = config.per_model()[0]
        print(Harness(first.harness()).dry_run(config.model.each()))
        return 0
    done = [one(single) for single in config.per_model()]
    if len(done) > 1:
        run_dirs = [run_dir for run_dir, _ in done]
        studies = [folder for _, folder in done if folder is not None]
        print(write_comparison(run_dirs, config.output.runs_dir, studies))
    return 0


def reported(summary: RunSummary) -> tuple[Path, None]:
    """Print a run's report and what it did; its run directory (a `one` of `run_each_model`)."""
    print(write_report(summary.run_dir))
    print(summary.describe())
    return summary.run_dir, None


def comparison_dir(runs_dir: str | Path, run_dirs: Sequence[Path], studies: Sequence[Path]) -> Path:
    """Where the comparison of `run_dirs` (and `studies`) goes: named by their names."""
    names = [Path(p).name for p in run_dirs] + [Path(p).name for p in studies]
    digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:12]
    return Path(runs_dir) / f"models-{digest}"


def write_comparison(
    run_dirs: Sequence[Path], runs_dir: str | Path, studies: Sequence[Path] = ()
) -> str:
    """Record which runs (and study folders) are compared, then render the comparison."""
    folder = comparison_dir(runs_dir, run_dirs, studies)
    root = Path(runs_dir).resolve()
    write_json(
        folder / COMPARISON_FILE,
        {
            "runs": [str(Path(p).resolve().relative_to(root)) for p in run_dirs],
            "studies": [str(Path(p).resolve().relative_to(root)) for p in studies],
        },
    )
    return render_comparison(folder)


def is_comparison_dir(path: str | Path) -> bool:
    return (Path(path) / COMPARISON_FILE).is_file()


def model_rows(run_dir: Path) -> tuple[dict, list[dict], list[dict]]:
    """A run's model (label, parameters, layers) and its table and per-layer accuracy rows,
    each with the model's columns and the relative depth of its layer."""
    meta = read_meta(run_dir)
    config = meta["config"]
    rows = report_rows(run_dir, int(config["output"]["n_boot"]), int(config["split"]["n_train"]))
    size = meta.get("model_size") or {}
    layers = [r["layer"] for r in rows.accuracy if r["layer"] >= 0]
    n_layers = size.get("n_layers") or (max(layers) if layers else 0)
    model = {
        "model": weights_name(meta["model_fingerprint"]),
        "parameters": size.get("parameters", float("nan")),
        "n_layers": n_layers,
        "run": run_dir.name,
    }

    def depth(layer: int) -> float:  # none for mid+last (two depths) and methods without one
        return layer / n_layers if layer >= 0 and n_layers else float("nan")

    table = [
        {**model, "relative_depth": depth(r["layer"]), **_table_columns(r)} for r in rows.table
    ]
    per_layer = [
        {**model, "relative_depth": depth(r["layer"]), **r}
        for r in rows.accuracy
        if r["layer"] != MID_LAST
    ]
    return model, table, per_layer


def _table_columns(row: dict) -> dict:
    keep = ("task", "method", "layer", "unsupervised", "easy", "hard", "all", "sgr", "sgr_low",
            "sgr_high", "no_gap", "sgr_text", "n_test", "n_seeds")  # fmt: skip
    return {k: row[k] for k in keep}


def render_comparison(folder: str | Path, plots_dir: str | Path | None = None) -> str:
    """The comparison's table, CSVs, figures and summary from the compared runs alone.

    Raises:
        TruthprobeError: not a comparison folder, or a compared run is missing.
    """
    folder = Path(folder)
    if not is_comparison_dir(folder):
        raise TruthprobeError(f"{folder}: not a model comparison (no {COMPARISON_FILE})")
    listed = read_json(folder / COMPARISON_FILE)
    root = folder.parent
    models, table, per_layer = [], [], []
    for name in listed["runs"]:
        run_dir = root / name
        if not run_dir.is_dir():
            raise TruthprobeError(f"{folder}: compares {run_dir}, which is not there")
        model, rows, layers = model_rows(run_dir)
        models.append(model)
        table += rows
        per_layer += layers
    first = read_meta(root / listed["runs"][0])
    plots = Path(plots_dir or first["config"]["output"]["plots_dir"]) / folder.name
    _write_csv(folder / "models.csv", table)
    _write_csv(folder / "layers.csv", per_layer)
    study_lines = _study_tables(root, listed.get("studies", []), models, folder)
    figures = [plot_model_size(table, plots / "model-size.png")]
    if len(models) > 1:
        figures.append(plot_relative_depth(per_layer, plots / "relative-depth.png"))
    text = _summary(models, table, study_lines, folder, figures)
    (folder / "summary.txt").write_text(text + "\n")
    return text


def _study_tables(root: Path, studies: Sequence[str], models: list[dict], folder: Path) -> list:
    """Each model's study table, with the model's columns, in one CSV per study kind."""
    import pandas as pd

    frames: dict[str, list] = {}
    for name, model in zip(studies, models, strict=bool(studies)):
        study = root / name
        kind = read_json(study / "study.json")["kind"]
        table = pd.read_csv(study / f"{kind}.csv")
        for column in ("parameters", "model"):
            table.insert(0, column, model[column])
        frames.setdefault(kind, []).append(table)
    lines = []
    for kind, parts in frames.items():
        path = folder / f"{kind}.csv"
        pd.concat(parts, ignore_index=True).to_csv(path, index=False)
        lines.append(f"{kind} of every model: {path}")
    return lines


def _summary(
    models: list[dict], table: list[dict], studies: list[str], folder: Path, figures: list[Path]
) -> str:
    lines = [f"models compared: {len(models)}"]
    for m in models:
        size = f"{m['parameters']:,} parameters" if _finite(m["parameters"]) else "size unknown"
        lines.append(f"  {m['model']}: {size}, {m['n_layers']} layers; run {m['run']}")
    wide = max([18, *(len(r["task"]) for r in table)])
    label = max([16, *(len(m["model"]) for m in models)])
    lines += [
        "",
        f"{'task':<{wide}} {'method':<15} {'model':<{label}} {'layer':>8} {'depth':>5} "
        f"{'zero-shot':>9} {'easy':>6} {'hard':>6}  SGR [95% CI]",
    ]
    for r in sorted(table, key=lambda r: (r["task"], r["method"])):
        depth = f"{r['relative_depth']:.2f}" if _finite(r["relative_depth"]) else "-"
        lines.append(
            f"{r['task']:<{wide}} {r['method']:<15} {r['model']:<{label}} "
            f"{layer_name(r['layer']):>8} {depth:>5} {r['unsupervised']:>9.3f} "
            f"{r['easy']:>6.3f} {r['hard']:>6.3f}  {r['sgr_text']}"
        )
    lines += ["", *studies] if studies else []
    shown = ", ".join(str(f) for f in figures)
    lines.append(f"tables: {folder}/models.csv, layers.csv; figures: {shown}")
    return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
