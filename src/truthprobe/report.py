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
import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from truthprobe.choice_probs import COLLAPSED_MARGIN
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import TRAIN_ON, bootstrap_accuracy, bootstrap_sgr, sgr_text
from truthprobe.methods.base import layer_name
from truthprobe.plots import bands_note, plot_layer_accuracy, plot_layer_sgr, plot_sgr_bars
from truthprobe.runstore import RunStore

#: Unsupervised floors, in order of preference (free-form tasks have only the CoT one).
UNSUPERVISED = ("zero_shot", "zero_shot+cot")
NORMALISED = "zero_shot_norm"
#: What the table takes from the chosen layer's SGR row (`SGRResult.to_dict`).
CHOSEN_SGR = (
    "sgr", "sgr_low", "sgr_high", "n_test", "n_seeds", "denominator", "denominator_low",
    "denominator_high", "no_gap", "zero_denominators", "n_boot",
)  # fmt: skip


@dataclass
class FamilyResults:
    """Per-item test correctness of one method family of a task, keyed (layer, train_on)."""

    correct: dict[tuple[int, str], dict[int, np.ndarray]] = field(default_factory=dict)
    validation: dict[tuple[int, str], dict[int, float]] = field(default_factory=dict)
    info: dict[tuple[int, str], dict[int, dict]] = field(default_factory=dict)
    """Each part's `info` (probes: chosen setting, weight norm, collapse)."""
    seconds: float = 0.0

    def settings(self, layer: int, train_on: str | None = None) -> str:
        """The settings chosen at `layer` (all train_on unless given), with counts."""
        counts: dict[str, int] = defaultdict(int)
        for (at, on), by_seed in self.info.items():
            if at == layer and train_on in (None, on):
                for info in by_seed.values():
                    if "setting" in info:
                        counts[info["setting"]] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return "; ".join(f"{name} x{n}" for name, n in ranked)

    def collapsed(self, layer: int, train_on: str | None = None) -> tuple[int, int]:
        """(collapsed parts, parts) at `layer` (all train_on unless given)."""
        flags = [
            bool(info.get("collapsed", False))
            for (at, on), by_seed in self.info.items()
            if at == layer and train_on in (None, on)
            for info in by_seed.values()
        ]
        return sum(flags), len(flags)

    def matrix(self, layer: int, train_on: str) -> np.ndarray | None:
        """(test items, seeds) correctness, seeds in order; None if any draw is missing."""
        by_seed = self.correct.get((layer, train_on))
        if not by_seed:
            return None
        return np.stack([by_seed[s] for s in sorted(by_seed)], 1)

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.correct})


@dataclass
class TaskResults:
    name: str
    slug: str
    """Safe file-name stem of the task (never a path)."""
    families: dict[str, FamilyResults]
    n_test: int
    chance: float = float("nan")
    """Expected accuracy of uniform guessing on the test items (mean of 1 / choices)."""
    chance_items: np.ndarray | None = None
    """Per test item 1 / choices: the floor of SGR against chance, resampled like the rest."""


def collect(run_dir: str | Path) -> list[TaskResults]:
    """Every stored part of a run, as test-set correctness per task and method family."""
    store = RunStore(run_dir)
    results = []
    for slug in store.task_slugs():
        task = store.task(slug)
        roles = np.array(task["items"]["role"])
        test_rows = np.flatnonzero(roles == "test")
        position = {int(r): i for i, r in enumerate(test_rows)}
        families: dict[str, FamilyResults] = defaultdict(FamilyResults)
        for key in store.keys(slug):
            part = store.read(key)
            meta, items = part.meta, part.arrays["item"]
            correct = part.arrays["correct"].astype(np.float64)
            on_test = np.isin(items, test_rows)
            hits = np.full(len(test_rows), np.nan)
            hits[[position[int(r)] for r in items[on_test]]] = correct[on_test]
            if np.isnan(hits).any():
                raise TruthprobeError(
                    f"{store.path(key)}: scores {int(on_test.sum())} of the task's "
                    f"{len(test_rows)} test items; the run directory is inconsistent"
                )
            family = families[meta["family"]]
            slot = (int(meta["layer"]), key.train_on)
            family.correct.setdefault(slot, {})[key.seed] = hits
            family.info.setdefault(slot, {})[key.seed] = meta.get("info") or {}
            validation = roles[items] == "validation"
            if validation.any():
                family.validation.setdefault(slot, {})[key.seed] = float(correct[validation].mean())
            family.seconds += float(meta["seconds"])
        choices = np.asarray(task["items"]["n_choices"], dtype=float)[test_rows]
        free_form = not len(test_rows) or (choices == 0).any()  # GSM8k: no choices, no chance
        chance = float("nan") if free_form else float((1.0 / choices).mean())
        chance_items = None if free_form else 1.0 / choices
        results.append(
            TaskResults(task["task"], slug, dict(families), len(test_rows), chance, chance_items)
        )
    return results


def collect_tasks(run_dir: str | Path) -> list[dict]:
    """Every stored task description of a run (`task.json`)."""
    store = RunStore(run_dir)
    return [store.task(slug) for slug in store.task_slugs()]


def best_layer(family: FamilyResults) -> int:
    """The layer whose easy-trained probes do best on easy validation items (ties: lowest)."""
    scores = {
        layer: np.mean(list(family.validation[(layer, "easy")].values()))
        for layer in family.layers
        if (layer, "easy") in family.validation
    }
    if not scores:
        return family.layers[0]
    return max(scores, key=lambda layer: (scores[layer], -layer))


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


def _sgr(unsup: np.ndarray, easy: np.ndarray, hard: np.ndarray, n_boot: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bootstrap_sgr(unsup, easy, hard, n_boot)


def write_report(run_dir: str | Path, plots_dir: str | Path | None = None) -> str:
    """Compute tables and figures for a run; returns the summary text (also saved).

    Raises:
        TruthprobeError: not a run directory, or no method with easy, hard and all results.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise TruthprobeError(f"{run_dir}: not a run directory (no config.json)")
    meta = json.loads(config_path.read_text())
    config = meta["config"]
    n_boot = int(config["output"]["n_boot"])
    plots_dir = Path(plots_dir or config["output"]["plots_dir"]) / run_dir.name
    model = meta["model_fingerprint"]

    accuracy_rows: list[dict] = []
    sgr_rows: list[dict] = []
    table: list[dict] = []
    timing: list[str] = []
    for task in collect(run_dir):
        floor = next((f for f in UNSUPERVISED if f in task.families), None)
        if floor is None:
            continue
        unsup = task.families[floor].matrix(-1, "none")
        floor_acc = bootstrap_accuracy(unsup, n_boot)
        norm = task.families.get(NORMALISED)
        norm_acc = float(norm.matrix(-1, "none").mean()) if norm else float("nan")
        zero_row = dict(
            accuracy=floor_acc.estimate, accuracy_low=floor_acc.low, accuracy_high=floor_acc.high
        )
        timing.append(
            f"{task.name}: "
            + ", ".join(f"{n} {f.seconds:.0f} s" for n, f in sorted(task.families.items()))
        )
        for name in sorted(task.families, key=_family_order):
            family = task.families[name]
            if name in UNSUPERVISED or name == NORMALISED:
                continue
            layers = family.layers
            family_acc, family_sgr = [], []
            for layer in layers:
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
                sgr = _sgr(unsup, matrices["easy"], matrices["hard"], n_boot)
                family_sgr.append(dict(task=task.name, method=name, layer=layer, **sgr.to_dict()))
            best = best_layer(family)
            for row in family_sgr:
                row["best_layer"] = row["layer"] == best
            accuracy_rows += family_acc
            sgr_rows += family_sgr
            chosen = next((r for r in family_sgr if r["layer"] == best), None)
            acc = {r["train_on"]: r["accuracy"] for r in family_acc if r["layer"] == best}
            if chosen is None or "all" not in acc:
                continue  # a part is missing (interrupted run): no row rather than a wrong one
            versus_chance: dict = dict(
                sgr_vs_chance=float("nan"), sgr_vs_chance_low=float("nan"),
                sgr_vs_chance_high=float("nan"), no_gap_vs_chance="", sgr_vs_chance_text="",
            )  # fmt: skip
            if floor_acc.estimate < task.chance and task.chance_items is not None:
                # zero-shot below guessing: SGR against chance as well (the floor a probe
                # must beat to have learned anything)
                easy, hard = family.matrix(best, "easy"), family.matrix(best, "hard")
                versus = _sgr(task.chance_items, easy, hard, n_boot)
                versus_chance = dict(
                    sgr_vs_chance=versus.sgr.estimate,
                    sgr_vs_chance_low=versus.sgr.low,
                    sgr_vs_chance_high=versus.sgr.high,
                    no_gap_vs_chance=versus.no_gap,
                    sgr_vs_chance_text=versus.text(),
                )
            table.append(
                dict(
                    task=task.name,
                    method=name,
                    label=f"{name}@{layer_name(best)}" if best != -1 else name,
                    layer=best,
                    unsupervised_method=floor,
                    unsupervised=floor_acc.estimate,
                    zero_shot_norm=norm_acc,
                    easy=acc["easy"],
                    hard=acc["hard"],
                    all=acc["all"],
                    **{k: chosen[k] for k in CHOSEN_SGR},
                    n_train=int(config["split"]["n_train"]),
                    chance=task.chance,
                    sgr_text=sgr_text(chosen),
                    **versus_chance,
                    setting=family.settings(best),
                    collapsed=family.collapsed(best)[0],
                    parts=family.collapsed(best)[1],
                )
            )
            if len(layers) > 1:
                stem = f"{task.slug}-{name}"
                title = f"{task.name}: {name} probe, hard test set ({model['name']})"
                bands = bands_note(task.n_test, chosen["n_seeds"], config["split"]["n_train"])
                plot_layer_accuracy(
                    family_acc, zero_row, title, plots_dir / f"{stem}-accuracy.png",
                    task.chance, best, bands,
                )  # fmt: skip
                plot_layer_sgr(
                    family_sgr, f"{task.name}: {name} probe, SGR ({model['name']})",
                    plots_dir / f"{stem}-sgr.png", best, bands,
                )  # fmt: skip
    if not table:
        raise TruthprobeError(
            f"{run_dir}: no complete method results to tabulate (every method needs easy, hard "
            "and all parts for every seed; run the same command again to finish it)"
        )
    _write_csv(run_dir / "table.csv", table)
    _write_csv(run_dir / "accuracy.csv", accuracy_rows)
    _write_csv(run_dir / "sgr.csv", sgr_rows)
    plot_sgr_bars(table, plots_dir / "sgr-bars.png", f"SGR on the hard test sets ({model['name']})")
    split = config["split"]
    wide = max([18, *(len(r["task"]) for r in table)])  # a file path can be a long task name
    lines = [
        f"{meta['kind']} {meta['run_hash']}  model {model['name']} "
        f"({model['revision'][:24]}, {model['dtype']})",
        f"probes: n_train {split['n_train']}, seeds {split['seeds']}; bootstrap {n_boot} "
        "resamples of test items and seeds; probe layer chosen on easy validation items",
        "",
        f"{'task':<{wide}} {'method':<15} {'zero-shot':>9} {'(norm)':>7} {'layer':>8} "
        f"{'easy':>6} {'hard':>6} {'all':>6}  SGR [95% CI]",
    ]
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
        lines.append(
            f"{r['task']:<{wide}} {r['method']:<15} {r['unsupervised']:>9.3f} {norm_text} "
            f"{layer_name(r['layer']):>8} {r['easy']:>6.3f} {r['hard']:>6.3f} {r['all']:>6.3f}  "
            f"{r['sgr_text']}{flag}"
        )
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
        "method time (s, summed over parts): " + "; ".join(timing),
        f"tables: {run_dir}/table.csv, accuracy.csv, sgr.csv; figures: {plots_dir}/",
    ]
    summary = "\n".join(lines)
    (run_dir / "summary.txt").write_text(summary + "\n")
    return summary
