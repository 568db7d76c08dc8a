"""Min-K% token probability: was a question likely seen in pretraining? (contamination strata)

Shi et al. (2024, "Detecting Pretraining Data from Large Language Models") score a text by the
mean log-probability of its k% least likely tokens under the model: text the model was trained
on has few surprising tokens, so a high Min-K% suggests it was seen. Min-K%++ (Zhang et al.,
2024) standardises each token's log-probability by the mean and spread of the model's
next-token distribution at that position before taking the k% lowest, which separates seen from
unseen text better on most benchmarks.

Both are computed from the question text's tokens in a prefix-only pass of their own, run the
first time a task under `min_k` / `min_k_pp` needs them
(`truthprobe.scoring.forward_batch(question_scores=True, choices=False)`), and stored in the
activation cache (`scores/min_k`, `scores/min_k_pp`, one column per `PERCENTS`). As hardness
measures (`--tasks arc:min_k`, `arc:min_k_pp`) the score is negated at `DEFAULT_PERCENT`: higher
= less likely seen, so "easy" is the likely-seen 30% and "hard" the likely-unseen 30%, and SGR
asks whether training on likely-seen items transfers to likely-unseen ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: k (percent of a question's tokens) of the stored columns; 100 is the mean over all tokens.
PERCENTS: tuple[int, ...] = (10, 20, 30, 50, 100)
#: The k the hardness measures use (Shi et al.'s and Zhang et al.'s default).
DEFAULT_PERCENT = 20
#: Model-based hardness measures read from the cache, and the stored score each negates.
MEASURE_SCORES: dict[str, str] = {"min_k": "min_k", "min_k_pp": "min_k_pp"}


def min_k(values: np.ndarray, percents: Sequence[int] = PERCENTS) -> np.ndarray:
    """Mean of the ceil(k% of n) lowest `values` for each k (NaN when there are no values)."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    if values.size == 0:
        return np.full(len(percents), np.nan)
    counts = [max(1, math.ceil(values.size * k / 100)) for k in percents]
    return np.array([values[:n].mean() for n in counts])


def min_k_rows(per_item: Sequence[np.ndarray], percents: Sequence[int] = PERCENTS) -> np.ndarray:
    """(items, len(percents)) Min-K% of each item's token values (log-probs or z-scores)."""
    if not per_item:
        return np.zeros((0, len(percents)), np.float32)
    return np.stack([min_k(v, percents) for v in per_item]).astype(np.float32)


def hardness_column(stored: np.ndarray, percents: Sequence[int], percent: int) -> np.ndarray:
    """The negated Min-K% column for `percent`: higher = less likely seen = 'harder'."""
    return -np.asarray(stored[:, list(percents).index(percent)], dtype=np.float64)
