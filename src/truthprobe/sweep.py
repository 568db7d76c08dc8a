"""Layer sweeps: probes trained on easy / hard / all items at every layer, tested on hard items.

`layer_sweep(SweepConfig(...))` is one configuration of the harness (`truthprobe.harness`):
zero-shot (the unsupervised floor, read from the cache) plus every probe kind at every layer,
trained on each stratum with every seed. The run directory holds one part per (task, probe,
layer, train_on, seed) with per-item outputs and the fitted probe; `truthprobe.report` turns it
into SGR tables and per-layer plots.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from truthprobe.configs import (
    CacheConfig,
    DataConfig,
    ModelConfig,
    OutputConfig,
    PromptConfig,
    Quantization,
    check_tasks,
    require,
)
from truthprobe.evaluate import SplitConfig
from truthprobe.harness import HarnessConfig, RunSummary, run
from truthprobe.methods.settings import MethodSettings, ProbeSettings


@dataclass(frozen=True)
class SweepConfig:
    """A layer sweep. `python experiments/layer_sweep.py --help` lists these as flags."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level", "strategyqa:steps")
    """dataset:measure pairs to sweep, e.g. --tasks arc:grade arc:bloom mmlu:level. By default
    StrategyQA beside ARC and MMLU: on the embedded model only its probes clear zero-shot by
    more than the noise, so the default run shows a gap to recover somewhere."""
    model: ModelConfig = ModelConfig()
    probe: ProbeSettings = ProbeSettings(probe_preset=("validated", "paper"))
    """Probes and presets; by default the validated probe beside the paper's settings."""
    split: SplitConfig = SplitConfig()
    data: DataConfig = DataConfig()
    prompt: PromptConfig = PromptConfig()
    cache: CacheConfig = CacheConfig()
    output: OutputConfig = OutputConfig()

    def __post_init__(self) -> None:
        check_tasks(self.tasks)

    def harness(self) -> HarnessConfig:
        return HarnessConfig(
            kind="layer_sweep",
            tasks=self.tasks,
            methods=("zero_shot", "probe"),
            model=self.model,
            cache=self.cache,
            data=self.data,
            prompt=self.prompt,
            split=self.split,
            settings=MethodSettings(probe=self.probe),
            output=self.output,
        )


@dataclass(frozen=True)
class DirectionsConfig(SweepConfig):
    """The sweep, then its probes' directions. `truthprobe directions --help` lists the flags."""

    versus_quantization: Quantization | None = None
    """Also run the sweep with the model under this quantization (same items and seeds) and
    compare: cosine of the two runs' directions, accuracy of each run's probes on the other's
    states. bitsandbytes 8bit / 4bit run on CPU too, several times slower than bfloat16."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.versus_quantization != self.model.quantization,
            "versus_quantization",
            f"{self.versus_quantization} is the model's own quantization; pick another "
            "(none, 4bit, 8bit)",
        )

    def twin(self) -> DirectionsConfig:
        """The same sweep with the model under `versus_quantization` (and no twin of its own)."""
        model = replace(self.model, quantization=self.versus_quantization or "none")
        return replace(self, model=model, versus_quantization=None)


def layer_sweep(config: SweepConfig) -> RunSummary:
    """Run (or resume) the sweep; `truthprobe.report.write_report(summary.run_dir)` tabulates."""
    return run(config.harness())
