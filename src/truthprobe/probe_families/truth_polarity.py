"""A truth-and-polarity subspace probe in the spirit of Bürger et al. (2024), "Truth is
Universal": a general truth direction t_G beside a polarity-sensitive one t_P, whose sign
flips with the item's polarity p.

What is implemented. States are z-scored; each item's choices are centred on their mean (what
the choices share says nothing about which is true). The polarity axis is the first principal
component of the items' mean states (the part an item's choices share, where a question's
framing, e.g. affirmative or negated, lives), and an item's polarity p = +-1 is the side of the
training median its mean falls on. t_G and t_P are the least-squares coefficients of the centred
choice states on tau and tau * p (tau = +1 for the correct choice, -1 otherwise), as in the
paper's regression. A choice scores (t_G + p t_P) . x: where truth flips with polarity, the
polarity-aware term separates what a single direction cannot.

What is left out. Bürger et al. learn polarity from labelled affirmative / negated
statements; truthprobe's datasets have none, so polarity is estimated as above (on data whose
items do not differ in polarity, t_P fits noise and the probe reduces to t_G plus that
noise). Their final logistic regression on the two projections, and their statement datasets,
are not reproduced. One candidate under both presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.probes import ProbeData, Standardizer


@dataclass(frozen=True)
class TruthPolarityScorer:
    standardizer: Standardizer
    general: np.ndarray
    """t_G."""
    polar: np.ndarray
    """t_P."""
    axis: np.ndarray
    """The polarity axis (in z-scored space)."""
    threshold: float
    """An item whose mean projects above it has polarity +1."""

    def polarity(self, z: np.ndarray, mask: np.ndarray) -> np.ndarray:
        means = (z * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return np.where(means @ self.axis > self.threshold, 1.0, -1.0)

    def scores(self, test: ProbeData) -> np.ndarray:
        z = self.standardizer(test.states)
        p = self.polarity(z, test.mask)
        return z @ self.general + p[:, None] * (z @ self.polar)

    def predict(self, test: ProbeData) -> ChoiceProbs:
        return ChoiceProbs.from_scores(test.ids, self.scores(test), test.mask)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "probe_mean": self.standardizer.mean,
            "probe_std": self.standardizer.std,
            "probe_weight": self.general,
            "probe_polar": self.polar,
            "probe_axis": self.axis,
            "probe_bias": np.float64(self.threshold),
        }


@dataclass(frozen=True)
class TruthPolarityProbe:
    def fit(self, train: ProbeData, seed: int) -> TruthPolarityScorer:
        standardizer = Standardizer.fit(train)
        z = standardizer(train.states)
        mask = train.mask
        means = (z * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        centred_means = means - means.mean(0)
        axis = np.linalg.svd(centred_means, full_matrices=False)[2][0].astype(np.float32)
        threshold = float(np.median(means @ axis))
        p = np.where(means @ axis > threshold, 1.0, -1.0)
        tau = np.where(np.arange(mask.shape[1]) == train.answer_index[:, None], 1.0, -1.0)
        rows, columns = np.nonzero(mask)
        x = (z - means[:, None, :])[rows, columns]
        design = np.stack([tau[rows, columns], tau[rows, columns] * p[rows]], 1)
        coefficients = np.linalg.lstsq(design, x, rcond=None)[0]
        general, polar = coefficients.astype(np.float32)
        return TruthPolarityScorer(standardizer, general, polar, axis, threshold)


def candidates(preset: str) -> tuple[TruthPolarityProbe, ...]:
    return (TruthPolarityProbe(),)


def rebuild(arrays: dict[str, np.ndarray]) -> TruthPolarityScorer:
    return TruthPolarityScorer(
        Standardizer(arrays["probe_mean"], arrays["probe_std"]),
        arrays["probe_weight"],
        arrays["probe_polar"],
        arrays["probe_axis"],
        float(arrays["probe_bias"]),
    )
