"""Tables, plots and the printed summary of any run, from its stored parts only.

`write_report(run_dir)` reads the run store (`truthprobe.runstore`), computes accuracies and
SGR with paired bootstrap intervals over test items and seeds, and writes `table.csv` (one row
per task x method family), `accuracy.csv` and `sgr.csv` (per layer for probes), `summary.txt`
and the figures. Nothing here loads a model or a cache, so `truthprobe report` redraws a layer
sweep or a baselines comparison in seconds.

A probe family (`mc_linear` at every layer) is reported at the layer where easy-trained probes
do best on the held-out easy validation items, never chosen on the hard test set.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from truthprobe.choice_probs import COLLAPSED_MARGIN
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import TRAIN_ON, bootstrap_accuracy
from truthprobe.methods.base import layer_name
from truthprobe.plots import (
    bands_note,
    plot_families,
    plot_layer_accuracy,
    plot_layer_sgr,
    plot_reliability,
    plot_sgr_bars,
)
from truthprobe.results import (
    NORMALISED,
    UNSUPERVISED,
    FamilyResults,
    TaskResults,
    best_layer,
    calibration_cells,
    collect,
    collect_tasks,
    floor,
    reliability_rows,
    sgr_cells,
)
from truthprobe.runstore import read_json

#: What the table takes from the chosen layer's SGR row (`SGRResult.to_dict`).
CHOSEN_SGR = (
    "sgr", "sgr_low", "sgr_high", "n_test", "n_seeds", "denominator", "denominator_low",
    "denominator_high", "no_gap", "zero_denominators", "n_boot",
)  # fmt: skip


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _family_order(name: str) -> tuple[int, str]:
    rank = {"icl": 1, "icl+cot": 1, "qlora": 2, "qlora+cot": 2}
    return (rank.get(name, 0), name)


def _sgr_columns(cells: dict) -> dict:
    """What `sgr.csv` keeps of `sgr_cells` (the per-layer SGR, no comparison with chance)."""
    return {k: v for k, v in cells.items() if "vs_chance" not in k and k != "sgr_text"}


@dataclass
class FamilyFigure:
    """What the per-layer figures of one method family draw."""

    task: TaskResults
    family: str
    accuracy: list[dict]
    sgr: list[dict]
    zero_shot: dict
    layer: int
    n_seeds: int


@dataclass
class ReportRows:
    """A run's result rows: `table` (one per task x method family, at the chosen layer),
    `accuracy` and `sgr` (per layer), method times, and what the figures draw."""

    table: list[dict] = field(default_factory=list)
    accuracy: list[dict] = field(default_factory=list)
    sgr: list[dict] = field(default_factory=list)
    timing: list[str] = field(default_factory=list)
    figures: list[FamilyFigure] = field(default_factory=list)
    calibration: list[dict] = field(default_factory=list)
    """Reliability diagram rows on the hard test sets: per task, the floor and each family's
    pools at its chosen layer, per confidence bin."""


def read_meta(run_dir: Path) -> dict:
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise TruthprobeError(f"{run_dir}: not a run directory (no config.json)")
    return read_json(config_path)


def report_rows(run_dir: Path, n_boot: int, n_train: int) -> ReportRows:
    """Every task's accuracy and SGR rows from the stored parts (`results.collect`)."""
    rows = ReportRows()
    for task in collect(run_dir):
        unsup_name = floor(task)
        if unsup_name is None:
            continue
        unsup = task.families[unsup_name].matrix(-1, "none")
        floor_acc = bootstrap_accuracy(unsup, n_boot)
        norm = task.families.get(NORMALISED)
        norm_acc = float(norm.matrix(-1, "none").mean()) if norm else float("nan")
        zero_row = dict(
            accuracy=floor_acc.estimate, accuracy_low=floor_acc.low, accuracy_high=floor_acc.high
        )
        unsup_conf = task.families[unsup_name].confidence_matrix(-1, "none")
        unsup_calibration = calibration_cells(unsup_conf, unsup, n_boot, "unsupervised")
        if unsup_conf is not None:
            rows.calibration += reliability_rows(
                unsup_conf, unsup, task=task.name, method=unsup_name, train_on="none", layer=-1
            )
        rows.timing.append(
            f"{task.name}: "
            + ", ".join(f"{n} {f.seconds:.0f} s" for n, f in sorted(task.families.items()))
        )
        for name in sorted(task.families, key=_family_order):
            if name in UNSUPERVISED or name == NORMALISED:
                continue
            family = task.families[name]
            family_acc, family_sgr = _layer_rows(task, name, family, unsup, n_boot)
            best = best_layer(family)
            for row in family_sgr:
                row["best_layer"] = row["layer"] == best
            rows.accuracy += family_acc
            rows.sgr += family_sgr
            chosen = next((r for r in family_sgr if r["layer"] == best), None)
            acc = {r["train_on"]: r["accuracy"] for r in family_acc if r["layer"] == best}
            if chosen is None or "all" not in acc:
                continue  # a part is missing (interrupted run): no row rather than a wrong one
            # the chosen layer's cells again, with SGR against chance where zero-shot falls
            # below guessing (the floor a probe must beat to have learned anything)
            easy, hard = family.matrix(best, "easy"), family.matrix(best, "hard")
            cells = sgr_cells(unsup, easy, hard, n_boot, task.chance_items)
            calibration = dict(unsup_calibration)
            auroc = {"auroc_unsupervised": task.families[unsup_name].mean_auroc(-1, "none")}
            auroc.update({f"auroc_{on}": family.mean_auroc(best, on) for on in TRAIN_ON})
            for on in TRAIN_ON:
                confidence, correct = family.confidence_matrix(best, on), family.matrix(best, on)
                calibration.update(calibration_cells(confidence, correct, n_boot, on))
                if confidence is not None:
                    rows.calibration += reliability_rows(
                        confidence, correct, task=task.name, method=name, train_on=on, layer=best
                    )
            versus_chance = {k: v for k, v in cells.items() if "vs_chance" in k}
            rows.table.append(
                dict(
                    task=task.name,
                    method=name,
                    weights="; ".join(sorted(family.weights)),
                    unsupervised_weights="; ".join(sorted(task.families[unsup_name].weights)),
                    label=f"{name}@{layer_name(best)}" if best != -1 else name,
                    layer=best,
                    unsupervised_method=unsup_name,
                    unsupervised=floor_acc.estimate,
                    zero_shot_norm=norm_acc,
                    easy=acc["easy"],
                    hard=acc["hard"],
                    all=acc["all"],
                    **{k: chosen[k] for k in CHOSEN_SGR},
                    n_train=n_train,
                    chance=task.chance,
                    sgr_text=cells["sgr_text"],
                    **versus_chance,
                    setting=family.settings(best),
                    collapsed=family.collapsed(best)[0],
                    parts=family.collapsed(best)[1],
                    **auroc,
                    **calibration,
                )
            )
            if len(family.layers) > 1:
                rows.figures.append(
                    FamilyFigure(task, name, family_acc, family_sgr, zero_row, best,
                                 chosen["n_seeds"])
                )  # fmt: skip
    return rows


def _layer_rows(
    task: TaskResults, name: str, family: FamilyResults, unsup: np.ndarray, n_boot: int
) -> tuple[list[dict], list[dict]]:
    """Per layer of a family: accuracy of each training pool, and SGR where easy and hard
    have every seed."""
    family_acc, family_sgr = [], []
    for layer in family.layers:
        matrices = {t: family.matrix(layer, t) for t in TRAIN_ON}
        for train_on, matrix in matrices.items():
            if matrix is None:
                continue
            interval = bootstrap_accuracy(matrix, n_boot)
            family_acc.append(
                dict(
                    task=task.name, method=name, layer=layer, train_on=train_on,
                    accuracy=interval.estimate, accuracy_low=interval.low,
                    accuracy_high=interval.high, n_seeds=matrix.shape[1],
                    setting=family.settings(layer, train_on),
                    collapsed=family.collapsed(layer, train_on)[0],
                )
            )  # fmt: skip
        if matrices["easy"] is None or matrices["hard"] is None:
            continue
        if matrices["easy"].shape != matrices["hard"].shape:
            continue  # a seed is still missing (interrupted run)
        cells = sgr_cells(unsup, matrices["easy"], matrices["hard"], n_boot)
        family_sgr.append(dict(task=task.name, method=name, layer=layer, **_sgr_columns(cells)))
    return family_acc, family_sgr


def draw_figures(rows: ReportRows, plots_dir: Path, model: str, n_train: int) -> None:
    """Per family accuracy and SGR per layer, and the SGR bars of the table."""
    for f in rows.figures:
        task = f.task
        stem = f"{task.slug}-{f.family}"
        title = f"{task.name}: {f.family} probe, hard test set ({model})"
        bands = bands_note(task.n_test, f.n_seeds, n_train)
        plot_layer_accuracy(
            f.accuracy, f.zero_shot, title, plots_dir / f"{stem}-accuracy.png", task.chance,
            f.layer, bands,
        )  # fmt: skip
        plot_layer_sgr(
            f.sgr, f"{task.name}: {f.family} probe, SGR ({model})", plots_dir / f"{stem}-sgr.png",
            f.layer, bands,
        )  # fmt: skip
    plot_sgr_bars(rows.table, plots_dir / "sgr-bars.png", f"SGR on the hard test sets ({model})")
    probes = [f for f in rows.figures if f.layer != -1]
    if len({f.family for f in probes}) > 1:
        plot_families(
            [r for f in probes for r in f.accuracy if r["layer"] == f.layer],
            {f.task.name: (f.zero_shot["accuracy"], f.task.chance) for f in probes},
            plots_dir / "families.png",
            f"Probe families at their chosen layers, hard test sets ({model}); bars: 95% CI",
        )
    calibrated = {r["method"] for r in rows.calibration if r["train_on"] != "none"}
    for family in [f for f in dict.fromkeys(r["method"] for r in rows.table) if f in calibrated]:
        plot_reliability(
            rows.calibration, family, plots_dir / f"reliability-{family}.png",
            f"{family}: reliability on the hard test sets ({model}), items and seeds pooled",
        )  # fmt: skip


def render_text(meta: dict, rows: ReportRows, run_dir: Path, plots_dir: Path) -> str:
    """The printed summary: the table, the chosen probe settings, model-based hardness
    correlations, collapse notes, method times and where the files are."""
    config, model, table = meta["config"], meta["model_fingerprint"], rows.table
    split, n_boot = config["split"], int(config["output"]["n_boot"])
    wide = max([18, *(len(r["task"]) for r in table)])  # a file path can be a long task name
    lines = [
        f"{meta['kind']} {meta['run_hash']}  model {model['name']} "
        f"({model['revision'][:24]}, {model['dtype']})",
        f"probes: n_train {split['n_train']}, seeds {split['seeds']}; bootstrap {n_boot} "
        "resamples of test items and seeds; probe layer chosen on easy validation items",
        "",
        f"{'task':<{wide}} {'method':<15} {'weights':<14} {'zero-shot':>9} {'(norm)':>7} "
        f"{'layer':>8} {'easy':>6} {'hard':>6} {'all':>6}  SGR [95% CI]",
    ]
    mixed = [r for r in table if r["weights"] != r["unsupervised_weights"]]
    for r in table:
        flag = ""
        if r["no_gap"]:
            flag = (
                f" (hard - zero-shot {r['denominator']:+.3f} [{r['denominator_low']:+.3f}, "
                f"{r['denominator_high']:+.3f}]; {r['zero_denominators']} of {r['n_boot']} "
                "resamples with a zero denominator)"
            )
        if r["sgr_vs_chance_text"]:
            flag += f"  (zero-shot below chance {r['chance']:.3f}; vs chance: "
            flag += f"{r['sgr_vs_chance_text']})"
        norm_text = (
            f"{r['zero_shot_norm']:>7.3f}" if np.isfinite(r["zero_shot_norm"]) else (f"{'-':>7}")
        )
        if r["collapsed"]:
            flag += f"  (collapsed: {r['collapsed']} of {r['parts']} parts near uniform)"
        weights = r["weights"].removeprefix(f"{model['name']} ") + ("*" if r in mixed else "")
        lines.append(
            f"{r['task']:<{wide}} {r['method']:<15} {weights:<14} {r['unsupervised']:>9.3f} "
            f"{norm_text} {layer_name(r['layer']):>8} {r['easy']:>6.3f} {r['hard']:>6.3f} "
            f"{r['all']:>6.3f}  {r['sgr_text']}{flag}"
        )
    if mixed:
        lines += ["", "* other weights than the zero-shot floor's (a flag asked for them), so"]
        lines += [
            f"  its SGR compares two models: {r['task']} {r['method']} on {r['weights']}, "
            f"zero-shot on {r['unsupervised_weights']}"
            for r in mixed
        ]
    calibrated = [r for r in table if np.isfinite(r["ece_easy"])]
    if calibrated:
        lines += ["", "ranking and calibration on the hard test set, per pool: AUROC of choice "
                  "probabilities; ECE [95% CI] (10 bins); mean confidence - accuracy (> 0: "
                  "over-confident)"]  # fmt: skip
        for r in calibrated:
            pools = [("zero-shot", "unsupervised"), *((on, on) for on in TRAIN_ON)]
            lines.append(f"  {r['task']} {r['label']}: " + "; ".join(
                f"{shown} {r[f'auroc_{on}']:.3f}, {r[f'ece_{on}']:.3f} [{r[f'ece_{on}_low']:.3f},"
                f" {r[f'ece_{on}_high']:.3f}], {r[f'overconfidence_{on}']:+.3f}"
                for shown, on in pools if np.isfinite(r[f"ece_{on}"])
            ))  # fmt: skip
    chosen_settings = [r for r in table if r["setting"] and r["setting"] != f"fixed x{r['parts']}"]
    if chosen_settings:
        lines += ["", "probe settings at the reported layer (chosen per part on easy validation):"]
        lines += [f"  {r['task']} {r['label']}: {r['setting']}" for r in chosen_settings]
    correlations = [
        row for task in collect_tasks(run_dir) for row in task.get("hardness_correlations", [])
    ]
    if correlations:
        lines += ["", "model-based hardness vs human measures (Spearman, records both rate):"]
        lines += [
            f"  {r['dataset']} {r['model_measure']} ~ {r['human_measure']}: {r['spearman']:+.3f} "
            f"(n = {r['n']})"
            for r in correlations
        ]
    if any(r["collapsed"] for r in table):
        lines += [
            "",
            "collapsed: mean (max choice probability - 1/choices) below "
            f"{COLLAPSED_MARGIN} on the items it scored; such a probe's argmax may still rank "
            "choices, but its probabilities carry nothing",
        ]
    lines += [
        "",
        "method time (s, summed over parts): " + "; ".join(rows.timing),
        f"tables: {run_dir}/table.csv, accuracy.csv, sgr.csv, calibration.csv; figures: "
        f"{plots_dir}/",
    ]
    return "\n".join(lines)


def write_report(run_dir: str | Path, plots_dir: str | Path | None = None) -> str:
    """Tables, figures and the summary of a run, from its stored parts alone: collect
    (`report_rows`), write the CSVs, draw (`draw_figures`), render (`render_text`). Returns
    the summary text (also saved as `summary.txt`).

    Raises:
        TruthprobeError: not a run directory, or no method with easy, hard and all results.
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    config = meta["config"]
    plots_dir = Path(plots_dir or config["output"]["plots_dir"]) / run_dir.name
    n_train = int(config["split"]["n_train"])
    rows = report_rows(run_dir, int(config["output"]["n_boot"]), n_train)
    if not rows.table:
        raise TruthprobeError(
            f"{run_dir}: no complete method results to tabulate (every method needs easy, hard "
            "and all parts for every seed; run the same command again to finish it)"
        )
    _write_csv(run_dir / "table.csv", rows.table)
    _write_csv(run_dir / "accuracy.csv", rows.accuracy)
    _write_csv(run_dir / "sgr.csv", rows.sgr)
    _write_csv(run_dir / "calibration.csv", rows.calibration)
    draw_figures(rows, plots_dir, meta["model_fingerprint"]["name"], n_train)
    summary = render_text(meta, rows, run_dir, plots_dir)
    (run_dir / "summary.txt").write_text(summary + "\n")
    return summary
