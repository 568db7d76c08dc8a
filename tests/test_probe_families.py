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
from truthprobe.probes import PROBE_KINDS, choice_rows, make_probe, scorer_from_arrays


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
    assert {"lda", "lat", "random"} <= set(load_run(run_dir).summary["family"])
