"""Hase et al.'s multiple-choice linear head; `validated` chooses its penalty and steps."""

from __future__ import annotations

from truthprobe.probes import L2_GRID, STEP_GRID, MultipleChoiceLinearProbe


def candidates(preset: str) -> tuple[MultipleChoiceLinearProbe, ...]:
    if preset != "validated":
        return (MultipleChoiceLinearProbe(),)
    return tuple(
        MultipleChoiceLinearProbe(l2=v, stop=0 if n == 100 else n)
        for n in STEP_GRID
        for v in L2_GRID
    )
