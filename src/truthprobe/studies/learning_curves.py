"""Learning curves (the paper's RQ4): accuracy on the hard test set as the training set grows,
for easy, hard and all training items, and the cost-adjusted view.

Every size is a draw by the one draw rule (`EvalSplit.train_rows`): the first n of one seeded
shuffle of the pool, so the n = 10 draw is inside the n = 20 draw (a curve adds items rather
than swapping them), and the point at the sweep's `--n-train` is the sweep's own part. Sizes
larger than a pool are left out. With hard items costing `hard_cost` times an easy one
(labelling college questions takes experts), the second view plots accuracy against the
labelling cost of each draw: easy data can win per unit of cost while losing per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from truthprobe.configs import require
from truthprobe.evaluate import TRAIN_ON
from truthprobe.harness import Harness
from truthprobe.methods.base import layer_name
from truthprobe.plots import plot_learning_curves
from truthprobe.results import sgr_shown
from truthprobe.studies.planned import (
    PlannedStudy,
    PlannedStudyConfig,
    View,
    register,
)


@dataclass(frozen=True)
class LearningCurvesConfig(PlannedStudyConfig):
    """Hard-test accuracy against the number (and cost) of easy / hard / all training items
    (nested draws)."""

    kind: ClassVar[str] = "learning_curves"
    sizes: tuple[int, ...] = (10, 20, 40, 80, 160, 320)
    """Training-set sizes; each seed's draws are nested."""
    hard_cost: float = 2.0
    """Cost of labelling a hard item, in easy items (the cost-adjusted view)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.sizes) and min(self.sizes) >= 1, "sizes", "must be positive")
        require(self.hard_cost > 0, "hard_cost", f"must be positive, got {self.hard_cost}")


def _cells(view: View, task: str) -> list[tuple[str, int]]:
    """(train_on, n) of every point: sizes that fit the pool."""
    config: LearningCurvesConfig = view.config  # type: ignore[assignment]
    pools = view.tables[task]["pools"]
    return [(t, n) for t in TRAIN_ON for n in sorted(set(config.sizes)) if n <= pools[t]]


def plan(harness: Harness, view: View) -> None:
    for task in view.config.tasks:
        label = view.label(task)
        draws = [d for t, n in _cells(view, task) for d in view.seeds_of(t, n)]
        harness.run_parts(task, label, draws)


def curve_rows(view: View) -> list[dict]:
    config: LearningCurvesConfig = view.config  # type: ignore[assignment]
    rows: list[dict] = []
    for task in config.tasks:
        layer = view.layer(task)
        hard = np.array(view.tables[task]["items"]["stratum"]) == "hard"
        correct, costs = {}, {}
        for train_on, n in _cells(view, task):
            draws = view.seeds_of(train_on, n)
            correct[(train_on, n)] = view.correct(task, layer, draws)
            trains = [view.store.read(k).arrays["train"] for k in view.keys(task, layer, draws)]
            costs[(train_on, n)] = float(
                np.mean([np.where(hard[t], config.hard_cost, 1.0).sum() for t in trains])
            )
        for (train_on, n), matrix in correct.items():
            ceiling = correct.get(("hard", n)) if train_on == "easy" else None
            cell = view.cell(task, matrix, ceiling)
            rows.append(
                dict(
                    cell, task=task, train_on=train_on, n_train=n, cost=costs[(train_on, n)],
                    hard_cost=config.hard_cost, layer=layer,
                )
            )  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        sizes = sorted({r["n_train"] for r in mine})
        first = mine[0]
        lines.append(
            f"{task} (layer {layer_name(first['layer'])}, {first['n_test']} hard test items; "
            f"zero-shot {first['zero_shot']:.3f}, chance {first['chance']:.3f}): accuracy by "
            "n_train"
        )
        lines.append(f"  {'train_on':<8} " + " ".join(f"{n:>6}" for n in sizes))
        for train_on in TRAIN_ON:
            cells = {r["n_train"]: r for r in mine if r["train_on"] == train_on}
            lines.append(
                f"  {train_on:<8} "
                + " ".join(f"{cells[n]['accuracy']:>6.3f}" if n in cells else f"{'-':>6}"
                           for n in sizes)
            )  # fmt: skip
        easy = {r["n_train"]: r for r in mine if r["train_on"] == "easy" and "sgr_text" in r}
        lines.append(
            "  SGR by n_train: " + ", ".join(f"{n} {sgr_shown(r)}" for n, r in sorted(easy.items()))
        )
    return "\n".join(lines)


STUDY = register(
    PlannedStudy("learning_curves", LearningCurvesConfig, plan, curve_rows, summary,
                 plot_learning_curves)
)  # fmt: skip
