"""Noisy labels (the paper's RQ3): is clean easy data better than noisy hard data?

A fraction p of each hard training draw's labels is replaced by a random wrong choice (the one
noise rule, `evaluate.noisy_labels`: exactly round(p * n) of them); the draw is the sweep's, so
only the labels differ between p, and p = 0 is the sweep's own hard part. Each noisy-hard probe
is compared with the clean easy probe (the sweep's easy part) on the hard test set:
SGR(p) = (easy - zero-shot) / (hard_p - zero-shot) above 1 means clean easy data beats hard
data with that much noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from truthprobe.configs import require
from truthprobe.harness import Harness
from truthprobe.methods.base import layer_name
from truthprobe.plots import plot_noisy_labels
from truthprobe.results import sgr_shown
from truthprobe.studies.planned import (
    PlannedStudy,
    PlannedStudyConfig,
    View,
    register,
)


@dataclass(frozen=True)
class NoisyLabelsConfig(PlannedStudyConfig):
    """Hard training labels with noise p against clean easy training, on the hard test set."""

    kind: ClassVar[str] = "noisy_labels"
    noise: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
    """Fractions of hard training labels replaced by a random wrong choice."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            bool(self.noise) and all(0 <= p <= 1 for p in self.noise),
            "noise",
            f"must be fractions between 0 and 1, got {self.noise}",
        )


def plan(harness: Harness, view: View) -> None:
    config: NoisyLabelsConfig = view.config  # type: ignore[assignment]
    for task in config.tasks:
        label = view.label(task)
        draws = [d for p in sorted(set(config.noise)) for d in view.seeds_of("hard", noise=p)]
        harness.run_parts(task, label, draws)


def noise_rows(view: View) -> list[dict]:
    config: NoisyLabelsConfig = view.config  # type: ignore[assignment]
    rows: list[dict] = []
    for task in config.tasks:
        layer = view.layer(task)
        easy = view.correct(task, layer, view.seeds_of("easy"))
        common = dict(task=task, layer=layer)
        rows.append(dict(common, train_on="easy (clean)", p=0.0, **view.cell(task, easy)))
        for p in sorted(set(config.noise)):
            hard = view.correct(task, layer, view.seeds_of("hard", noise=p))
            # the noisy hard probe's accuracy, and SGR of clean easy data with it as ceiling
            cell = view.cell(task, hard)
            versus = view.cell(task, easy, hard)  # clean easy, with hard_p as the ceiling
            sgr = {k: v for k, v in versus.items() if k not in cell and k != "own"}
            rows.append(dict(common, train_on="hard (noisy)", p=p, **cell, **sgr))
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        easy = next(r for r in mine if r["train_on"] == "easy (clean)")
        lines.append(
            f"{task} (layer {layer_name(easy['layer'])}, {easy['n_test']} hard test items): "
            f"zero-shot {easy['zero_shot']:.3f}, chance {easy['chance']:.3f}, clean easy "
            f"{easy['accuracy']:.3f} [{easy['accuracy_low']:.3f}, {easy['accuracy_high']:.3f}]"
        )
        for r in mine:
            if r["train_on"] == "hard (noisy)":
                lines.append(
                    f"  hard, noise {r['p']:.1f}: {r['accuracy']:.3f} [{r['accuracy_low']:.3f}, "
                    f"{r['accuracy_high']:.3f}]; SGR of clean easy: {sgr_shown(r)}"
                )
    return "\n".join(lines)


STUDY = register(
    PlannedStudy("noisy_labels", NoisyLabelsConfig, plan, noise_rows, summary, plot_noisy_labels)
)
