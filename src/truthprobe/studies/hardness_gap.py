"""Hardness gaps: train on one level of an ordinal measure, test on another; and the moving
window (train on every level up to k, test on the top level).

For each `dataset:measure` (ARC grade 3-8, Bloom 1-5, difficulty 1-3, depth of knowledge 1-3,
StrategyQA steps, MMLU level), each level's rated records (outside the task's easy validation
items, which choose the probe's settings) are split once into a test half (at most
`max_test_per_level`) and a training pool. A level whose pool is smaller than `n_train`, or
whose test set is smaller than `min_test_per_level`, is left out and named. For every pair of
levels (i, j) the probe trained on level i is scored on level j's test set, with SGR against
level j's zero-shot and level j's own probe as ceiling; gap = rank(j) - rank(i) (positive:
trained on easier items than tested on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from truthprobe.configs import require
from truthprobe.evaluate import SplitConfig
from truthprobe.plots import plot_hardness_gap
from truthprobe.studies.base import Study, TasksStudyConfig, run_with, scored
from truthprobe.studies.fits import hits
from truthprobe.studies.sources import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardnessGapConfig(TasksStudyConfig):
    """Train on level i, test on level j of each ordinal measure; and the moving window."""

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
    max_test_per_level: int = 250
    """Test items per level at most (half the level otherwise)."""
    min_test_per_level: int = 40
    """Levels with fewer test items are left out (their accuracy would be noise)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = self.min_test_per_level, self.max_test_per_level
        require(low >= 1, "min_test_per_level", f"must be at least 1, got {low}")
        require(high >= low, "max_test_per_level", "must be at least --min-test-per-level")


@dataclass
class Level:
    value: float
    rank: int
    test: np.ndarray
    pool: np.ndarray


def levels(source: Source, measure: str, config: HardnessGapConfig) -> tuple[list[Level], str]:
    """Each usable level's test set and pool; and a note naming the levels left out."""
    values = source.values(measure)
    held = np.zeros(len(values), bool)
    held[source.validation] = True
    usable, skipped = [], []
    for rank, value in enumerate(sorted(set(values[np.isfinite(values)].tolist()))):
        rows = np.flatnonzero((values == value) & ~held)
        rng = np.random.default_rng([config.split.split_seed, rank, 7])
        rows = rng.permutation(rows)
        n_test = min(len(rows) // 2, config.max_test_per_level)
        test, pool = np.sort(rows[:n_test]), np.sort(rows[n_test:])
        if n_test < config.min_test_per_level or len(pool) < config.split.n_train:
            skipped.append(f"{value:g} ({len(rows)} items)")
            continue
        usable.append(Level(value, rank, test, pool))
    note = f"left out (too few items): {', '.join(skipped)}" if skipped else ""
    return usable, note


def gap_rows(study: Study) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every (task, level i, level j) cell, and every task's moving window."""
    config: HardnessGapConfig = study.config  # type: ignore[assignment]
    rows: list[dict] = []
    items: dict[str, np.ndarray] = {}
    for task, source in study.sources.items():
        measure = task.split(":", 1)[1]
        found, note = levels(source, measure, config)
        if note:
            log.info("%s: %s", task, note)
        if len(found) < 2:
            log.warning("%s: fewer than two levels with enough items; skipped", task)
            continue
        layer = study.layer(task)
        data = source.at(layer)
        fitted = {lv.value: study.fit(task, lv.pool, f"level {lv.value:g}") for lv in found}
        own = {lv.value: hits(fitted[lv.value], data.take(lv.test)) for lv in found}
        for train in found:
            for test in found:
                correct = hits(fitted[train.value], data.take(test.test))
                items[f"{task}|{train.value:g}|{test.value:g}"] = correct.astype(np.uint8)
                rows.append(
                    dict(
                        task=task, kind="pair", layer=layer, train_level=train.value,
                        test_level=test.value, gap=test.rank - train.rank, note=note,
                        **scored(study, source, test.test, correct, own[test.value]),
                    )
                )  # fmt: skip
        top = found[-1]
        for k, upto in enumerate(found):
            pool = np.sort(np.concatenate([lv.pool for lv in found[: k + 1]]))
            fitted_k = study.fit(task, pool, f"levels <= {upto.value:g}")
            correct = hits(fitted_k, data.take(top.test))
            items[f"{task}|<={upto.value:g}|{top.value:g}"] = correct.astype(np.uint8)
            rows.append(
                dict(
                    task=task, kind="window", layer=layer, train_level=upto.value,
                    test_level=top.value, gap=top.rank - upto.rank, note=note,
                    **scored(study, source, top.test, correct, own[top.value]),
                )
            )  # fmt: skip
    return rows, items


def summary(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        pairs = [r for r in mine if r["kind"] == "pair"]
        levels_ = sorted({r["test_level"] for r in pairs})
        lines.append(
            f"{task} (layer {mine[0]['layer']}): hard-test accuracy, rows trained on level, "
            "columns tested on level" + (f"; {mine[0]['note']}" if mine[0]["note"] else "")
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


def run_study(config: HardnessGapConfig) -> str:
    """Run the study, store it; returns what the command prints."""
    return run_with("hardness_gap", config, gap_rows, summary, plot_hardness_gap)
