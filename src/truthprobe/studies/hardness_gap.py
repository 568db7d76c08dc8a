"""Hardness gaps: train on one level of an ordinal measure, test on another; and the moving
window (train on every level up to k, test on the top level).

For each `dataset:measure` (ARC grade 3-8, Bloom 1-5, difficulty 1-3, depth of knowledge 1-3,
StrategyQA steps, MMLU level), each level's rated items (outside the task's easy validation
items, which choose the probe's settings) are split once into a test half (at most
`max_test_per_level`) and a training pool. A level whose pool is smaller than `n_train`, or
whose test set is smaller than `min_test_per_level`, is left out and named. For every pair of
levels (i, j) the probe trained on level i is scored on level j's test set, with SGR against
level j's zero-shot and level j's own probe as ceiling; gap = rank(j) - rank(i) (positive:
trained on easier items than tested on).

A plan over the harness: each level's pool (`level=3`) and each window (`levels-upto-5`) is a
training pool of the task (the one draw rule), each level's test half a named scoring set
(`level=5-test`); the divisions are stored in the study's `plan.json`, so the table is drawn
from the store alone. A level whose items are exactly the task's hard stratum (ARC grade 8,
MMLU college) is not split again: its test set is the sweep's hard test set and its pool the
sweep's hard pool, so its probes are the sweep's `hard` parts, and its level-to-same-level cell
is read from those very files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from truthprobe.configs import CacheConfig, DataConfig, require
from truthprobe.evaluate import SplitConfig
from truthprobe.hardness import hardness_values
from truthprobe.harness import Harness
from truthprobe.methods.base import layer_name
from truthprobe.plots import plot_hardness_gap
from truthprobe.studies.planned import (
    PlannedStudy,
    PlannedStudyConfig,
    View,
    register,
)
from truthprobe.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardnessGapConfig(PlannedStudyConfig):
    """Probes trained on one level of a hardness measure, tested on every level; and the
    moving window."""

    kind: ClassVar[str] = "hardness_gap"
    tasks: tuple[str, ...] = (
        "arc:grade",
        "arc:bloom",
        "arc:difficulty",
        "arc:depth_of_knowledge",
        "mmlu:level",
        "strategyqa:steps",
    )
    """dataset:measure pairs with ordinal levels."""
    split: SplitConfig = SplitConfig(n_train=80)
    """80 training items per level by default, so that ARC's grade 3 (178 items outside the
    validation set) keeps a test half and a pool."""
    data: DataConfig = DataConfig(max_per_stratum=0)
    """Every rated item: a level needs a test half and a pool."""
    cache: CacheConfig = CacheConfig()
    max_test_per_level: int = 250
    """Test items per level at most (half the level otherwise)."""
    min_test_per_level: int = 40
    """Levels with fewer test items are left out (their accuracy would be noise)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = self.min_test_per_level, self.max_test_per_level
        require(low >= 1, "min_test_per_level", f"must be at least 1, got {low}")
        require(high >= low, "max_test_per_level", "must be at least --min-test-per-level")


def levels(task: Task, config: HardnessGapConfig) -> dict:
    """Each usable level's value, rank, test set and pool (rows of the task's items), and a
    note naming the levels left out."""
    values = np.array(
        [
            np.nan if v is None else v
            for v in hardness_values(task.records, config.data.measure(task.spec.measure))
        ],
        dtype=float,
    )
    split = task.split
    held = np.zeros(len(values), bool)
    held[split.validation] = True
    hard = np.sort(np.concatenate([split.test, split.pools["hard"]]))
    usable, skipped = [], []
    for rank, value in enumerate(sorted(set(values[np.isfinite(values)].tolist()))):
        rows = np.flatnonzero((values == value) & ~held)
        if np.array_equal(rows, hard):  # the hard stratum: split as the sweep splits it
            test, pool, train_on, scored = split.test, split.pools["hard"], "hard", ""
        else:
            rng = np.random.default_rng([config.split.split_seed, rank, 7])
            rows = rng.permutation(rows)
            n_test = min(len(rows) // 2, config.max_test_per_level)
            test, pool = np.sort(rows[:n_test]), np.sort(rows[n_test:])
            train_on, scored = f"level={value:g}", _test(value)
        if len(test) < config.min_test_per_level or len(pool) < config.split.n_train:
            skipped.append(f"{value:g} ({len(rows)} items)")
            continue
        usable.append(
            {"value": value, "rank": rank, "test": test, "pool": pool, "train_on": train_on,
             "scored_set": scored}
        )  # fmt: skip
    note = f"left out (too few items): {', '.join(skipped)}" if skipped else ""
    return {"levels": usable, "note": note}


def _test(value: float) -> str:
    return f"level={value:g}-test"


def _window(value: float) -> str:
    return f"levels-upto-{value:g}"


def plan(harness: Harness, view: View) -> None:
    """Per task: each level's pool and window as training pools, each level's test half as a
    scoring set; every level's probe scored on every level's test set."""
    config: HardnessGapConfig = view.config  # type: ignore[assignment]
    view.plan.update(sets={}, levels={})
    for task in config.tasks:
        found = levels(harness.tasks[task], config)
        if found["note"]:
            log.info("%s: %s", task, found["note"])
        described = ("value", "rank", "train_on", "scored_set")
        view.plan["levels"][task] = {
            "note": found["note"],
            "levels": [{k: lv[k] for k in described} for lv in found["levels"]],
        }
        view.plan["sets"][task] = {
            lv["scored_set"]: lv["test"] for lv in found["levels"] if lv["scored_set"]
        }
        if len(found["levels"]) < 2:
            log.warning("%s: fewer than two levels with enough items; skipped", task)
            continue
        label = view.label(task)
        for lv in found["levels"]:
            if lv["train_on"] != "hard":  # the hard pool is the sweep's
                harness.add_pool(task, lv["train_on"], lv["pool"])
        for k, upto in enumerate(found["levels"]):
            pool = np.concatenate([lv["pool"] for lv in found["levels"][: k + 1]])
            harness.add_pool(task, _window(upto["value"]), pool)
        top = found["levels"][-1]

        def score(draws: list, test: dict, task: str = task, label: str = label) -> None:
            if test["scored_set"]:
                harness.run_transfers(task, label, draws, task, test["scored_set"], test["test"])
            else:  # the hard test set: every part of the task scores it already
                harness.run_parts(task, label, draws)

        for train in found["levels"]:
            for test in found["levels"]:
                score(view.seeds_of(train["train_on"]), test)
            score(view.seeds_of(_window(train["value"])), top)


def gap_rows(view: View) -> list[dict]:
    """Every (task, level i, level j) cell, and every task's moving window."""
    rows: list[dict] = []
    for task, described in view.plan["levels"].items():
        found, note = described["levels"], described["note"]
        if len(found) < 2:
            continue
        layer = view.layer(task)

        for lv in found:  # plans stored before a level could be the hard stratum
            lv.setdefault("train_on", f"level={lv['value']:g}")
            lv.setdefault("scored_set", _test(lv["value"]))

        def scored(pool: str, test: dict, task: str = task, layer: int = layer) -> np.ndarray:
            """Correctness on `test`'s set: its named set, or the task's own hard test set
            (then the parts' own test rows: a `hard` probe's cell is the sweep's part)."""
            on = task if test["scored_set"] else ""
            return view.correct(task, layer, view.seeds_of(pool), on, test["scored_set"])

        own = {lv["value"]: scored(lv["train_on"], lv) for lv in found}
        for train in found:
            for test in found:
                correct = scored(train["train_on"], test)
                rows.append(
                    dict(
                        task=task, kind="pair", layer=layer, train_level=train["value"],
                        test_level=test["value"], gap=test["rank"] - train["rank"], note=note,
                        **view.cell(task, correct, own[test["value"]], test["scored_set"]),
                    )
                )  # fmt: skip
        top = found[-1]
        for upto in found:
            correct = scored(_window(upto["value"]), top)
            rows.append(
                dict(
                    task=task, kind="window", layer=layer, train_level=upto["value"],
                    test_level=top["value"], gap=top["rank"] - upto["rank"], note=note,
                    **view.cell(task, correct, own[top["value"]], top["scored_set"]),
                )
            )  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        pairs = [r for r in mine if r["kind"] == "pair"]
        levels_ = sorted({r["test_level"] for r in pairs})
        lines.append(
            f"{task} (layer {layer_name(mine[0]['layer'])}): hard-test accuracy, rows trained "
            "on level, columns tested on level"
            + (f"; {mine[0]['note']}" if mine[0]["note"] else "")
        )
        lines.append(f"  {'train':>7} " + " ".join(f"{v:>7g}" for v in levels_))
        for train in levels_:
            cells = {r["test_level"]: r for r in pairs if r["train_level"] == train}
            lines.append(
                f"  {train:>7g} " + " ".join(f"{cells[v]['accuracy']:>7.3f}" for v in levels_)
            )
        lines.append(
            f"  {'0-shot':>7} " + " ".join(
                f"{next(r['zero_shot'] for r in pairs if r['test_level'] == v):>7.3f}"
                for v in levels_
            )
        )  # fmt: skip
        by_gap: dict[int, list[float]] = {}
        for r in pairs:
            by_gap.setdefault(int(r["gap"]), []).append(r["accuracy"] - r["own"])
        lines.append(
            "  accuracy minus the test level's own probe, mean by gap j - i: "
            + ", ".join(f"{g:+d}: {np.mean(v):+.3f}" for g, v in sorted(by_gap.items()))
        )
        window = [r for r in mine if r["kind"] == "window"]
        lines.append(
            f"  moving window (train on levels <= k, test on {window[0]['test_level']:g}): "
            + ", ".join(
                f"<= {r['train_level']:g} {r['accuracy']:.3f} [{r['accuracy_low']:.3f}, "
                f"{r['accuracy_high']:.3f}]"
                for r in window
            )
            + f"; zero-shot {window[0]['zero_shot']:.3f}, chance {window[0]['chance']:.3f}"
        )
    return "\n".join(lines)


STUDY = register(
    PlannedStudy("hardness_gap", HardnessGapConfig, plan, gap_rows, summary, plot_hardness_gap)
)
