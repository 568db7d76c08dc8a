"""Per-sequence runners: one full forward of a (1, T) sequence returning every hidden state.

The fast packed path (`truthprobe.scoring.forward_batch`) reads transformers' hidden states
directly; these runners give the same states through other libraries (nnsight, TransformerLens)
so each can cross-check the others. Each backend lives in its own module and is imported only
when asked for, so the default path never imports nnsight or TransformerLens. Nothing here
imports from the scoring engine or the extraction dispatcher: they import this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from truthprobe.backends.base import SequenceRunner
from truthprobe.configs import Backend  # one definition, re-exported here
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel

BACKENDS: tuple[str, ...] = ("hf", "nnsight", "transformer_lens")


def hf_runner(loaded: LoadedModel) -> SequenceRunner:
    """Plain transformers forward with `output_hidden_states` and the full LM head."""

    def run(ids: torch.Tensor) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        out = loaded.model(input_ids=ids, output_hidden_states=True)
        return [h[0] for h in out.hidden_states], out.logits[0]

    return run


def get_runner(backend: str, loaded: LoadedModel) -> SequenceRunner:
    """The per-sequence runner of `backend` (`hf`, `nnsight` or `transformer_lens`)."""
    if backend == "hf":
        return hf_runner(loaded)
    if backend == "nnsight":
        from truthprobe.backends.nnsight_runner import nnsight_runner

        return nnsight_runner(loaded)
    if backend == "transformer_lens":
        from truthprobe.backends.lens_runner import lens_runner

        return lens_runner(loaded)
    raise TruthprobeError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "SequenceRunner", "get_runner", "hf_runner"]
