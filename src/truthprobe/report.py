"""Tables, plots and the printed summary of a sweep, from its saved results only.

`write_report(run_dir)` reads `results.csv`, `correct.npz` and `config.json`, computes
accuracies and SGR with bootstrap intervals, and writes `accuracy.csv`, `sgr.csv`,
`summary.txt` and the figures. Nothing here loads a model or a cache, so `truthprobe report`
redraws everything in seconds.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from truthprobe.evaluate import TRAIN_ON, bootstrap_accuracy, bootstrap_sgr
from truthprobe.plots import plot_layer_accuracy, plot_layer_sgr


def best_layers(results: list[dict]) -> dict[tuple[str, str], int]:
    """Per (task, method): the layer whose easy-trained probes do best on the easy validation set.

    The hard test set never enters this choice.
    """
    scores: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for row in results:
        if row["train_on"] == "easy" and int(row["layer"]) >= 0:
            task = f"{row['dataset']}:{row['measure']}"
            scores[(task, row["method"], int(row["layer"]))].append(
                float(row["validation_accuracy"])
            )
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for (task, method, layer), values in scores.items():
        mean = float(np.mean(values))
        if (task, method) not in best or mean > best[(task, method)][0]:
            best[(task, method)] = (mean, layer)
    return {k: v[1] for k, v in best.items()}


def _read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_report(run_dir: str | Path, plots_dir: str | Path | None = None) -> str:
    """Compute tables and figures for a sweep run; returns the summary text (also saved)."""
    run_dir = Path(run_dir)
    for name in ("results.csv", "correct.npz", "config.json"):
        if not (run_dir / name).is_file():
            from truthprobe.errors import TruthprobeError

            raise TruthprobeError(f"{run_dir}: missing {name}; is this a sweep run directory?")
    meta = json.loads((run_dir / "config.json").read_text())
    n_boot = int(meta["config"]["n_boot"])
    plots_dir = Path(plots_dir or meta["config"]["plots_dir"]) / run_dir.name
    results = _read_csv(run_dir / "results.csv")
    correct = dict(np.load(run_dir / "correct.npz"))
    chosen = best_layers(results)

    by_task: dict[str, dict[tuple[str, int, str], np.ndarray]] = defaultdict(dict)
    for key, matrix in correct.items():
        task, method, layer, train_on = key.split("|")
        by_task[task][(method, int(layer), train_on)] = matrix

    accuracy_rows: list[dict] = []
    sgr_rows: list[dict] = []
    lines = [
        f"layer sweep {meta['run_hash']}  model {meta['model_fingerprint']['name']} "
        f"({meta['model_fingerprint']['revision'][:24]}, {meta['model_fingerprint']['dtype']})",
        f"n_train {meta['config']['n_train']}, seeds {meta['config']['seeds']}, bootstrap "
        f"{n_boot} resamples of test items and seeds; best layer chosen on easy validation items",
        "",
        f"{'task':<16} {'method':<10} {'zero-shot':>9} {'(norm)':>7} {'layer':>5} "
        f"{'easy':>6} {'hard':>6} {'all':>6}  SGR [95% CI]",
    ]
    for task, arrays in by_task.items():
        unsup = arrays[("zero_shot_raw", -1, "none")]
        zero = {
            norm: bootstrap_accuracy(arrays[(f"zero_shot_{norm}", -1, "none")], n_boot)
            for norm in ("raw", "chars")
        }
        for norm, interval in zero.items():
            accuracy_rows.append(
                dict(
                    task=task,
                    method=f"zero_shot_{norm}",
                    layer=-1,
                    train_on="none",
                    accuracy=interval.estimate,
                    accuracy_low=interval.low,
                    accuracy_high=interval.high,
                )
            )
        methods = sorted({m for (m, layer, _) in arrays if layer >= 0})
        for method in methods:
            layers = sorted({layer for (m, layer, _) in arrays if m == method})
            task_acc, task_sgr = [], []
            for layer in layers:
                for train_on in TRAIN_ON:
                    interval = bootstrap_accuracy(arrays[(method, layer, train_on)], n_boot)
                    task_acc.append(
                        dict(
                            task=task,
                            method=method,
                            layer=layer,
                            train_on=train_on,
                            accuracy=interval.estimate,
                            accuracy_low=interval.low,
                            accuracy_high=interval.high,
                        )
                    )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sgr = bootstrap_sgr(
                        unsup,
                        arrays[(method, layer, "easy")],
                        arrays[(method, layer, "hard")],
                        n_boot,
                    )
                task_sgr.append(
                    dict(
                        task=task,
                        method=method,
                        layer=layer,
                        best_layer=layer == chosen.get((task, method)),
                        **sgr.to_dict(),
                    )
                )
            accuracy_rows.extend(task_acc)
            sgr_rows.extend(task_sgr)
            zero_row = next(
                r for r in accuracy_rows if r["task"] == task and r["method"] == "zero_shot_raw"
            )
            name = f"{task.replace(':', '-')}-{method}"
            plot_layer_accuracy(
                task_acc,
                zero_row,
                f"{task}: {method} probe, hard test set",
                plots_dir / f"{name}-accuracy.png",
            )
            plot_layer_sgr(task_sgr, f"{task}: {method} probe, SGR", plots_dir / f"{name}-sgr.png")
            best = chosen[(task, method)]
            row = next(r for r in task_sgr if r["layer"] == best)
            acc = {r["train_on"]: r["accuracy"] for r in task_acc if r["layer"] == best}
            flag = "  (denominator CI includes 0)" if row["warning"] else ""
            lines.append(
                f"{task:<16} {method:<10} {zero['raw'].estimate:>9.3f} "
                f"{zero['chars'].estimate:>7.3f} {best:>5} {acc['easy']:>6.3f} "
                f"{acc['hard']:>6.3f} {acc['all']:>6.3f}  {row['sgr']:.2f} "
                f"[{row['sgr_low']:.2f}, {row['sgr_high']:.2f}]{flag}"
            )
    _write_csv(run_dir / "accuracy.csv", accuracy_rows)
    _write_csv(run_dir / "sgr.csv", sgr_rows)
    lines += ["", f"tables: {run_dir}/accuracy.csv, {run_dir}/sgr.csv; figures: {plots_dir}/"]
    summary = "\n".join(lines)
    (run_dir / "summary.txt").write_text(summary + "\n")
    return summary
