"""Noisy labels (the paper's RQ3): is clean easy data better than noisy hard data?

A fraction p of each hard training draw's labels is replaced by a random wrong choice
(`fits.noisy_labels`: exactly round(p * n) of them); the same items are drawn for every p, so
only the labels differ. Each noisy-hard probe is compared with the clean easy probe on the hard
test set: SGR(p) = (easy - zero-shot) / (hard_p - zero-shot) above 1 means clean easy data beats
hard data with that much noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.configs import require
from truthprobe.plots import plot_noisy_labels
from truthprobe.studies.base import (
    Study,
    TasksStudyConfig,
    run_with,
    scored,
    sgr_cells,
    sgr_shown,
)
from truthprobe.studies.fits import draw, fit_draws, hits, noisy_labels


@dataclass(frozen=True)
class NoisyLabelsConfig(TasksStudyConfig):
    """Hard training labels with noise p against clean easy training, on the hard test set."""

    noise: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
    """Fractions of hard training labels replaced by a random wrong choice."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            bool(self.noise) and all(0 <= p <= 1 for p in self.noise),
            "noise",
            f"must be fractions between 0 and 1, got {self.noise}",
        )


def noise_rows(study: Study) -> tuple[list[dict], dict[str, np.ndarray]]:
    config: NoisyLabelsConfig = study.config  # type: ignore[assignment]
    rows: list[dict] = []
    items: dict[str, np.ndarray] = {}
    seeds = list(study.seeds)
    for task, source in study.sources.items():
        layer = study.layer(task)
        test = source.at(layer).take(source.test)
        easy = hits(study.fit(task, source.pools["easy"], "easy"), test)
        draws = [
            draw(source.pools["hard"], study.n_train, seed, f"{task}:hard",
                 config.split.split_seed)
            for seed in seeds
        ]  # fmt: skip
        answers = source.at(layer).answer_index
        common = dict(task=task, layer=layer)
        items[f"{task}|easy"] = easy.astype(np.uint8)
        rows.append(
            dict(common, train_on="easy (clean)", p=0.0, **scored(study, source, source.test, easy))
        )
        for p in sorted(set(config.noise)):
            labels = [
                noisy_labels(answers[d], source.n_choices[d], p, seed)[0]
                for d, seed in zip(draws, seeds, strict=True)
            ]
            fitted = fit_draws(source, layer, draws, seeds, labels=labels)
            hard = hits(fitted, test)
            items[f"{task}|hard|{p:g}"] = hard.astype(np.uint8)
            # the noisy hard probe's accuracy, and SGR of clean easy data with it as ceiling
            unsup, chance = source.zero_shot[source.test], source.chance(source.test)
            rows.append(
                dict(
                    common, train_on="hard (noisy)", p=p,
                    **scored(study, source, source.test, hard),
                    **sgr_cells(unsup, easy, hard, study.n_boot, chance),
                )
            )  # fmt: skip
    return rows, items


def summary(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        easy = next(r for r in mine if r["train_on"] == "easy (clean)")
        lines.append(
            f"{task} (layer {easy['layer']}, {easy['n_test']} hard test items): zero-shot "
            f"{easy['zero_shot']:.3f}, chance {easy['chance']:.3f}, clean easy "
            f"{easy['accuracy']:.3f} [{easy['accuracy_low']:.3f}, {easy['accuracy_high']:.3f}]"
        )
        for r in mine:
            if r["train_on"] == "hard (noisy)":
                lines.append(
                    f"  hard, noise {r['p']:.1f}: {r['accuracy']:.3f} [{r['accuracy_low']:.3f}, "
                    f"{r['accuracy_high']:.3f}]; SGR of clean easy: {sgr_shown(r)}"
                )
    return "\n".join(lines)


def run_study(config: NoisyLabelsConfig) -> str:
    """Run the study, store it; returns what the command prints."""
    return run_with("noisy_labels", config, noise_rows, summary, plot_noisy_labels)
