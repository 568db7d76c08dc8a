"""Expected calibration error and its interval: known answers on synthetic probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from truthprobe.choice_probs import calibration_bins, expected_calibration_error
from truthprobe.evaluate import bootstrap_ece


def test_ece_of_a_known_miscalibration_is_the_hand_computation():
    """10 answers at confidence 0.95, 7 right (gap 0.25); 10 at 0.55, 5 right (gap 0.05):
    ECE = (10 x 0.25 + 10 x 0.05) / 20 = 0.15."""
    confidence = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([1] * 7 + [0] * 3 + [1] * 5 + [0] * 5)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.15)
    rows = calibration_bins(confidence, correct)
    assert [(r["n"], r["accuracy"]) for r in rows if r["n"]] == [(10, 0.5), (10, 0.7)]
    assert rows[9]["low"] == 0.9 and rows[9]["confidence"] == pytest.approx(0.95)
    assert calibration_bins(np.array([1.0]), np.array([1]))[-1]["n"] == 1  # 1.0: the last bin


@pytest.mark.parametrize("seed", range(5))
def test_perfectly_calibrated_probabilities_have_zero_within_their_interval(seed):
    """250 items x 5 seeds, each answer right with probability equal to its confidence."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.25, 1.0, size=(250, 5))
    correct = rng.random((250, 5)) < confidence
    interval = bootstrap_ece(confidence, correct, n_boot=2000)
    assert interval.estimate > 0  # binned ECE is biased upwards...
    assert interval.low <= 0 <= interval.high, interval  # ...and its interval says so


@pytest.mark.parametrize("seed", range(3))
def test_an_overconfident_model_is_told_apart_and_its_gap_covered(seed):
    """Right 10 points less often than its confidence says: the true ECE is 0.10."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.25, 1.0, size=(250, 5))
    correct = rng.random((250, 5)) < confidence - 0.1
    interval = bootstrap_ece(confidence, correct, n_boot=2000)
    assert interval.low > 0 and interval.low <= 0.10 <= interval.high, interval
