"""What every backend's runner is, apart from the package that picks one (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: Runs one full sequence (1, T) and returns (hidden states 0..L each (T, d_model), logits (T, V)).
SequenceRunner = Callable[[torch.Tensor], tuple[Sequence[torch.Tensor], torch.Tensor]]
