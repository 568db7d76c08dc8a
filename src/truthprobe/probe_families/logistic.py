"""Logistic regression on single choices; `validated` chooses its penalty."""

from __future__ import annotations

from truthprobe.probes import C_GRID, LogisticProbe


def candidates(preset: str) -> tuple[LogisticProbe, ...]:
    return (
        tuple(LogisticProbe(c=v) for v in C_GRID) if preset == "validated" else (LogisticProbe(),)
    )
