"""Cross-dataset transfer: probes trained on (dataset A, stratum s), tested on B's hard test set.

For every pair of tasks (A, B) and every stratum s of A, the validated probe is trained on A's
pool s (n_train items, every seed) at A's layer and scored on B's hard test items at the same
layer (one model, so one space). Each cell reports accuracy with its interval, chance on B's
test items (StrategyQA has 2 choices, ARC and MMLU 4-5: the probe scores each choice and
normalises over however many there are), SGR against B's zero-shot floor with B's own
hard-trained probe (at A's layer) as the ceiling, and recovered accuracy (A's probe on B over
B's own hard-trained probe on B), the measure published truth-probe generalisation matrices use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from truthprobe.evaluate import TRAIN_ON
from truthprobe.plots import plot_transfer_matrix
from truthprobe.studies.base import (
    Study,
    TasksStudyConfig,
    recovered_cells,
    run_with,
    scored,
    sgr_shown,
)
from truthprobe.studies.fits import hits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferMatrixConfig(TasksStudyConfig):
    """Train on each task's easy / hard / all pool, test on every task's hard test set."""

    every_layer: bool = False
    """Also compute the matrix at every layer (rows with `chosen` false), and plot recovered
    accuracy per layer."""


def run_study(config: TransferMatrixConfig) -> str:
    """Run the study, store it; returns what the command prints."""
    return run_with("transfer_matrix", config, transfer_rows, summary, plot_transfer_matrix)


def transfer_rows(study: Study) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every (train task, stratum, test task) cell at the training task's layer (and, with
    `every_layer`, at every layer: `chosen` marks the chosen one); per-item correctness keyed
    by cell."""
    config: TransferMatrixConfig = study.config  # type: ignore[assignment]
    rows: list[dict] = []
    items: dict[str, np.ndarray] = {}
    for train_task, source in study.sources.items():
        chosen = study.layer(train_task)
        for layer in source.layers if config.every_layer else (chosen,):
            rows += _cells(study, train_task, layer, layer == chosen, items)
    return rows, items


def _cells(
    study: Study, train_task: str, layer: int, chosen: bool, items: dict[str, np.ndarray]
) -> list[dict]:
    source = study.sources[train_task]
    fitted = {s: study.fit(train_task, source.pools[s], s, layer) for s in TRAIN_ON}
    rows = []
    for test_task, target in study.sources.items():
        if test_task == train_task:
            own_fitted = fitted["hard"]
        else:  # the target's own hard-trained probe at this layer: the ceiling
            own_fitted = study.fit(test_task, target.pools["hard"], "hard", layer)
        test = target.at(layer).take(target.test)
        own = hits(own_fitted, test)
        for s in TRAIN_ON:
            correct = hits(fitted[s], test)
            items[f"{train_task}|{s}|{test_task}|{layer}"] = correct.astype(np.uint8)
            rows.append(
                dict(
                    train_task=train_task, train_on=s, test_task=test_task, layer=layer,
                    chosen=chosen, **scored(study, target, target.test, correct, own),
                    **recovered_cells(correct, own, study.n_boot),
                )
            )  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    """The matrix as text: accuracy [CI] / chance, SGR, recovered accuracy per cell."""
    lines = [
        f"{'trained on':<28} {'tested on':<18} {'layer':>5} {'accuracy [95% CI]':>22} "
        f"{'chance':>6} {'zero-shot':>9} {'own hard':>8}  {'SGR':<22} recovered"
    ]
    for r in rows:
        if not r["chosen"]:
            continue
        lines.append(
            f"{r['train_task'] + ' ' + r['train_on']:<28} {r['test_task']:<18} {r['layer']:>5} "
            f"{r['accuracy']:.3f} [{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}] "
            f"{r['chance']:>6.3f} {r['zero_shot']:>9.3f} {r['own']:>8.3f}  "
            f"{sgr_shown(r):<22} {r['recovered']:.2f} [{r['recovered_low']:.2f}, "
            f"{r['recovered_high']:.2f}]"
        )
    return "\n".join(lines)
