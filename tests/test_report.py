"""The report's choices, on hand-made results: the layer is chosen on validation items only."""

from __future__ import annotations

import numpy as np

from truthprobe.results import FamilyResults, best_layer


def test_best_layer_is_chosen_on_validation_not_test():
    family = FamilyResults()
    for layer, test_acc, val_acc in ((1, 0.9, 0.4), (2, 0.3, 0.8), (3, 0.5, 0.5)):
        for seed in range(2):
            for train_on in ("easy", "hard"):
                family.correct.setdefault((layer, train_on), {})[seed] = np.full(10, test_acc)
                # hard-trained validation scores are high everywhere: they must not count
                validation = val_acc if train_on == "easy" else 1.0 - val_acc
                family.validation.setdefault((layer, train_on), {})[seed] = validation
    assert best_layer(family) == 2


def test_ties_go_to_the_lowest_layer():
    family = FamilyResults()
    for layer in (4, 2, 7):
        family.correct[(layer, "easy")] = {0: np.ones(3)}
        family.validation[(layer, "easy")] = {0: 0.5}
    assert best_layer(family) == 2


def test_part_keys_round_trip_through_their_file_names():
    """Every cell a command computes has one file name, and the name gives the key back."""
    from truthprobe.runstore import PartKey

    keys = [
        PartKey("arc-grade", "mc_linear@9", "easy", 3),
        PartKey("arc-grade", "zero_shot", "none", 0),
        PartKey("arc-grade", "mc_linear@mid+last", "hard", 1, n_train=40),
        PartKey("arc-grade", "mc_linear@9", "hard", 4, noise=0.3),
        PartKey("arc-grade", "mc_linear@9", "all", 0, n_train=80, noise=0.05, test="mmlu-level"),
        PartKey(
            "arc-difficulty", "mc_linear@2", "level=3", 2, 80, 0.0, "arc-difficulty~level=1-test"
        ),
        PartKey("arc-grade", "mc_linear@9", "easy-disjoint-0a", 0),
    ]
    for key in keys:
        relative = key.relative().relative_to(key.task)
        assert PartKey.from_path(key.task, relative) == key
    assert [k.is_default for k in keys] == [True, True, False, False, False, False, False]
    assert len({k.relative() for k in keys}) == len(keys)


def test_sgr_bars_lay_out_when_every_row_reads_no_gap(tmp_path):
    """With no bar to fit, the axis spans the tasks anyway: the "no gap" words and a file task's
    long name fit (matplotlib warns, and crops, when they do not)."""
    import warnings

    from truthprobe.plots import plot_sgr_bars

    task = "/tmp/some/deep/folder/of/data/arc-sample.jsonl:grade"
    rows = [dict(task=task, method=m, no_gap=True, sgr=np.nan, sgr_low=np.nan, sgr_high=np.nan)
            for m in ("logistic", "mc_linear")]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_sgr_bars(rows, tmp_path / "bars.png", "SGR on the hard test sets (a model)")
    assert path.is_file() and path.with_suffix(".pdf").is_file()
