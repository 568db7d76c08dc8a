"""TransformerLens backend: the same hidden states from `TransformerBridge` hooks.

TransformerLens 4.x wraps the loaded transformers model (`TransformerBridge.boot_transformers`).
Hook names map to transformers' `hidden_states` as: index 0 = `hook_embed`, index i (1..L-1) =
`blocks.{i-1}.hook_resid_post`, index L = `ln_final.hook_out` (transformers applies the final
norm to its last hidden state). Kept in its own module so the default path never imports it.

`boot_transformers` adapts the model it is given in place (its batched, KV-cached forward no
longer matches plain transformers afterwards), so give this backend a model instance of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from truthprobe.backends.base import SequenceRunner
from truthprobe.models import LoadedModel


def lens_runner(loaded: LoadedModel, model_dir: str | None = None) -> SequenceRunner:
    """A `SequenceRunner` over a TransformerBridge of the loaded model."""
    from transformer_lens.model_bridge import TransformerBridge

    from truthprobe.models import convert_default_model

    name = model_dir or (
        str(convert_default_model())
        if loaded.fingerprint.name == "default"
        else loaded.fingerprint.name
    )
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=loaded.model, tokenizer=loaded.tokenizer
    )
    n_blocks = loaded.n_layers
    names = ["hook_embed"]
    names += [f"blocks.{i}.hook_resid_post" for i in range(n_blocks - 1)]
    names += ["ln_final.hook_out"]

    def run(ids: torch.Tensor) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        logits, cache = bridge.run_with_cache(ids, names_filter=lambda n: n in names)
        return [cache[n][0] for n in names], logits[0]

    return run
