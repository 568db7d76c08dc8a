"""Zero-shot multiple-choice scoring from the log-likelihoods stored in the activation cache.

This is the "unsupervised" floor of Supervision Gap Recovered. As in lm-evaluation-harness,
`raw` (`acc`) softmaxes each choice's summed continuation log-likelihood, and `chars`
(`acc_norm`) first divides it by the continuation's length in characters.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from truthprobe.activations.cache import ActivationCache
from truthprobe.choice_probs import ChoiceProbs

Normalization = Literal["raw", "chars"]


def zero_shot_probs(
    cache: ActivationCache, rows: np.ndarray | None = None, normalization: Normalization = "raw"
) -> ChoiceProbs:
    """Choice probabilities of cached items (all rows, or `rows`) without any training."""
    rows = np.arange(cache.n_items) if rows is None else np.asarray(rows)
    logprob = cache.score("choice_logprob")[rows].astype(np.float64)
    mask = cache.item("choice_mask")[rows]
    if normalization == "chars":
        chars = cache.score("choice_chars")[rows]
        logprob = logprob / np.maximum(chars, 1)
    elif normalization != "raw":
        raise ValueError(f"unknown normalization {normalization!r}; use raw or chars")
    all_ids = cache.ids  # one HDF5 read, not one per row
    ids = [all_ids[i] for i in rows]
    return ChoiceProbs.from_scores(ids, logprob, mask)
