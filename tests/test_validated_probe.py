"""The validated probe through the probe method, on planted states (no model): its setting is
chosen on easy validation items only, collapse is flagged, and mid+last reads two layers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_probes import weak_signal

from truthprobe.evaluate import SplitConfig, make_split
from truthprobe.methods.base import MID_LAST, MethodContext, mid_last
from truthprobe.methods.probe import ProbeAtLayer
from truthprobe.probes import ProbeData


class PlantedStates:
    """Stands in for a task's cached states: every layer holds the same planted data."""

    def __init__(self, data: ProbeData) -> None:
        self.data = data

    def probe_data(self, layer: int) -> ProbeData:
        return self.data


def planted_task(answers_of_test: str = "true", n: int = 1200):
    """A task over planted items: strata alternate easy / hard; test labels true or shuffled."""
    data, direction = weak_signal(n, 0, strength=1.2)
    strata = ["easy" if i % 2 else "hard" for i in range(n)]
    split = make_split(strata, SplitConfig(n_train=200, seeds=2, validation_size=150))
    answers = np.array(data.answer_index)
    if answers_of_test == "shuffled":
        answers[split.test] = np.random.default_rng(5).permutation(answers[split.test])
    data = ProbeData(data.ids, data.states, data.mask, answers)
    task = SimpleNamespace(name="planted:test", split=split, ids=data.ids, answers=answers)
    return task, PlantedStates(data), direction


def run_all(method: ProbeAtLayer, task, states, tmp_path):
    ctx = MethodContext(task, models=None, states=states, run_dir=tmp_path, progress=False)
    draws = [(task.split.train_rows(t, s), s) for t in ("easy", "hard") for s in range(2)]
    method.prepare(ctx, draws)
    return [method.run(ctx, rows, seed) for rows, seed in draws]


def test_the_chosen_setting_never_depends_on_test_labels(tmp_path):
    task, states, _ = planted_task("true")
    shuffled_task, shuffled_states, _ = planted_task("shuffled")
    a = run_all(ProbeAtLayer("mc_linear", 3), task, states, tmp_path)
    b = run_all(ProbeAtLayer("mc_linear", 3), shuffled_task, shuffled_states, tmp_path)
    assert [o.info["setting"] for o in a] == [o.info["setting"] for o in b]
    assert len({o.info["setting"] for o in a}) >= 1
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.probe["probe_weight"], y.probe["probe_weight"])
        assert x.info["validation_by_setting"] == y.info["validation_by_setting"]
        np.testing.assert_array_equal(x.probs, y.probs)  # the same predictions ...
    n_test = len(task.split.test)
    assert any((x.correct[:n_test] != y.correct[:n_test]).any() for x, y in zip(a, b, strict=True))
    # ... scored against other labels: the shuffle reached the test items and nothing else


def test_collapse_is_flagged_where_probabilities_are_near_uniform(tmp_path):
    task, states, direction = planted_task("true")
    presets = ("validated", "paper")
    paper = run_all(ProbeAtLayer("mc_linear", 3, "paper", presets), task, states, tmp_path)
    validated = run_all(ProbeAtLayer("mc_linear", 3, "validated", presets), task, states, tmp_path)
    assert all(o.info["collapsed"] and o.info["weight_norm"] < 0.05 for o in paper)
    assert all(o.info["setting"] == "l2=1 steps=100" for o in paper)
    for o in paper + validated:
        assert o.info["collapsed"] == (o.info["uniform_margin"] < 0.02)
    margins = [np.mean([o.info["uniform_margin"] for o in parts]) for parts in (paper, validated)]
    assert margins[1] > 10 * margins[0]
    for o in validated:  # the validated direction is the planted one (200 items, d = 64)
        w = o.probe["probe_weight"] / o.probe["probe_std"]
        assert abs(w @ direction) / np.linalg.norm(w) > 0.8


def test_the_paper_preset_alone_fits_only_its_setting_and_the_grid_holds_it():
    alone = ProbeAtLayer("mc_linear", 3, "paper", ("paper",))
    beside = ProbeAtLayer("mc_linear", 3, "validated", ("validated", "paper"))
    validated = ProbeAtLayer("mc_linear", 3, "validated", ("validated",))
    assert len(alone.pool) == 1 and alone.pool[0] in beside.pool
    assert beside.pool == validated.pool  # validated numbers do not depend on paper running


@pytest.mark.parametrize("layers, expected", [((0, 1, 2), (1, 2)), (tuple(range(19)), (9, 18))])
def test_mid_last_are_the_papers_middle_and_last_hidden_states(layers, expected):
    assert mid_last(layers) == expected
    assert MID_LAST < 0 and MID_LAST != -1  # never a real layer, never "no layer"
