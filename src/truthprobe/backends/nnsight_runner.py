"""nnsight backend: the same hidden states, read through nnsight's tracing of module outputs.

Kept in its own module so the default path never imports nnsight. Hidden-state index 0 is the
embedding module's output, index i (1..L-1) block i-1's output, and index L the final norm's
output, matching transformers' `hidden_states` convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from truthprobe.backends.base import SequenceRunner
from truthprobe.models import LoadedModel


def _module_path(root: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    for name, module in root.named_modules():
        if module is target:
            return name.split(".") if name else []
    raise ValueError(f"module {type(target).__name__} not found in the model")


def _envoy(envoy, path: list[str]):
    for part in path:
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


def nnsight_runner(loaded: LoadedModel) -> SequenceRunner:
    """A `SequenceRunner` that traces the model with nnsight."""
    import nnsight
    from nnsight import NNsight

    model = loaded.model
    decoder = model.get_decoder()
    embed = _module_path(model, model.get_input_embeddings())
    blocks = _module_path(model, decoder.layers)
    norm = _module_path(model, decoder.norm)
    head = _module_path(model, model.get_output_embeddings())
    traced = NNsight(model)
    n_blocks = loaded.n_layers

    def run(ids: torch.Tensor) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        # Assignments inside a trace body do not escape it: collect into a saved container.
        with traced.trace(ids):
            hidden = nnsight.save([])
            hidden.append(_envoy(traced, embed).output)
            layers = _envoy(traced, blocks)
            for i in range(n_blocks - 1):
                hidden.append(layers[i].output)
            hidden.append(_envoy(traced, norm).output)
            logits = _envoy(traced, head).output.save()
        states = [(h[0] if isinstance(h, tuple) else h)[0] for h in hidden]
        return states, logits[0]

    return run
