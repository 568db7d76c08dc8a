"""Contrast-consistent search: unsupervised, scored on states centred per question."""

from __future__ import annotations

import numpy as np

from truthprobe.probes import CCSProbe, CCSScorer, Standardizer


def candidates(preset: str) -> tuple[CCSProbe, ...]:
    return (CCSProbe(),)


def rebuild(arrays: dict[str, np.ndarray]) -> CCSScorer:
    standardizer = Standardizer(arrays["probe_mean"], arrays["probe_std"])
    return CCSScorer(standardizer, arrays["probe_weight"], float(arrays["probe_bias"]))
