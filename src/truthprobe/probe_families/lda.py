"""Fisher's linear discriminant between correct and incorrect choices, scikit-learn's.

With d_model features and a few hundred training items the within-class covariance is
singular, so the estimator shrinks it (Ledoit-Wolf, `shrinkage="auto"`, `solver="lsqr"`);
nothing is left to choose, so both presets fit the one candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.probes import LinearScorer, ProbeData, Standardizer, choice_rows


@dataclass(frozen=True)
class LDAProbe:
    shrinkage: str | float = "auto"

    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        standardizer = Standardizer.fit(train)
        x, labels = choice_rows(train, standardizer)
        model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=self.shrinkage)
        model.fit(x, labels)
        weight = model.coef_[0].astype(np.float32)
        return LinearScorer(standardizer, weight, float(model.intercept_[0]))


def candidates(preset: str) -> tuple[LDAProbe, ...]:
    return (LDAProbe(),)
