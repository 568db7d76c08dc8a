"""Results from a run store, and the rules every table applies to them, each in one place.

`collect` reads a run's sweep parts into (test items, seeds) correctness per task, method family,
layer and training pool; `part_matrix` does the same for any list of parts (a study's cells).
The rules: the reported probe layer (`best_layer`: easy-trained probes' accuracy on the held-out
easy validation items, never the hard test set), chance (`chance_items`: 1 / choices per item),
the unsupervised floor (`floor`), and the cells of a table (`accuracy_cells`, `sgr_cells`
with the no-gap rule and SGR against chance where zero-shot falls below it,
`recovered_cells`). The report (`truthprobe.report`) and every study (`truthprobe.studies`)
call these; nothing else computes them.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from truthprobe.choice_probs import calibration_bins, choice_auroc, prediction_confidence
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import bootstrap_accuracy, bootstrap_ece, bootstrap_sgr
from truthprobe.runstore import PartKey, RunStore, read_json, weights_name

#: Unsupervised floors, in order of preference (free-form tasks have only the CoT one).
UNSUPERVISED = ("zero_shot", "zero_shot+cot")
NORMALISED = "zero_shot_norm"


@dataclass(frozen=True)
class TestItems:
    """Where a task's parts are and what its hard test items are: what reading a part's test
    probabilities needs."""

    store: RunStore
    rows: np.ndarray
    """The test items (rows of the task's items), ascending."""
    n_choices: np.ndarray
    answers: np.ndarray

    def probs(self, key: PartKey) -> np.ndarray | None:
        """(test items, choices) probabilities of a part, in `rows` order (None without)."""
        part = self.store.read(key)
        probs = part.arrays.get("probs")
        if probs is None:
            return None
        position = {int(r): i for i, r in enumerate(part.arrays["item"])}
        return probs[[position[int(r)] for r in self.rows]]


@dataclass
class FamilyResults:
    """Per-item test correctness of one method family of a task, keyed (layer, train_on)."""

    correct: dict[tuple[int, str], dict[int, np.ndarray]] = field(default_factory=dict)
    validation: dict[tuple[int, str], dict[int, float]] = field(default_factory=dict)
    info: dict[tuple[int, str], dict[int, dict]] = field(default_factory=dict)
    """Each part's `info` (probes: chosen setting, weight norm, collapse)."""
    keys: dict[tuple[int, str], dict[int, PartKey]] = field(default_factory=dict)
    """Each part's key: its probabilities are read when a table asks (`test_probs`), only for
    the layers it reports."""
    tests: TestItems | None = None
    seconds: float = 0.0
    weights: set[str] = field(default_factory=set)
    """`weights_name` of the model behind each part (one, unless a flag asked otherwise)."""

    def settings(self, layer: int, train_on: str | None = None) -> str:
        """The settings chosen at `layer` (all train_on unless given), with counts."""
        counts: dict[str, int] = defaultdict(int)
        for (at, on), by_seed in self.info.items():
            if at == layer and train_on in (None, on):
                for info in by_seed.values():
                    if "setting" in info:
                        counts[info["setting"]] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return "; ".join(f"{name} x{n}" for name, n in ranked)

    def collapsed(self, layer: int, train_on: str | None = None) -> tuple[int, int]:
        """(collapsed parts, parts) at `layer` (all train_on unless given)."""
        flags = [
            bool(info.get("collapsed", False))
            for (at, on), by_seed in self.info.items()
            if at == layer and train_on in (None, on)
            for info in by_seed.values()
        ]
        return sum(flags), len(flags)

    def matrix(self, layer: int, train_on: str) -> np.ndarray | None:
        """(test items, seeds) correctness, seeds in order; None if any draw is missing."""
        by_seed = self.correct.get((layer, train_on))
        if not by_seed:
            return None
        return np.stack([by_seed[s] for s in sorted(by_seed)], 1)

    def test_probs(self, layer: int, train_on: str) -> list[np.ndarray] | None:
        """Per seed (in order), the parts' (test items, choices) probabilities; None for
        methods without probabilities (generations) or where no part is stored."""
        by_seed = self.keys.get((layer, train_on))
        if not by_seed or self.tests is None:
            return None
        found = [self.tests.probs(by_seed[s]) for s in sorted(by_seed)]
        return None if any(p is None for p in found) else found  # type: ignore[return-value]

    def confidence_matrix(self, layer: int, train_on: str) -> np.ndarray | None:
        """(test items, seeds) probability of the predicted choice, as `matrix`."""
        probs = self.test_probs(layer, train_on)
        return None if probs is None else np.stack([prediction_confidence(p) for p in probs], 1)

    def mean_auroc(self, layer: int, train_on: str) -> float:
        """ROC-AUC of the parts at (layer, train_on) on the test items
        (`choice_probs.choice_auroc`), averaged over seeds (NaN without probabilities)."""
        probs, tests = self.test_probs(layer, train_on), self.tests
        if probs is None or tests is None:
            return float("nan")
        return float(np.mean([choice_auroc(p, tests.n_choices, tests.answers) for p in probs]))

    @property
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.correct})


@dataclass
class TaskResults:
    name: str
    slug: str
    """Safe file-name stem of the task (never a path)."""
    families: dict[str, FamilyResults]
    n_test: int
    chance: float = float("nan")
    """Expected accuracy of uniform guessing on the test items (mean of 1 / choices)."""
    chance_items: np.ndarray | None = None
    """Per test item 1 / choices: the floor of SGR against chance, resampled like the rest."""


def collect(run_dir: str | Path) -> list[TaskResults]:
    """Every stored part of a run, as test-set correctness per task and method family."""
    store = RunStore(run_dir)
    run_model = read_json(Path(run_dir) / "config.json")["model_fingerprint"]
    results = []
    for slug in store.task_slugs():
        task = store.task(slug)
        roles = np.array(task["items"]["role"])
        test_rows = np.flatnonzero(roles == "test")
        tests = TestItems(store, test_rows, np.asarray(task["items"]["n_choices"])[test_rows],
                          np.asarray(task["items"]["answer_index"])[test_rows])  # fmt: skip
        position = {int(r): i for i, r in enumerate(test_rows)}
        families: dict[str, FamilyResults] = defaultdict(partial(FamilyResults, tests=tests))
        for key in store.keys(slug, default_only=True):
            part = store.read(key)
            meta, items = part.meta, part.arrays["item"]
            correct = part.arrays["correct"].astype(np.float64)
            on_test = np.isin(items, test_rows)
            hits = np.full(len(test_rows), np.nan)
            hits[[position[int(r)] for r in items[on_test]]] = correct[on_test]
            if np.isnan(hits).any():
                raise TruthprobeError(
                    f"{store.path(key)}: scores {int(on_test.sum())} of the task's "
                    f"{len(test_rows)} test items; the run directory is inconsistent"
                )
            family = families[meta["family"]]
            slot = (int(meta["layer"]), key.train_on)
            family.correct.setdefault(slot, {})[key.seed] = hits
            family.info.setdefault(slot, {})[key.seed] = meta.get("info") or {}
            family.keys.setdefault(slot, {})[key.seed] = key
            validation = roles[items] == "validation"
            if validation.any():
                family.validation.setdefault(slot, {})[key.seed] = float(correct[validation].mean())
            family.seconds += float(meta["seconds"])
            family.weights.add(weights_name(meta.get("model") or run_model))
        chance = chance_items(np.asarray(task["items"]["n_choices"])[test_rows])
        mean_chance = float("nan") if chance is None else float(chance.mean())
        results.append(
            TaskResults(task["task"], slug, dict(families), len(test_rows), mean_chance, chance)
        )
    return results


def collect_tasks(run_dir: str | Path) -> list[dict]:
    """Every stored task description of a run (`task.json`)."""
    store = RunStore(run_dir)
    return [store.task(slug) for slug in store.task_slugs()]


def best_layer(family: FamilyResults) -> int:
    """The layer whose easy-trained probes do best on easy validation items (ties: lowest)."""
    scores = {
        layer: np.mean(list(family.validation[(layer, "easy")].values()))
        for layer in family.layers
        if (layer, "easy") in family.validation
    }
    if not scores:
        return family.layers[0]
    return max(scores, key=lambda layer: (scores[layer], -layer))


def accuracy_cells(matrix: np.ndarray, n_boot: int) -> dict:
    """Accuracy of a (test items, seeds) correctness matrix with its bootstrap interval."""
    interval = bootstrap_accuracy(matrix, n_boot)
    return dict(
        accuracy=interval.estimate,
        accuracy_low=interval.low,
        accuracy_high=interval.high,
        n_test=matrix.shape[0],
        n_seeds=matrix.shape[1] if matrix.ndim == 2 else 1,
    )


def sgr_cells(
    unsup: np.ndarray,
    easy: np.ndarray,
    hard: np.ndarray,
    n_boot: int,
    chance: np.ndarray | None = None,
) -> dict:
    """SGR of `easy` with `hard` as the supervised ceiling, paired over items and seeds
    (`SGRResult.to_dict`: SGR, the three accuracies and the denominator with intervals, the
    no-gap rule, the count of zero-denominator resamples), and `sgr_text` as printed. Where
    zero-shot is below chance (`chance`: 1 / choices per item), SGR against chance beside it
    (`sgr_vs_chance*`, `no_gap_vs_chance`); those fields are empty otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap_sgr(unsup, easy, hard, n_boot)
        below = chance is not None and float(np.mean(unsup)) < float(np.mean(chance))
        versus = bootstrap_sgr(chance, easy, hard, n_boot) if below else None
    cells = {**result.to_dict(), "sgr_text": result.text()}
    cells.update(
        sgr_vs_chance=versus.sgr.estimate if versus else float("nan"),
        sgr_vs_chance_low=versus.sgr.low if versus else float("nan"),
        sgr_vs_chance_high=versus.sgr.high if versus else float("nan"),
        no_gap_vs_chance=versus.no_gap if versus else "",
        sgr_vs_chance_text=versus.text() if versus else "",
    )
    return cells


def calibration_cells(
    confidence: np.ndarray | None, correct: np.ndarray, n_boot: int, pool: str = ""
) -> dict:
    """Calibration of (test items, seeds) predictions: expected calibration error with its
    bootstrap interval (`evaluate.bootstrap_ece`), and over-confidence (mean confidence minus
    accuracy: > 0 claims more than it gets right); keys `ece_<pool>`, `ece_<pool>_low`,
    `ece_<pool>_high`, `overconfidence_<pool>`. NaN for methods without probabilities."""
    tag = f"_{pool}" if pool else ""
    names = (f"ece{tag}", f"ece{tag}_low", f"ece{tag}_high", f"overconfidence{tag}")
    if confidence is None:
        return dict.fromkeys(names, float("nan"))
    interval = bootstrap_ece(confidence, correct, n_boot)
    values = (interval.estimate, interval.low, interval.high,
              float(np.mean(confidence) - np.mean(correct)))  # fmt: skip
    return dict(zip(names, values, strict=True))


def reliability_rows(confidence: np.ndarray, correct: np.ndarray, **labels: object) -> list[dict]:
    """A reliability diagram's rows (`choice_probs.calibration_bins` over items and seeds),
    each with `labels` (task, method, train_on) in front."""
    return [{**labels, **row} for row in calibration_bins(confidence, correct)]


def sgr_shown(row: dict) -> str:
    """A row's SGR as printed: `no gap` or `estimate [CI]`, and against chance where zero-shot
    fell below it."""
    versus = row.get("sgr_vs_chance_text")
    return row["sgr_text"] + (f" (vs chance: {versus})" if versus else "")


def recovered_cells(transfer: np.ndarray, own: np.ndarray, n_boot: int) -> dict:
    """Recovered accuracy: a probe's accuracy on a target as a share of the target's own
    probe's (the truth-probe generalisation literature's measure), paired bootstrap interval.
    It is SGR with a floor of 0, so the same bootstrap computes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap_sgr(np.zeros(len(transfer)), transfer, own, n_boot)
    return dict(
        recovered=result.sgr.estimate, recovered_low=result.sgr.low, recovered_high=result.sgr.high
    )


def chance_items(n_choices: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """Per item 1 / choices: uniform guessing's expected correctness (None for free-form
    items, which have no choices and so no chance)."""
    choices = np.asarray(n_choices, dtype=float)
    if not len(choices) or (choices == 0).any():
        return None
    return 1.0 / choices


def test_rows(task: dict) -> np.ndarray:
    """Rows (into a stored task's items) of its hard test set, ascending."""
    return np.flatnonzero(np.array(task["items"]["role"]) == "test")


def part_matrix(store: RunStore, keys: Sequence[PartKey], rows: np.ndarray) -> np.ndarray:
    """(len(rows), len(keys)) correctness of each part on `rows` (items of the task it
    scored), in the given order.

    Raises:
        TruthprobeError: a part is missing, or does not score every row (the message names it).
    """
    columns = []
    for key in keys:
        path = store.path(key)
        if not path.is_file():
            raise TruthprobeError(f"{path}: part missing; run the same command again to make it")
        part = store.read(key)
        position = {int(r): i for i, r in enumerate(part.arrays["item"])}
        if any(int(r) not in position for r in rows):
            raise TruthprobeError(f"{path}: does not score every item the table needs")
        correct = part.arrays["correct"].astype(np.float64)
        columns.append(correct[[position[int(r)] for r in rows]])
    return np.stack(columns, 1)


def floor(task: TaskResults) -> str | None:
    """The task's unsupervised method (zero-shot; zero-shot CoT for free-form tasks)."""
    return next((f for f in UNSUPERVISED if f in task.families), None)
