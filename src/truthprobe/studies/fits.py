"""Training draws, probe fits and scores shared by every transfer study.

Every study trains the validated multiple-choice linear probe (`truthprobe.probes`, the sweep's
default) on draws from some pool and scores it on some test set; this module is the one place
that does it. A draw's penalty and step count are chosen on the training task's held-out easy
validation items, never on a test set, exactly as the sweep's `ProbeAtLayer` does, and one
layer per training task is chosen by the sweep's rule (easy-trained probes' accuracy on those
validation items).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from truthprobe.evaluate import noisy_labels  # noqa: F401  (the one noise rule)
from truthprobe.probes import FittedProbe, ProbeData, choose, fit_many, preset_probes
from truthprobe.studies.sources import Source

PROBE = "mc_linear"


def draw(pool: np.ndarray, n: int, seed: int, salt: str, split_seed: int = 0) -> np.ndarray:
    """`n` rows of `pool` for (seed, salt), deterministic given both (sorted)."""
    return np.sort(nested_draws(pool, [n], seed, salt, split_seed)[n])


def nested_draws(
    pool: np.ndarray, sizes: Sequence[int], seed: int, salt: str, split_seed: int = 0
) -> dict[int, np.ndarray]:
    """Draws of each size from one shuffle of `pool`: the first n of the same order, so a
    smaller draw is a subset of every larger one (a learning curve adds items, it does not
    swap them). Sizes larger than the pool are left out."""
    rng = np.random.default_rng([split_seed, seed, zlib.crc32(salt.encode())])
    order = rng.permutation(np.asarray(pool))
    return {n: order[:n] for n in sizes if n <= len(order)}


def fit_draws(
    source: Source,
    layer: int,
    draws: Sequence[np.ndarray],
    seeds: Sequence[int],
    labels: Sequence[np.ndarray] | None = None,
    validation: ProbeData | None = None,
) -> list[FittedProbe]:
    """The validated probe fitted on each draw (rows of `source`) at `layer`, its setting
    chosen on `validation` (default: the source's easy validation items).

    `labels`: per draw, answers to train on instead of the records' (noisy-label studies).
    """
    data = source.at(layer)
    trains = [data.take(rows) for rows in draws]
    if labels is not None:
        trains = [
            ProbeData(t.ids, t.states, t.mask, np.asarray(a))
            for t, a in zip(trains, labels, strict=True)
        ]
    validation = validation if validation is not None else data.take(source.validation)
    candidates = preset_probes(PROBE, "validated")
    fitted = fit_many(candidates, trains, list(seeds))
    return [grid[choose(grid, validation)[0]] for grid in fitted]


def hits(fitted: Sequence[FittedProbe], test: ProbeData) -> np.ndarray:
    """(test items, draws) correctness of each fitted probe."""
    return np.stack([f.predict(test).correct(test.answer_index) for f in fitted], 1).astype(float)


def validation_accuracy(source: Source, layer: int, seeds: Sequence[int], n_train: int) -> float:
    """Mean easy-validation accuracy of easy-trained probes at `layer` (the sweep's rule)."""
    draws = [draw(source.pools["easy"], n_train, s, f"{source.task}:easy") for s in seeds]
    fitted = fit_draws(source, layer, draws, seeds)
    validation = source.at(layer).take(source.validation)
    return float(hits(fitted, validation).mean())


def choose_layer(source: Source, seeds: Sequence[int], n_train: int) -> tuple[int, list[float]]:
    """The layer whose easy-trained probes do best on the easy validation items (ties: the
    lowest), and every layer's validation accuracy. Test items never enter the choice."""
    scores = [validation_accuracy(source, layer, seeds, n_train) for layer in source.layers]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return source.layers[best], scores
