"""Layer sweeps: probes trained on easy / hard / all items at every layer, tested on hard items.

`layer_sweep(SweepConfig(...))` is one configuration of the harness (`truthprobe.harness`):
zero-shot (the unsupervised floor, read from the cache) plus every probe kind at every layer,
trained on each stratum with every seed. The run directory holds one part per (task, probe,
layer, train_on, seed) with per-item outputs and the fitted probe; `truthprobe.report` turns it
into SGR tables and per-layer plots.
"""

from __future__ import annotations

from dataclasses import dataclass

from truthprobe.harness import HarnessConfig, RunConfig, RunSummary, run
from truthprobe.methods.settings import MethodSettings, ProbeSettings


@dataclass(frozen=True)
class SweepConfig(RunConfig):
    """Train probes on easy / hard / all items at every layer; report SGR (the main job).

    `truthprobe sweep`, and `python experiments/layer_sweep.py`."""

    probe: ProbeSettings = ProbeSettings(probe_preset=("validated", "paper"))
    """Probes and presets; by default the validated probe beside the paper's settings."""

    def harness(self) -> HarnessConfig:
        return self.with_methods(
            "layer_sweep", ("zero_shot", "probe"), MethodSettings(probe=self.probe)
        )

    def run(self) -> int:
        """Run (or resume) the sweep, then print its report and what the run did; with
        several models, each in turn, then their comparison (`truthprobe.model_sizes`)."""
        from truthprobe.model_sizes import reported, run_each_model

        return run_each_model(self, lambda config: reported(layer_sweep(config)))


def layer_sweep(config: SweepConfig) -> RunSummary:
    """Run (or resume) the sweep; `truthprobe.report.write_report(summary.run_dir)` tabulates."""
    return run(config.harness())
