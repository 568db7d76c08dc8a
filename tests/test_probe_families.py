"""The probe registry and its newer families, on planted states: known answers (LDA equals
scikit-learn's, LAT finds the planted direction, a random direction sits at chance), and the
contract every registered family keeps (fits, rebuilds exactly from its stored arrays)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_probes import planted

from truthprobe.evaluate import bootstrap_accuracy
from truthprobe.probe_registry import FAMILIES
from truthprobe.probes import (
    PROBE_KINDS,
    ProbeData,
    choice_rows,
    make_probe,
    scorer_from_arrays,
)


def test_the_command_line_offers_every_registered_family():
    assert PROBE_KINDS == tuple(FAMILIES) and {"lda", "lat", "random"} <= set(PROBE_KINDS)


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_every_family_rebuilds_exactly_from_its_stored_arrays(kind):
    train, test = planted(120, 0), planted(50, 1)
    fitted = make_probe(kind).fit(train, seed=3)
    rebuilt = scorer_from_arrays(kind, fitted.arrays())
    np.testing.assert_array_equal(fitted.predict(test).probs, rebuilt.predict(test).probs)


def test_lda_is_scikit_learns_discriminant_on_the_same_rows():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    train, test = planted(160, 0), planted(80, 1)
    fitted = make_probe("lda").fit(train, seed=0)
    x, labels = choice_rows(train, fitted.standardizer)
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, labels)
    z, _ = choice_rows(test, fitted.standardizer)
    ours = fitted.scores(test)[test.mask]
    np.testing.assert_allclose(ours, reference.decision_function(z), rtol=1e-4, atol=1e-4)
    assert fitted.predict(test).accuracy(test.answer_index) > 0.95


def test_lat_finds_the_planted_direction_and_its_sign_from_labels():
    train, test = planted(160, 0), planted(400, 1)
    fitted = make_probe("lat").fit(train, seed=0)
    direction = np.random.default_rng(99).normal(size=64)  # `planted`'s direction, z-scored
    direction = direction / fitted.standardizer.std
    cosine = fitted.weight @ direction / np.linalg.norm(fitted.weight) / np.linalg.norm(direction)
    assert cosine > 0.9
    assert fitted.predict(test).accuracy(test.answer_index) > 0.95
    # labels choose only the sign: with shuffled labels the axis is the very same
    shuffled = make_probe("lat").fit(planted(160, 0, shuffle_labels=True), seed=0)
    assert abs(abs(float(shuffled.weight @ fitted.weight)) - 1) < 1e-5


def test_a_random_direction_sits_at_chance_within_its_interval():
    """Over 200 seeds on states with a strong planted signal: the item-and-seed bootstrap
    interval of accuracy holds chance (mean 1 / choices per item), and the direction moves
    with the seed."""
    train, test = planted(160, 0), planted(400, 1)
    correct = np.stack(
        [
            make_probe("random").fit(train, seed=s).predict(test).correct(test.answer_index)
            for s in range(200)
        ],
        1,
    )
    chance = float(np.mean(1 / test.mask.sum(1)))
    interval = bootstrap_accuracy(correct, n_boot=2000)
    assert interval.low <= chance <= interval.high, (interval, chance)
    a, b = (make_probe("random").fit(train, seed=s).weight for s in (0, 1))
    assert not np.allclose(a, b)


@pytest.mark.slow
def test_new_families_run_through_the_sweep(arc_sample, tiny_model_dir, tmp_path, cli):
    """`--probes lda lat random`: each family's parts are stored, tabulated and read back."""
    from truthprobe.runstore import load_run

    sweep = cli(
        "sweep", "--tasks", f"{arc_sample}:grade", "--probes", "lda", "lat", "random",
        "--model", str(tiny_model_dir), "--n-train", "12", "--seeds", "2",
        "--validation-size", "10", "--n-boot", "100", "--no-progress",
        "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"), "--probe-preset", "validated",
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    for family in ("lda", "lat", "random"):
        assert re.search(rf"^\S+:grade\s+{family}\s", sweep.stdout, re.M), family
    (run_dir,) = (tmp_path / "runs").glob("layer_sweep-*")
    run = load_run(run_dir)
    assert {"lda", "lat", "random"} <= set(run.summary["family"])
    # each part's AUROC is its test items' per-choice probabilities, by definition
    part = run.summary[run.summary["family"] == "lda"].iloc[0]
    items = run.items[
        (run.items["method"] == part["method"])
        & (run.items["seed"] == part["seed"])
        & (run.items["train_on"] == part["train_on"])
        & (run.items["role"] == "test")
    ]
    probs = np.stack(items["probs"].to_numpy())
    gold = np.arange(probs.shape[1]) == items["answer_index"].to_numpy()[:, None]
    real = probs > 0
    assert part["auroc"] == pytest.approx(mann_whitney_auc(probs[real & gold], probs[real & ~gold]))


def polarised(n: int, seed: int, general: float, d: int = 32, c: int = 4) -> ProbeData:
    """Items of polarity p = +-1 (a strong shared offset along one axis) whose correct choice
    is shifted by `general` along t_G and by 3 p along t_P: where `general` is 0, truth flips
    with polarity and no single direction separates it."""
    rng = np.random.default_rng(seed)
    t_g, t_p, axis = np.linalg.qr(np.random.default_rng(7).normal(size=(d, 3)))[0].T
    p = rng.choice([-1.0, 1.0], size=n)
    states = rng.normal(size=(n, c, d)) + 6 * p[:, None, None] * axis
    answers = rng.integers(0, c, size=n)
    states[np.arange(n), answers] += general * t_g + 3 * p[:, None] * t_p
    return ProbeData(
        tuple(f"p{seed}-{i}" for i in range(n)), states.astype(np.float32),
        np.ones((n, c), bool), answers,
    )  # fmt: skip


def test_the_subspace_probe_recovers_truth_that_flips_with_polarity():
    """A planted 2-D structure: truth along t_P with its sign set by the item's polarity (and
    no general direction). A single direction can serve one polarity and fails the other: every
    single-direction family gets at most about half the items (chance is 0.25); the truth and
    polarity probe, estimating each item's polarity from its shared state, gets them all."""
    train, test = polarised(300, 0, general=0.0), polarised(400, 1, general=0.0)
    single = {
        kind: make_probe(kind).fit(train, seed=0).predict(test).accuracy(test.answer_index)
        for kind in ("mc_linear", "logistic", "mass_mean", "lda", "lat")
    }
    assert max(single.values()) < 0.55, single
    subspace = make_probe("truth_polarity").fit(train, seed=0)
    assert subspace.predict(test).accuracy(test.answer_index) > 0.9
    # with a general direction too, it keeps working (and t_G is that direction)
    mixed = polarised(300, 0, general=2.0)
    fitted = make_probe("truth_polarity").fit(mixed, seed=0)
    assert fitted.predict(polarised(400, 1, general=2.0)).accuracy(test.answer_index) > 0.9


def mann_whitney_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """AUROC by its definition: the chance a positive outscores a negative (ties count half)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + ties / 2)


def test_choice_auroc_is_the_chance_a_true_choice_outscores_a_false_one():
    from truthprobe.choice_probs import choice_auroc

    rng = np.random.default_rng(0)
    n_choices = rng.integers(2, 5, size=200)
    probs = rng.random((200, 4)).round(2)  # rounding makes ties
    probs[np.arange(4) >= n_choices[:, None]] = 0.0  # padding, not choices
    answers = rng.integers(0, n_choices)
    real = np.arange(4) < n_choices[:, None]
    gold = np.arange(4) == answers[:, None]
    expected = mann_whitney_auc(probs[real & gold], probs[real & ~gold])
    assert choice_auroc(probs, n_choices, answers) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(choice_auroc(probs[:, :1], np.ones(200, int), np.zeros(200, int)))
