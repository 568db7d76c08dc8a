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
