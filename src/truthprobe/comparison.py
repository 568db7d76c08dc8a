"""Every method on the same splits: zero-shot, ICL, probes and QLoRA.

`run_baselines(BaselinesConfig(...))` is one configuration of the harness
(`truthprobe.harness`): for each dataset:measure task the same hard test set, training pools
and seeds serve every method. As in the paper (§7.2) the unsupervised term is zero-shot
prompting (multiple-choice scoring; for GSM8k zero-shot chain-of-thought); ICL and QLoRA reason
before answering on StrategyQA and GSM8k (`+cot`); GSM8k, with free-form answers, has no probe.
The probe is the paper's multiple-choice linear probe at every layer, reported at the layer
chosen on easy validation items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from truthprobe.configs import require
from truthprobe.evaluate import SplitConfig
from truthprobe.harness import HarnessConfig, RunConfig, RunSummary, run
from truthprobe.methods.settings import CoTSettings, ICLSettings, MethodSettings, QLoRASettings

Baseline = Literal["icl", "probe", "qlora"]


@dataclass(frozen=True)
class BaselinesConfig(RunConfig):
    """Zero-shot, ICL, probes and QLoRA on the same splits; report SGR.

    `truthprobe baselines`; the defaults are sized for a 2-core CPU."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level", "strategyqa:steps", "gsm8k:steps")
    split: SplitConfig = SplitConfig(seeds=1, max_test=60)
    methods: tuple[Baseline, ...] = ("icl", "probe", "qlora")
    """Methods beside zero-shot (GSM8k has no probe)."""
    icl: ICLSettings = ICLSettings()
    cot: CoTSettings = CoTSettings()
    qlora: QLoRASettings = QLoRASettings()

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.methods) > 0, "methods", "needs at least one of icl, probe, qlora")
        require(len(set(self.methods)) == len(self.methods), "methods", "lists a method twice")

    def harness(self) -> HarnessConfig:
        settings = MethodSettings(icl=self.icl, cot=self.cot, qlora=self.qlora)
        return self.with_methods("baselines", ("zero_shot", *self.methods), settings)

    def run(self) -> int:
        """Run (or resume) every method on every task, then print the report (per model,
        then their comparison, where --model names several)."""
        from truthprobe.model_sizes import reported, run_each_model

        return run_each_model(self, lambda config: reported(run_baselines(config)))


def run_baselines(config: BaselinesConfig) -> RunSummary:
    """Run (or resume) every method on every task; `truthprobe.report` tabulates the run."""
    return run(config.harness())
