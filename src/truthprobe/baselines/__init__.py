"""Methods that score answer choices without probes: zero-shot (and, later, ICL and QLoRA)."""

from truthprobe.baselines.zero_shot import zero_shot_probs

__all__ = ["zero_shot_probs"]
