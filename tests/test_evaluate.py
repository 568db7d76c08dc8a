"""Known-answer tests for SGR and its bootstrap, and the splits' guarantees."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from truthprobe.evaluate import (
    EvaluationError,
    SplitConfig,
    bootstrap_accuracy,
    bootstrap_sgr,
    make_split,
    supervision_gap_recovered,
)


def test_sgr_point_values():
    assert supervision_gap_recovered(0.6, 0.8, 0.4) == pytest.approx(0.5)
    assert supervision_gap_recovered(0.8, 0.8, 0.4) == pytest.approx(1.0)
    assert supervision_gap_recovered(0.4, 0.8, 0.4) == pytest.approx(0.0)
    assert supervision_gap_recovered(0.9, 0.8, 0.4) == pytest.approx(1.25)  # not clipped
    assert np.isnan(supervision_gap_recovered(0.6, 0.4, 0.4))  # zero denominator


def test_two_item_bootstrap_known_distribution():
    """Items (easy, hard, unsup) = (1,1,0) and (0,1,0): resamples give SGR 1, 0.5 or 0 with
    probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1] and the mean 0.5."""
    result = bootstrap_sgr(np.array([0, 0]), np.array([1, 0]), np.array([1, 1]), n_boot=20_000)
    assert result.sgr.estimate == pytest.approx(0.5)
    assert (result.sgr.low, result.sgr.high) == (0.0, 1.0)
    assert result.acc_easy.estimate == 0.5 and result.acc_hard.estimate == 1.0
    assert result.warning is None


def test_constant_items_give_a_point_interval():
    unsup, easy, hard = np.zeros((50, 1)), np.ones((50, 3)), np.ones((50, 3))
    result = bootstrap_sgr(unsup, easy, hard, n_boot=500)
    assert result.sgr.estimate == result.sgr.low == result.sgr.high == 1.0


def test_zero_denominator_warns_and_gives_nan():
    unsup = np.array([1, 0, 1, 0])
    with pytest.warns(UserWarning, match="includes 0"):
        result = bootstrap_sgr(unsup, np.array([1, 1, 0, 0]), unsup.copy(), n_boot=200)
    assert np.isnan(result.sgr.estimate)
    assert result.denominator.estimate == 0 and result.warning
    # hard == unsupervised item by item: every resample's denominator is exactly 0
    assert result.no_gap and result.zero_denominators == 200 and result.text() == "no gap"


@pytest.mark.parametrize(
    ("hard", "no_gap"),
    [
        # one item of 3 right: P(a resample draws none of it) = (2/3)^3 = 30% > 2.5%
        ((1, 0, 0), True),
        # 2 of 3 right: P(none) = (1/3)^3 = 3.7% > 2.5%: the interval still reaches 0
        ((1, 1, 0), True),
        # 3 of 4 right: P(none) = (1/4)^4 = 0.4% < 2.5%: the lower end is 1/4, a real gap
        ((1, 1, 1, 0), False),
        ((1, 1, 1, 1), False),
    ],
)
def test_no_gap_fires_exactly_when_the_difference_interval_includes_zero(hard, no_gap):
    """Known distributions: unsupervised all wrong, so the denominator of a resample is the
    share of hard-right items it drew, 0 with the probability given beside each case."""
    hard = np.array(hard)
    unsup, easy = np.zeros(len(hard)), hard.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap_sgr(unsup, easy, hard, n_boot=20_000)
    assert result.no_gap is no_gap
    assert (result.denominator.low <= 0) is no_gap
    p_zero = (1 - hard.mean()) ** len(hard)
    assert result.zero_denominators / 20_000 == pytest.approx(p_zero, abs=0.01)
    assert (result.text() == "no gap") is no_gap
    if not no_gap:
        assert result.text() == "1.00 [1.00, 1.00]"  # easy == hard in every resample


def test_a_negative_gap_is_no_gap():
    """Hard training below zero-shot in every resample: no gap, though 0 is outside the CI."""
    unsup = np.ones((40, 1))
    hard = np.zeros((40, 2))
    with pytest.warns(UserWarning, match="lies below 0"):
        result = bootstrap_sgr(unsup, hard.copy(), hard, n_boot=300)
    assert result.denominator.high < 0 and result.no_gap and result.zero_denominators == 0


def test_bootstrap_matches_a_plain_loop():
    """The weighted (vectorised) bootstrap agrees with explicit index resampling."""
    rng = np.random.default_rng(3)
    n, seeds = 120, 5
    unsup = rng.random(n) < 0.3
    easy = rng.random((n, seeds)) < 0.5
    hard = rng.random((n, seeds)) < 0.6
    fast = bootstrap_sgr(unsup, easy, hard, n_boot=20_000, seed=1)
    loop_rng = np.random.default_rng(2)
    samples = []
    for _ in range(20_000):
        items = loop_rng.integers(0, n, n)
        cols = loop_rng.integers(0, seeds, seeds)
        u = unsup[items].mean()
        e = easy[items][:, cols].mean()
        h = hard[items][:, cols].mean()
        samples.append((e - u) / (h - u))
    low, high = np.percentile(samples, [2.5, 97.5])
    assert fast.sgr.low == pytest.approx(low, abs=0.05)
    assert fast.sgr.high == pytest.approx(high, abs=0.05)


def test_bootstrap_accuracy_interval_contains_mean():
    correct = np.random.default_rng(0).random((300, 5)) < 0.7
    interval = bootstrap_accuracy(correct, n_boot=2000)
    assert interval.low < interval.estimate < interval.high
    assert interval.estimate == pytest.approx(correct.mean())


def test_mismatched_terms_are_refused():
    with pytest.raises(EvaluationError, match="share test items"):
        bootstrap_sgr(np.zeros(3), np.zeros((4, 2)), np.zeros((4, 2)))


def _strata(easy=400, medium=300, hard=400):
    return ["easy"] * easy + ["medium"] * medium + ["hard"] * hard + [None] * 50


def test_split_sets_are_disjoint_and_test_is_hard():
    strata = _strata()
    split = make_split(strata, SplitConfig(n_train=160))
    test, val = set(split.test), set(split.validation)
    assert all(strata[i] == "hard" for i in test) and len(test) == 200
    assert all(strata[i] == "easy" for i in val) and len(val) == 100
    for train_on, pool in split.pools.items():
        assert not set(pool) & test and not set(pool) & val, train_on
        for seed in range(5):
            rows = split.train_rows(train_on, seed)
            assert len(rows) == 160 and set(rows) <= set(pool)
    assert {strata[i] for i in split.pools["all"]} == {"easy", "medium", "hard"}
    assert not np.array_equal(split.train_rows("easy", 0), split.train_rows("easy", 1))
    assert np.array_equal(split.train_rows("hard", 3), split.train_rows("hard", 3))


def test_split_too_small_names_the_pool():
    with pytest.raises(EvaluationError, match=r"too few items for n_train=160: pools \{'hard'"):
        make_split(_strata(hard=200), SplitConfig(n_train=160))
