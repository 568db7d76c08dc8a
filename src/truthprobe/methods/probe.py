"""Probes on cached hidden states: one method per (probe kind, layer).

Each part fits the probe on the training rows' answer-end states and scores the test and the
easy validation items (validation accuracy chooses the reported layer); the fitted probe's
arrays (direction, bias, standardisation) are stored with the part.
"""

from __future__ import annotations

import numpy as np

from truthprobe.methods.base import Method, MethodContext, MethodOutput, register_method
from truthprobe.probes import make_probe


class ProbeAtLayer(Method):
    def __init__(self, kind: str, layer: int) -> None:
        self.kind, self.layer = kind, layer
        self.family = kind
        self.label = f"{kind}@{layer}"
        self.probe = make_probe(kind)

    def settings(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "probe": repr(self.probe)}

    def run(self, ctx: MethodContext, train: np.ndarray | None, seed: int) -> MethodOutput:
        assert ctx.states is not None and train is not None
        data = ctx.states.probe_data(self.layer)
        fitted = self.probe.fit(data.take(train), seed)
        rows = ctx.evaluated
        evaluated = data.take(rows)
        return MethodOutput.from_choice_probs(
            rows, fitted.predict(evaluated), evaluated.answer_index, probe=fitted.arrays()
        )


def build(task, settings, layers) -> list[Method]:
    if task.free_form:
        return []
    chosen = settings.probe.layers if settings.probe.layers is not None else layers
    missing = [k for k in chosen if k not in layers]
    if missing:
        from truthprobe.errors import TruthprobeError

        raise TruthprobeError(
            f"--layers {missing[0]} is out of range: this model has hidden states "
            f"{layers[0]}..{layers[-1]} (0 = embeddings)"
        )
    return [ProbeAtLayer(kind, layer) for layer in chosen for kind in settings.probe.probes]


register_method("probe", build)
