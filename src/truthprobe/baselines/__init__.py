"""Methods that answer without probes: zero-shot, k-shot ICL (optionally chain-of-thought) and
QLoRA; `compare` runs them beside the best-layer probe on the same splits."""

from truthprobe.baselines.zero_shot import zero_shot_probs

__all__ = ["zero_shot_probs"]
