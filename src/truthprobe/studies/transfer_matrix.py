"""Cross-dataset transfer: probes trained on (dataset A, stratum s), tested on B's hard test set.

For every pair of tasks (A, B) and every stratum s of A, the sweep's validated probe trained on
A's pool s (every seed) at A's layer is scored on B's hard test items at the same layer (one
model, so one space). A diagonal cell (A = B) *is* the sweep's part; an off-diagonal one is that
part's stored probe applied to B's states (`Harness.run_transfers`). Each cell reports accuracy
with its interval, chance on B's test items (StrategyQA has 2 choices, ARC and MMLU 4-5: the
probe scores each choice and normalises over however many there are), SGR against B's zero-shot
floor with B's own hard-trained probe (at A's layer) as the ceiling, and recovered accuracy (A's
probe on B over B's own hard-trained probe on B), the measure published truth-probe
generalisation matrices use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from truthprobe.evaluate import TRAIN_ON
from truthprobe.harness import Harness
from truthprobe.methods.base import layer_name
from truthprobe.plots import plot_transfer_matrix
from truthprobe.results import recovered_cells, sgr_shown
from truthprobe.studies.planned import (
    PlannedStudy,
    PlannedStudyConfig,
    View,
    method_label,
    register,
)


@dataclass(frozen=True)
class TransferMatrixConfig(PlannedStudyConfig):
    """Probes trained on each task's easy / hard / all pool, tested on every task's hard test
    set."""

    kind: ClassVar[str] = "transfer_matrix"
    every_layer: bool = False
    """Also compute the matrix at every layer (rows with `chosen` false), and plot recovered
    accuracy per layer."""


def _layers(view: View, task: str) -> list[int]:
    config: TransferMatrixConfig = view.config  # type: ignore[assignment]
    chosen = view.layer(task)
    return view.family_layers(task) if config.every_layer else [chosen]


def plan(harness: Harness, view: View) -> None:
    """A's parts scored on every other task B, at A's layer (or every layer)."""
    for train_task in view.config.tasks:
        for layer in _layers(view, train_task):
            label = method_label(layer)
            draws = [d for s in TRAIN_ON for d in view.seeds_of(s)]
            for test_task in view.config.tasks:
                if test_task != train_task:
                    harness.run_transfers(train_task, label, draws, test_task)


def transfer_rows(view: View) -> list[dict]:
    """Every (train task, stratum, test task) cell at the training task's layer (and, with
    `every_layer`, at every layer: `chosen` marks the chosen one)."""
    rows: list[dict] = []
    for train_task in view.config.tasks:
        chosen = view.layer(train_task)
        for layer in _layers(view, train_task):
            for test_task in view.config.tasks:
                test = "" if test_task == train_task else test_task
                # the target's own hard-trained probe at this layer: the ceiling
                own = view.correct(test_task, layer, view.seeds_of("hard"))
                for s in TRAIN_ON:
                    correct = view.correct(train_task, layer, view.seeds_of(s), test)
                    rows.append(
                        dict(
                            train_task=train_task, train_on=s, test_task=test_task, layer=layer,
                            chosen=layer == chosen, **view.cell(test_task, correct, own),
                            **recovered_cells(correct, own, view.n_boot),
                        )
                    )  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    """The matrix as text: accuracy [CI] / chance, SGR, recovered accuracy per cell."""
    lines = [
        f"{'trained on':<28} {'tested on':<18} {'layer':>8} {'accuracy [95% CI]':>22} "
        f"{'chance':>6} {'zero-shot':>9} {'own hard':>8}  {'SGR':<22} recovered"
    ]
    for r in rows:
        if not r["chosen"]:
            continue
        lines.append(
            f"{r['train_task'] + ' ' + r['train_on']:<28} {r['test_task']:<18} "
            f"{layer_name(r['layer']):>8} "
            f"{r['accuracy']:.3f} [{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}] "
            f"{r['chance']:>6.3f} {r['zero_shot']:>9.3f} {r['own']:>8.3f}  "
            f"{sgr_shown(r):<22} {r['recovered']:.2f} [{r['recovered_low']:.2f}, "
            f"{r['recovered_high']:.2f}]"
        )
    return "\n".join(lines)


STUDY = register(
    PlannedStudy("transfer_matrix", TransferMatrixConfig, plan, transfer_rows, summary,
                 plot_transfer_matrix)
)  # fmt: skip
