"""Learning curves (the paper's RQ4): accuracy on the hard test set as the training set grows,
for easy, hard and all training items, and the cost-adjusted view.

For each task and seed, one shuffle of each pool gives every size: the n = 10 draw is the first
10 items of the n = 20 draw, and so on (nested), so a curve adds items rather than swapping
them. Sizes larger than a pool are left out. With hard items costing `hard_cost` times an easy
one (labelling college questions takes experts), the second view plots accuracy against the
labelling cost of each draw: easy data can win per unit of cost while losing per item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.configs import require
from truthprobe.evaluate import TRAIN_ON
from truthprobe.plots import plot_learning_curves
from truthprobe.studies.base import Study, TasksStudyConfig, run_with, scored, sgr_shown
from truthprobe.studies.fits import fit_draws, hits, nested_draws


@dataclass(frozen=True)
class LearningCurvesConfig(TasksStudyConfig):
    """Accuracy against n training items (nested draws) for easy / hard / all training."""

    sizes: tuple[int, ...] = (10, 20, 40, 80, 160, 320)
    """Training-set sizes; each seed's draws are nested."""
    hard_cost: float = 2.0
    """Cost of labelling a hard item, in easy items (the cost-adjusted view)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.sizes) and min(self.sizes) >= 1, "sizes", "must be positive")
        require(self.hard_cost > 0, "hard_cost", f"must be positive, got {self.hard_cost}")


def curve_rows(study: Study) -> tuple[list[dict], dict[str, np.ndarray]]:
    config: LearningCurvesConfig = study.config  # type: ignore[assignment]
    rows: list[dict] = []
    items: dict[str, np.ndarray] = {}
    seeds = list(study.seeds)
    sizes = sorted(set(config.sizes))
    for task, source in study.sources.items():
        layer = study.layer(task)
        test = source.at(layer).take(source.test)
        assert source.hard is not None
        correct: dict[tuple[str, int], np.ndarray] = {}
        costs: dict[tuple[str, int], float] = {}
        for train_on in TRAIN_ON:
            pool = source.pools[train_on]
            by_seed = [
                nested_draws(pool, sizes, seed, f"{task}:{train_on}:curve",
                             config.split.split_seed)
                for seed in seeds
            ]  # fmt: skip
            for n in sizes:
                if n > len(pool):
                    continue
                draws = [d[n] for d in by_seed]
                fitted = fit_draws(source, layer, draws, seeds)
                correct[(train_on, n)] = hits(fitted, test)
                costs[(train_on, n)] = float(
                    np.mean([np.where(source.hard[d], config.hard_cost, 1.0).sum() for d in draws])
                )
        for (train_on, n), matrix in correct.items():
            ceiling = correct.get(("hard", n)) if train_on == "easy" else None
            items[f"{task}|{train_on}|{n}"] = matrix.astype(np.uint8)
            rows.append(
                dict(
                    scored(study, source, source.test, matrix, ceiling),
                    task=task, train_on=train_on, n_train=n, cost=costs[(train_on, n)],
                    hard_cost=config.hard_cost, layer=layer,
                )
            )  # fmt: skip
    return rows, items


def summary(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        sizes = sorted({r["n_train"] for r in mine})
        first = mine[0]
        lines.append(
            f"{task} (layer {first['layer']}, {first['n_test']} hard test items; zero-shot "
            f"{first['zero_shot']:.3f}, chance {first['chance']:.3f}): accuracy by n_train"
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


def run_study(config: LearningCurvesConfig) -> str:
    """Run the study, store it; returns what the command prints."""
    return run_with("learning_curves", config, curve_rows, summary, plot_learning_curves)
