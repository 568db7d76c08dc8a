"""`ChoiceProbs`: the one result type every method returns.

Zero-shot scoring, a linear probe on layer 12, CCS, ICL, a QLoRA adapter: each turns test items
into a probability per answer choice. Accuracy and every metric are computed from this alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Below this `uniform_margin` a probe's probabilities are called collapsed (near uniform).
COLLAPSED_MARGIN = 0.02


@dataclass(frozen=True)
class ChoiceProbs:
    """Per-item probabilities over answer choices (ragged choice lists masked).

    Attributes:
        ids: item ids, one per row.
        probs: (items, choices) probabilities; rows sum to 1 over real choices, 0 elsewhere.
        mask: (items, choices) True where a choice exists.
    """

    ids: tuple[str, ...]
    probs: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        if self.probs.shape != self.mask.shape or self.probs.shape[0] != len(self.ids):
            raise ValueError(
                f"ChoiceProbs shapes disagree: {len(self.ids)} ids, probs {self.probs.shape}, "
                f"mask {self.mask.shape}"
            )

    @classmethod
    def from_scores(cls, ids: Sequence[str], scores: np.ndarray, mask: np.ndarray) -> ChoiceProbs:
        """Softmax of per-choice scores (logits, log-likelihoods) over each item's real choices."""
        scores = np.where(mask, np.asarray(scores, dtype=np.float64), -np.inf)
        scores = scores - scores.max(axis=1, keepdims=True)
        expd = np.where(mask, np.exp(scores), 0.0)
        return cls(tuple(ids), expd / expd.sum(axis=1, keepdims=True), np.asarray(mask, bool))

    def predictions(self) -> np.ndarray:
        """Index of the most probable choice per item (ties: the first)."""
        return np.where(self.mask, self.probs, -1.0).argmax(axis=1)

    def correct(self, answer_index: np.ndarray) -> np.ndarray:
        """Per-item 0/1 correctness against the gold choice indices."""
        return (self.predictions() == np.asarray(answer_index)).astype(np.float64)

    def accuracy(self, answer_index: np.ndarray) -> float:
        return float(self.correct(answer_index).mean())

    def gold_probability(self, answer_index: np.ndarray) -> np.ndarray:
        """The probability given to the gold choice (label confidence, as MDL uses)."""
        return self.probs[np.arange(len(self.ids)), np.asarray(answer_index)]

    def uniform_margin(self) -> float:
        """Mean over items of (largest choice probability - 1 / choices): 0 when uniform.

        A collapsed probe (weights ~ 0) may still rank choices by argmax, but its probabilities
        carry nothing; this measures how far they are from uniform.
        """
        k = self.mask.sum(1)
        return float((self.probs.max(1) - 1 / k).mean())


Normalization = Literal["raw", "chars"]


def zero_shot_probs(
    ids, logprob: np.ndarray, chars: np.ndarray, mask: np.ndarray, normalization: Normalization
) -> ChoiceProbs:
    """The zero-shot rule, the one place it lives: choice probabilities from summed
    log-likelihoods as continuations of the prompt (`raw`, lm-eval's `acc`), or per character
    of the choice (`chars`, lm-eval's `acc_norm`; `chars` may be None for `raw`)."""
    scores = np.asarray(logprob, np.float64)
    if normalization == "chars":
        scores = scores / np.maximum(chars, 1)
    elif normalization != "raw":
        raise ValueError(f"unknown normalization {normalization!r}; use raw or chars")
    return ChoiceProbs.from_scores(ids, scores, mask)


def choice_auroc(probs: np.ndarray, n_choices: np.ndarray, answer_index: np.ndarray) -> float:
    """ROC-AUC of per-choice truth scores (scikit-learn's `roc_auc_score`): every real choice of
    every item is one example, the correct ones positive, scored by its probability. Unlike
    accuracy it credits a probe for ranking true choices above false ones across items, not
    only within one; NaN without both classes."""
    from sklearn.metrics import roc_auc_score

    probs = np.asarray(probs, np.float64)
    real = np.arange(probs.shape[1]) < np.asarray(n_choices)[:, None]
    labels = np.arange(probs.shape[1]) == np.asarray(answer_index)[:, None]
    if not real.any() or labels[real].all() or not labels[real].any():
        return float("nan")
    return float(roc_auc_score(labels[real], probs[real]))


def prediction_confidence(probs: np.ndarray) -> np.ndarray:
    """Per item, the probability of the predicted choice (the largest): what calibration
    compares with correctness."""
    return np.asarray(probs, np.float64).max(axis=1)


#: Equal-width confidence bins of the expected calibration error and reliability diagrams.
ECE_BINS = 10


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """A reliability diagram's rows: per equal-width confidence bin (1.0 in the last), its
    bounds, count, mean confidence and accuracy (NaN where empty)."""
    confidence, correct = np.ravel(confidence), np.ravel(correct).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    sums = np.bincount(which, confidence, bins), np.bincount(which, correct, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return [
            dict(low=b / bins, high=(b + 1) / bins, n=int(counts[b]),
                 confidence=float(sums[0][b] / counts[b]), accuracy=float(sums[1][b] / counts[b]))
            for b in range(bins)
        ]  # fmt: skip


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the share-weighted mean, over equal-width confidence bins, of |accuracy - mean
    confidence| (confidence = the probability of the predicted choice)."""
    rows = [r for r in calibration_bins(confidence, correct, bins) if r["n"]]
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / total)
