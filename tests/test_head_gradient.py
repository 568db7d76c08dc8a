"""QLoRA's log-likelihood under a frozen head: value and gradient made in one vocabulary sweep
(`scoring._LogLikelihood`) equal autograd through the full-vocabulary log-softmax."""

from __future__ import annotations

import pytest
import torch

from truthprobe.scoring import VOCAB_CHUNK, _LogLikelihood


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_one_sweep_value_and_gradient_equal_autograd_over_the_whole_vocabulary(softcap):
    generator = torch.Generator().manual_seed(0)
    vocabulary = 2 * VOCAB_CHUNK + 1234  # three slices, the last one short
    weight = torch.randn(vocabulary, 24, generator=generator, dtype=torch.float64)
    states = torch.randn(7, 24, generator=generator, dtype=torch.float64) * 3
    # targets in every slice, at both ends of one
    targets = torch.tensor([0, 5, VOCAB_CHUNK - 1, VOCAB_CHUNK, 2 * VOCAB_CHUNK + 7, 99, 4000])
    upstream = torch.randn(7, generator=generator, dtype=torch.float64)

    fused_states = states.clone().requires_grad_(True)
    fused = _LogLikelihood.apply(fused_states, targets, weight, None, softcap)
    (fused * upstream).sum().backward()

    plain_states = states.clone().requires_grad_(True)
    logits = plain_states @ weight.T
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    plain = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    (plain * upstream).sum().backward()

    torch.testing.assert_close(fused.double(), plain, rtol=0, atol=1e-5)  # float32 sums
    torch.testing.assert_close(fused_states.grad, plain_states.grad, rtol=1e-5, atol=1e-6)
