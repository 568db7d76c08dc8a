"""PCA / LAT (representation reading, Zou et al. 2023): the first principal component of the
differences between the states of two choices of one question.

Every pair of a question's choices enters, each in a random order drawn from the seed, as LAT's
random pairs do, so the component is found without labels; the training labels then choose
only its sign (correct choices score higher than incorrect ones on average). One candidate
under both presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.probes import LinearScorer, ProbeData, Standardizer


@dataclass(frozen=True)
class LATProbe:
    def fit(self, train: ProbeData, seed: int) -> LinearScorer:
        from sklearn.decomposition import PCA

        standardizer = Standardizer.fit(train)
        z = standardizer(train.states)
        pairs = [(i, j, k) for i, m in enumerate(train.mask)
                 for j in np.flatnonzero(m) for k in np.flatnonzero(m) if j < k]  # fmt: skip
        i, j, k = (np.array(column) for column in zip(*pairs, strict=True))
        order = np.random.default_rng(seed).choice([-1.0, 1.0], size=len(i))
        pca = PCA(n_components=1, random_state=seed).fit((z[i, j] - z[i, k]) * order[:, None])
        direction = pca.components_[0]
        answers = train.answer_index
        wrong = np.flatnonzero(train.mask & (np.arange(train.mask.shape[1]) != answers[:, None]))
        rows, columns = np.unravel_index(wrong, train.mask.shape)
        if float(((z[rows, answers[rows]] - z[rows, columns]) @ direction).mean()) < 0:
            direction = -direction
        return LinearScorer(standardizer, direction.astype(np.float32))


def candidates(preset: str) -> tuple[LATProbe, ...]:
    return (LATProbe(),)
