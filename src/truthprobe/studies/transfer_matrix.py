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

Leave-one-dataset-out rows (`--leave-one-out`, on where three or more datasets are given): for
each task B, a probe trained on every other dataset's items pooled (`truthprobe.pooled`: equal
shares per dataset, each pool easy / hard / all) at that pooled task's own chosen layer, tested
on every task; its cell on B (`held_out`) is the universal-probe question: does a direction
learned on other datasets find truth in one it never saw?
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from truthprobe.evaluate import TRAIN_ON
from truthprobe.harness import Harness, HarnessConfig
from truthprobe.methods.base import layer_name
from truthprobe.plots import plot_transfer_matrix, training_label
from truthprobe.pooled import leave_one_out
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
    leave_one_out: bool = True
    """Also train on every dataset but B pooled (equal shares per dataset) and test on every
    task: B's column is leave-one-dataset-out (rows where three or more datasets are given)."""

    def pooled(self) -> dict[str, str]:
        """Held-out task -> the pooled training task of every other dataset."""
        return leave_one_out(self.tasks) if self.leave_one_out else {}

    def harness(self) -> HarnessConfig:
        """The sweep's harness, with the pooled training tasks beside the tasks (same run
        directory: tasks are not in its hash)."""
        base = super().harness()
        return replace(base, tasks=(*base.tasks, *self.pooled().values()))


def _layers(view: View, task: str) -> list[int]:
    config: TransferMatrixConfig = view.config  # type: ignore[assignment]
    chosen = view.layer(task)
    return view.family_layers(task) if config.every_layer else [chosen]


def _training(view: View) -> list[tuple[str, str]]:
    """(training task, held-out task): every task (none held out), then each pooled task."""
    config: TransferMatrixConfig = view.config  # type: ignore[assignment]
    pooled = [(p, held) for held, p in config.pooled().items()]
    return [(t, "") for t in config.tasks] + pooled


def plan(harness: Harness, view: View) -> None:
    """A's parts scored on every other task B, at A's layer (or every layer); the same for
    each pooled training task, on every task."""
    for train_task, _ in _training(view):
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
    for train_task, held_out in _training(view):
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
                            train_task=train_task, held_out=held_out, train_on=s,
                            test_task=test_task, layer=layer, chosen=layer == chosen,
                            **view.cell(test_task, correct, own),
                            **recovered_cells(correct, own, view.n_boot),
                        )
                    )  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    """The matrix as text: accuracy [CI] / chance, SGR, recovered accuracy per cell."""
    wide = max([28, *(len(training_label(r)) + 6 for r in rows)])
    lines = [
        f"{'trained on':<{wide}} {'tested on':<18} {'layer':>8} {'accuracy [95% CI]':>22} "
        f"{'chance':>6} {'zero-shot':>9} {'own hard':>8}  {'SGR':<22} recovered"
    ]
    for r in rows:
        if not r["chosen"]:
            continue
        held = "*" if r["held_out"] and r["held_out"] == r["test_task"] else ""
        lines.append(
            f"{training_label(r) + ' ' + r['train_on']:<{wide}} {r['test_task'] + held:<18} "
            f"{layer_name(r['layer']):>8} "
            f"{r['accuracy']:.3f} [{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}] "
            f"{r['chance']:>6.3f} {r['zero_shot']:>9.3f} {r['own']:>8.3f}  "
            f"{sgr_shown(r):<22} {r['recovered']:.2f} [{r['recovered_low']:.2f}, "
            f"{r['recovered_high']:.2f}]"
        )
    if any(r["held_out"] for r in rows):
        lines += ["", "all but B: every other dataset's items pooled, equal shares; * marks B, "
                  "the dataset it never saw (leave-one-dataset-out)"]  # fmt: skip
    return "\n".join(lines)


STUDY = register(
    PlannedStudy("transfer_matrix", TransferMatrixConfig, plan, transfer_rows, summary,
                 plot_transfer_matrix)
)  # fmt: skip
