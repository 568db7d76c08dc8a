"""Transfer studies, known answers on planted states (no model): a direction shared by two
datasets transfers through stored probe arrays, an orthogonal one gives chance; label noise
lowers agreement as a clean probe's confusion predicts; the one draw rule is nested; hardness
levels that share a direction transfer across the gap and those that do not sit at chance."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from truthprobe.evaluate import TRAIN_ON, EvalSplit, EvaluationError, SplitConfig, noisy_labels
from truthprobe.probes import ProbeData, choose, fit_many, preset_probes, scorer_from_arrays
from truthprobe.results import accuracy_cells, chance_items, recovered_cells
from truthprobe.studies.hardness_gap import HardnessGapConfig, levels

D = 48


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass
class Planted:
    """Items whose correct choice is shifted along a direction: what a task's cache holds at
    one layer, with the task's test / validation rows and easy / hard / all pools."""

    data: ProbeData
    test: np.ndarray
    validation: np.ndarray
    pools: dict[str, np.ndarray]
    levels: np.ndarray

    @property
    def n_choices(self) -> np.ndarray:
        return self.data.mask.sum(1)


def planted_source(
    task: str,
    directions: list[np.ndarray],
    n: int = 1400,
    choices: int = 4,
    strength: float = 3.0,
    seed: int = 0,
) -> Planted:
    """Item i uses `directions[i % len(directions)]` and has level (i % len) + 1. Rows 0-299
    are the hard test set, 300-399 easy validation, and the rest alternate easy / hard pools."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, choices, D)).astype(np.float32)
    answers = rng.integers(0, choices, n)
    for i in range(n):
        states[i, answers[i]] += strength * directions[i % len(directions)]
    ids = tuple(f"{task}-{i}" for i in range(n))
    data = ProbeData(ids, states, np.ones((n, choices), bool), answers)
    rest = np.arange(400, n)
    easy, hard = rest[rest % 2 == 0], rest[rest % 2 == 1]
    levels_ = np.array([(i % len(directions)) + 1 for i in range(n)], float)
    pools = {"easy": easy, "hard": hard, "all": rest}
    return Planted(data, np.arange(300), np.arange(300, 400), pools, levels_)


def fit_draws(source: Planted, draws, seeds, labels=None) -> list:
    """The validated probe on each draw, its setting chosen on the easy validation items: what
    `ProbeAtLayer` fits for a part (`labels`: noisy answers to train on)."""
    trains = [source.data.take(rows) for rows in draws]
    if labels is not None:
        trains = [ProbeData(t.ids, t.states, t.mask, np.asarray(a))
                  for t, a in zip(trains, labels, strict=True)]  # fmt: skip
    validation = source.data.take(source.validation)
    fitted = fit_many(preset_probes("mc_linear", "validated"), trains, list(seeds))
    return [grid[choose(grid, validation)[0]] for grid in fitted]


def hits(fitted, test: ProbeData) -> np.ndarray:
    """(test items, draws) correctness of each fitted probe."""
    return np.stack([f.predict(test).correct(test.answer_index) for f in fitted], 1).astype(float)


def transferred(source: Planted, target: Planted, train_on: str) -> np.ndarray:
    """What `Harness.run_transfers` computes: the probe fitted on `source`'s pool, stored as
    arrays, rebuilt and scored on `target`'s test items; (items, seeds) correctness."""
    pool = source.pools[train_on]
    draws = [np.sort(np.random.default_rng(s).permutation(pool)[:160]) for s in range(5)]
    fitted = fit_draws(source, draws, list(range(5)))
    rebuilt = [scorer_from_arrays("mc_linear", f.arrays()) for f in fitted]
    return hits(rebuilt, target.data.take(target.test))


def test_a_direction_shared_by_two_datasets_transfers_and_an_orthogonal_one_does_not():
    rng = np.random.default_rng(1)
    shared = unit(rng.normal(size=D))
    other = unit(rng.normal(size=D))
    other = unit(other - (other @ shared) * shared)  # orthogonal to the shared direction
    # StrategyQA-like: 2 choices; the multiple-choice probe normalises over each item's own
    for second, transfers in ((shared, True), (other, False)):
        arc = planted_source("arc:grade", [shared], choices=4, seed=2)
        sqa = planted_source("strategyqa:steps", [second], choices=2, seed=3)
        assert chance_items(sqa.n_choices[sqa.test]).mean() == 0.5
        for s in TRAIN_ON:
            own = transferred(arc, arc, s)
            assert own.mean() > 0.9  # own data: the planted signal
            a_on_b, b_on_a = transferred(arc, sqa, s), transferred(sqa, arc, s)
            if transfers:
                assert a_on_b.mean() > 0.9 and b_on_a.mean() > 0.9
                recovered = recovered_cells(a_on_b, transferred(sqa, sqa, "hard"), 500)
                assert recovered["recovered"] == pytest.approx(1.0, abs=0.06)
            else:  # chance on the other dataset: within its interval
                for matrix, chance in ((a_on_b, 0.5), (b_on_a, 0.25)):
                    cells = accuracy_cells(matrix, 500)
                    assert cells["accuracy_low"] <= chance <= cells["accuracy_high"]


def test_noise_replaces_exactly_p_of_the_labels_with_a_wrong_choice():
    answers = np.random.default_rng(0).integers(0, 4, 1000)
    n_choices = np.full(1000, 4)
    for p in (0.0, 0.1, 0.3, 0.5, 1.0):
        noisy, flipped = noisy_labels(answers, n_choices, p, seed=3)
        assert flipped.sum() == round(p * 1000)
        assert (noisy[flipped] != answers[flipped]).all()  # a *wrong* choice, never the gold
        assert (noisy[~flipped] == answers[~flipped]).all()
        assert ((noisy >= 0) & (noisy < 4)).all()
        # a probe that agrees with the clean labels scores exactly 1 - p against the noisy ones
        assert (answers == noisy).mean() == pytest.approx(1 - p)
    two, flipped = noisy_labels(answers % 2, np.full(1000, 2), 0.5, seed=3)
    assert (two[flipped] == 1 - answers[flipped] % 2).all()  # two choices: the other one


def test_noise_lowers_agreement_as_a_clean_probes_confusion_predicts():
    """A clean probe with accuracy a on k choices agrees with labels of noise p at rate
    a (1 - p) + (1 - a) p / (k - 1): right answers stay right where not flipped, and a wrong
    prediction matches a flipped label with chance 1 / (k - 1)."""
    source = planted_source("arc:grade", [unit(np.ones(D))], n=6000, strength=0.9, seed=5)
    data = source.data
    fitted = fit_draws(source, [source.pools["easy"]], [0])
    predicted = fitted[0].predict(data).predictions()
    a = float((predicted == data.answer_index).mean())
    assert 0.4 < a < 0.9  # a probe that is neither perfect nor guessing
    for p in (0.1, 0.3, 0.5):
        noisy, _ = noisy_labels(data.answer_index, source.n_choices, p, seed=7)
        expected = a * (1 - p) + (1 - a) * p / 3
        assert (predicted == noisy).mean() == pytest.approx(expected, abs=0.02)


def test_noisy_hard_training_falls_toward_chance_and_clean_easy_does_not():
    source = planted_source("arc:grade", [unit(np.ones(D))], n=2400, strength=1.2, seed=6)
    data, test = source.data, source.data.take(source.test)
    easy = hits(fit_draws(source, [source.pools["easy"][:160]], [0]), test).mean()
    hard = {}
    for p in (0.0, 0.5, 0.9):
        rows = source.pools["hard"][:160]
        labels = noisy_labels(data.answer_index[rows], source.n_choices[rows], p, seed=0)[0]
        hard[p] = hits(fit_draws(source, [rows], [0], labels=[labels]), test).mean()
    assert hard[0.0] == pytest.approx(easy, abs=0.05)
    # at p = 0.9 on 4 choices, gold is the label of 10% and each wrong choice of 30%: the
    # probe learns to avoid the planted direction and falls below chance
    assert hard[0.0] > hard[0.5] > hard[0.9] and hard[0.9] < 0.25


def test_draws_are_nested_seeded_and_the_sweeps_own():
    """The one draw rule (`EvalSplit.train_rows`): a smaller draw is inside every larger one
    of the same seed, so a learning curve's point at n_train is the sweep's draw."""
    pools = {"easy": np.arange(1000, 1500), "hard": np.arange(1500, 1700), "all": np.arange(2000)}
    split = EvalSplit(np.arange(10), np.arange(10, 20), pools, SplitConfig(n_train=160))
    for seed in range(3):
        draws = {n: split.train_rows("easy", seed, n) for n in (10, 20, 40, 80, 160, 320)}
        sizes = sorted(draws)
        for small, large in zip(sizes, sizes[1:], strict=False):
            assert set(draws[small]) <= set(draws[large])
        assert all(len(set(draws[n])) == n and set(draws[n]) <= set(pools["easy"]) for n in sizes)
        assert (split.train_rows("easy", seed) == draws[160]).all()  # the sweep's draw
        # ... and the draw every release made before draws were nested: stored runs keep it
        rng = np.random.default_rng([0, seed, TRAIN_ON.index("easy")])
        assert (np.sort(rng.choice(pools["easy"], 160, replace=False)) == draws[160]).all()
    assert set(split.train_rows("easy", 0, 40)) != set(split.train_rows("easy", 1, 40))
    with pytest.raises(EvaluationError, match="hard pool has 200 items, 320 requested"):
        split.train_rows("hard", 0, 320)


def test_learning_curves_rise_with_n():
    source = planted_source("arc:grade", [unit(np.ones(D))], n=1400, strength=0.8, seed=8)
    split = EvalSplit(source.test, source.validation, source.pools, SplitConfig())
    test, seeds = source.data.take(source.test), list(range(5))
    for train_on in TRAIN_ON:
        small, large = (
            hits(fit_draws(source, [split.train_rows(train_on, s, n) for s in seeds], seeds),
                 test).mean()
            for n in (10, 320)
        )  # fmt: skip
        assert large > small + 0.05


def test_levels_that_share_a_direction_transfer_across_the_gap_and_others_sit_at_chance(
    monkeypatch,
):
    """Levels 1 and 2 share a direction, level 3 has its own (orthogonal). The study's level
    division (test half, pool, validation kept out), then level pools drawn by the one draw
    rule, as the plan asks the harness."""
    from truthprobe.studies import hardness_gap

    rng = np.random.default_rng(4)
    u = unit(rng.normal(size=D))
    v = unit(rng.normal(size=D))
    v = unit(v - (v @ u) * u)
    source = planted_source("arc:grade", [u, u, v], n=3000, strength=3.0, seed=9)
    monkeypatch.setattr(hardness_gap, "hardness_values", lambda records, measure: source.levels)
    task = SimpleNamespace(
        records=range(3000), spec=SimpleNamespace(measure="grade"),
        split=SimpleNamespace(validation=source.validation, test=np.array([], int),
                              pools={"hard": np.array([], int)}),  # no level is the hard stratum
    )  # fmt: skip
    config = HardnessGapConfig(tasks=("arc:grade",), layer=0)
    found = levels(task, config)["levels"]  # type: ignore[arg-type]
    assert [lv["value"] for lv in found] == [1, 2, 3] and not levels(task, config)["note"]
    for lv in found:
        assert not set(lv["test"]) & set(lv["pool"]) and not set(lv["test"]) & set(range(300, 400))
        assert len(lv["test"]) == 250 and (source.levels[lv["pool"]] == lv["value"]).all()
    pools = {f"level={lv['value']:g}": lv["pool"] for lv in found}
    pools["levels-upto-1"] = found[0]["pool"]
    pools["levels-upto-3"] = np.concatenate([lv["pool"] for lv in found])
    split = EvalSplit(source.test, source.validation, pools, config.split)
    seeds = list(range(5))

    def accuracy(pool: str, test: dict) -> dict:
        fitted = fit_draws(source, [split.train_rows(pool, s) for s in seeds], seeds)
        return accuracy_cells(hits(fitted, source.data.take(test["test"])), 500)

    one, two, three = found
    assert accuracy("level=1", two)["accuracy"] > 0.9 and accuracy("level=2", one)["accuracy"] > 0.9
    for pool, test in (("level=1", three), ("level=3", one), ("level=2", three)):
        cell = accuracy(pool, test)
        assert cell["accuracy_low"] <= 0.25 <= cell["accuracy_high"]
    window_1, window_3 = accuracy("levels-upto-1", three), accuracy("levels-upto-3", three)
    assert window_1["accuracy"] < 0.4  # levels <= 1 lack level 3's direction
    # levels <= 3 include it (a third of the 80 draws): far above, though below level 3's own
    assert window_3["accuracy"] > window_1["accuracy"] + 0.3
    assert window_3["accuracy"] <= accuracy("level=3", three)["accuracy"]


def test_hits_are_per_item_and_per_draw():
    source = planted_source("arc:grade", [unit(np.ones(D))], n=800, seed=10)
    fitted = fit_draws(source, [source.pools["easy"][:100], source.pools["hard"][:100]], [0, 1])
    matrix = hits(fitted, source.data.take(source.test))
    assert matrix.shape == (300, 2) and set(np.unique(matrix)) <= {0.0, 1.0}
