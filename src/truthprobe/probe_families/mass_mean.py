"""Mass-mean probing: nothing to choose, one candidate under both presets."""

from __future__ import annotations

from truthprobe.probes import MassMeanProbe


def candidates(preset: str) -> tuple[MassMeanProbe, ...]:
    return (MassMeanProbe(),)
