"""Probes on synthetic data with a planted direction, and determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.probes import PROBE_KINDS, ProbeData, make_probe


def planted(n: int, seed: int, shuffle_labels: bool = False, d: int = 64, c: int = 4):
    """Items whose correct choice is shifted along a fixed direction; ragged choice counts."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=d)
    direction /= np.linalg.norm(direction)
    states = rng.normal(size=(n, c, d)).astype(np.float32)
    states += rng.normal(size=(n, 1, d)).astype(np.float32) * 3  # shared per-question part
    mask = np.ones((n, c), bool)
    mask[::5, -1] = False  # every fifth item has only 3 choices
    answers = np.array([rng.integers(0, m.sum()) for m in mask])
    states[np.arange(n), answers] += 4 * direction.astype(np.float32)
    if shuffle_labels:
        answers = np.array([rng.integers(0, m.sum()) for m in mask])
    return ProbeData(tuple(f"q{seed}-{i}" for i in range(n)), states, mask, answers)


@pytest.mark.parametrize("kind", ["mc_linear", "logistic", "mass_mean"])
def test_planted_direction_makes_a_supervised_probe_near_perfect(kind):
    fitted = make_probe(kind).fit(planted(160, 0), seed=0)
    test = planted(400, 1)
    assert fitted.predict(test).accuracy(test.answer_index) > 0.95


@pytest.mark.parametrize("kind", ["mc_linear", "logistic", "mass_mean"])
def test_shuffled_labels_give_chance(kind):
    fitted = make_probe(kind).fit(planted(160, 0, shuffle_labels=True), seed=0)
    test = planted(400, 1)
    assert fitted.predict(test).accuracy(test.answer_index) < 0.4  # chance is ~0.27


def test_ccs_finds_the_planted_direction_without_labels():
    """CCS never sees labels: shuffling them must not change what it learns."""
    fitted = make_probe("ccs").fit(planted(160, 0), seed=0)
    shuffled = make_probe("ccs").fit(planted(160, 0, shuffle_labels=True), seed=0)
    test = planted(400, 1)
    a, b = fitted.predict(test), shuffled.predict(test)
    np.testing.assert_array_equal(a.probs, b.probs)
    accuracy = a.accuracy(test.answer_index)
    assert accuracy > 0.9 or accuracy < 0.1  # CCS recovers the direction up to its sign


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_probe_is_deterministic_given_a_seed(kind):
    train, test = planted(120, 0), planted(50, 1)
    a = make_probe(kind).fit(train, seed=7).predict(test)
    b = make_probe(kind).fit(train, seed=7).predict(test)
    np.testing.assert_array_equal(a.probs, b.probs)


def test_predictions_respect_the_choice_mask():
    probs = make_probe("mc_linear").fit(planted(160, 0), 0).predict(planted(50, 1))
    assert np.all(probs.probs[~probs.mask] == 0)
    np.testing.assert_allclose(probs.probs.sum(1), 1.0)


def test_choice_probs_from_scores():
    probs = ChoiceProbs.from_scores(
        ["a", "b"],
        np.array([[0.0, np.log(3), 5.0], [1.0, 1.0, 0.0]]),
        np.array([[True, True, False], [True, True, True]]),
    )
    np.testing.assert_allclose(probs.probs[0], [0.25, 0.75, 0.0])
    assert list(probs.predictions()) == [1, 0]
    assert probs.accuracy(np.array([1, 1])) == 0.5


def _autograd_fit(probe, x, mask, y, seed, l2, clip):
    """The textbook implementation (autograd, torch.optim.SGD, LinearLR, clip_grad_norm_),
    stopped after `probe.steps` steps of the `probe.epochs`-step schedule."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    d = x.shape[-1]
    w = (torch.rand(d, generator=generator) * 2 - 1) / np.sqrt(d)
    w.requires_grad_(True)
    optimizer = torch.optim.SGD([w], lr=probe.lr)
    schedule = torch.optim.lr_scheduler.LinearLR(
        optimizer, 1.0, probe.final_lr_fraction, total_iters=max(1, probe.epochs - 1)
    )
    for _ in range(probe.steps):
        optimizer.zero_grad()
        logits = (x @ w).masked_fill(~mask, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, y)
        norm = w.pow(2).sum() if probe.l2_squared else w.norm()
        (loss + l2 * norm).backward()
        torch.nn.utils.clip_grad_norm_([w], clip)
        optimizer.step()
        schedule.step()
    return w.detach().numpy()


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("l2, clip", [(1.0, 1.0), (0.01, 1.0), (0.01, 0.05)])
def test_closed_form_sgd_equals_autograd(squared, l2, clip):
    """The probe's hand-written gradient steps are the textbook autograd steps."""
    import torch

    from truthprobe.probes import MultipleChoiceLinearProbe, _sgd

    rng = np.random.default_rng(3)
    n, c, d = 120, 5, 64
    x = torch.from_numpy(rng.normal(size=(n, c, d)).astype(np.float32))
    mask = torch.from_numpy(np.arange(c)[None, :] < rng.integers(2, c + 1, n)[:, None])
    y = torch.from_numpy(np.array([rng.integers(0, m) for m in mask.sum(1).numpy()]))
    probe = MultipleChoiceLinearProbe(l2_squared=squared)
    w0 = (torch.rand(d, generator=torch.Generator().manual_seed(7)) * 2 - 1) / np.sqrt(d)
    fast = _sgd(
        probe, x[None], mask[None], y[None], w0[None, None],
        torch.tensor([[l2]]), torch.tensor([[clip]]), [probe.epochs], [[probe.epochs]],
    )[0, probe.epochs][0].numpy()  # fmt: skip
    slow = _autograd_fit(probe, x, mask, y, seed=7, l2=l2, clip=clip)
    assert np.abs(fast - slow).max() <= 1e-5 * max(1.0, np.abs(slow).max())
    if l2 < 1:  # (the paper's l2 = 1 collapses here to |w| ~ 4e-4: still compared, above)
        assert np.abs(slow).max() > 1e-2


def _raw_direction(scorer) -> np.ndarray:
    """A fitted linear probe's direction in the space of the states it was given."""
    direction = scorer.weight / scorer.standardizer.std
    return direction / np.linalg.norm(direction)


def test_a_grid_fitted_together_equals_each_setting_fitted_alone():
    from truthprobe.probes import fit_linear_grid, preset_probes

    grid = preset_probes("mc_linear", "validated")
    trains = [planted(100, 0), planted(100, 1), planted(100, 2)]
    together = fit_linear_grid(grid, trains, [0, 1, 2])
    for s, train in enumerate(trains):
        for g, probe in enumerate(grid):
            alone = probe.fit(train, s).weight
            # a collapsed fit (|w| ~ 0) hops around 0 by ~lr: rounding decides where it stops
            atol = 1e-6 if np.linalg.norm(alone) > 0.1 else 1e-3
            np.testing.assert_allclose(together[s][g].weight, alone, rtol=1e-5, atol=atol)
    # a draw's fit does not depend on the other draws fitted with it
    again = fit_linear_grid(grid, trains[1:2], [1])[0]
    for g in range(len(grid)):
        np.testing.assert_array_equal(again[g].weight, together[1][g].weight)


def weak_signal(n: int, seed: int, strength: float = 0.8, d: int = 64, c: int = 4):
    """Independent choices, the correct one shifted a little along a planted direction."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).normal(size=d)
    direction /= np.linalg.norm(direction)
    states = rng.normal(size=(n, c, d)).astype(np.float32)
    answers = rng.integers(0, c, n)
    states[np.arange(n), answers] += (strength * direction).astype(np.float32)
    mask = np.ones((n, c), bool)
    return ProbeData(tuple(f"w{seed}-{i}" for i in range(n)), states, mask, answers), direction


def test_the_validated_probe_recovers_a_weak_direction_where_the_paper_preset_collapses():
    from truthprobe.probes import choose, fit_many, preset_probes

    train, direction = weak_signal(3000, 0)
    validation, _ = weak_signal(400, 1)
    test, _ = weak_signal(2000, 2)
    paper = make_probe("mc_linear").fit(train, seed=0)
    paper_probs = paper.predict(test)
    assert paper_probs.uniform_margin() < 0.02  # collapsed: probabilities near uniform
    assert np.linalg.norm(paper.weight) < 0.05
    grid = preset_probes("mc_linear", "validated")
    fits = fit_many(grid, [train], [0])[0]
    best, accuracies = choose(fits, validation)
    chosen = fits[best]
    assert grid[best].l2 < 1.0 and accuracies[best] == max(accuracies)
    assert abs(_raw_direction(chosen) @ direction) > 0.95
    assert chosen.predict(test).accuracy(test.answer_index) > 0.4  # chance 0.25


def test_early_stopping_reads_the_same_run_partway():
    """`stop=50` is the first 50 steps of the 100-step schedule, as the textbook loop gives."""
    import torch

    from truthprobe.probes import MultipleChoiceLinearProbe

    train = planted(120, 0)
    probe = MultipleChoiceLinearProbe(l2=0.01, stop=50)
    fitted = probe.fit(train, seed=3)
    x = torch.from_numpy(fitted.standardizer(train.states))
    slow = _autograd_fit(
        probe, x, torch.from_numpy(train.mask), torch.from_numpy(train.answer_index), 3, 0.01, 1.0
    )
    assert np.abs(fitted.weight - slow).max() <= 1e-5 * max(1.0, np.abs(slow).max())
    full = MultipleChoiceLinearProbe(l2=0.01).fit(train, seed=3)
    assert not np.allclose(fitted.weight, full.weight)
