"""A random direction, drawn from the seed and blind to states and labels: the floor of a
probe that learns nothing, at chance within its interval (any figure can draw it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.probes import LinearScorer, ProbeData, Standardizer


@dataclass(frozen=True)
class RandomDirection:
    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        direction = np.random.default_rng(seed).normal(size=train.states.shape[-1])
        direction /= np.linalg.norm(direction)
        return LinearScorer(Standardizer.fit(train), direction.astype(np.float32))


def candidates(preset: str) -> tuple[RandomDirection, ...]:
    return (RandomDirection(),)
