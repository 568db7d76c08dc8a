"""Settings of each method, composed into the sweep's and the baselines' configs.

Field names carry their method's prefix because the command line flattens them (`--k`,
`--qlora-n-train`); each command shows only the pieces it composes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from truthprobe.configs import (
    PROBE_KINDS,
    PROBE_PRESETS,
    ConfigError,
    ProbeKind,
    ProbePreset,
    require,
    require_layers,
    require_non_negative,
)

QLoRAQuantization = Literal["model", "none", "4bit", "8bit"]


def _require_choices(values: tuple, valid: tuple[str, ...], name: str, noun: str) -> None:
    """At least one value, each one of `valid`, none twice (one error line naming the flag)."""
    require(len(values) > 0, name, f"needs at least one {noun}")
    unknown = [v for v in values if v not in valid]
    require(
        not unknown,
        name,
        f"has unknown {noun} {unknown[0] if unknown else ''!r}; valid: {', '.join(valid)}",
    )
    require(len(set(values)) == len(values), name, f"lists a {noun} twice")


@dataclass(frozen=True)
class ProbeSettings:
    """Which probes the `probe` method fits, and at which layers."""

    probes: tuple[ProbeKind, ...] = ("mc_linear",)
    """Probe families to fit at every layer (`truthprobe.probe_registry`): mc_linear (the
    paper's), logistic, mass_mean, ccs, lda, lat (PCA of paired differences), truth_polarity
    (general and polarity directions), random (the chance floor)."""
    layers: tuple[int, ...] | None = None
    """Hidden-state indices to probe (0 = embeddings); default: every layer of the cache."""
    mid_last: bool = True
    """Also probe the paper's own features: the middle and last layers' states concatenated
    (reported as layer `mid+last`)."""
    probe_preset: tuple[ProbePreset, ...] = ("validated",)
    """How probe settings are chosen: validated (per draw, from a grid, on easy validation
    items) and/or paper (Hase et al.'s fixed settings; reported as `<kind>-paper`)."""

    def __post_init__(self) -> None:
        _require_choices(self.probes, PROBE_KINDS, "probes", "kind")
        _require_choices(self.probe_preset, PROBE_PRESETS, "probe_preset", "preset")
        require_layers(self.layers)


@dataclass(frozen=True)
class ICLSettings:
    """In-context learning: k demonstrations from the training pool, then the test question."""

    k: int = 0
    """Demonstrations (0 = the paper's k: 10 ARC/MMLU, 8 StrategyQA/GSM8k)."""
    icl_max_tokens: int = 2048
    """Longest prompt (plus generation budget, for CoT); demonstrations are dropped from the
    end to fit, never the test question."""

    def __post_init__(self) -> None:
        require_non_negative(self.k, "k", "the paper's k per dataset")
        require(self.icl_max_tokens >= 16, "icl_max_tokens", "must be at least 16")


@dataclass(frozen=True)
class CoTSettings:
    """Chain-of-thought for ICL and QLoRA on some datasets (free-form ones always)."""

    cot: tuple[str, ...] = ("gsm8k", "strategyqa")
    """Datasets whose ICL and QLoRA reason before answering (as the paper: GSM8k, StrategyQA);
    give none for multiple-choice ICL and QLoRA everywhere except free-form GSM8k."""
    max_new_tokens: int = 0
    """Generation budget (0 = the paper's: 300 GSM8k, 100 StrategyQA)."""

    def __post_init__(self) -> None:
        require_non_negative(self.max_new_tokens, "max_new_tokens", "the paper's budget")


@dataclass(frozen=True)
class QLoRASettings:
    """QLoRA: LoRA adapters on a quantised copy of the model (paper settings otherwise)."""

    qlora_n_train: int = 32
    """Training items per (train_on, seed)."""
    qlora_quantization: QLoRAQuantization = "model"
    """Weights the adapters train on: model (the run's --quantization, so every row of a
    table comes from one model), or other weights for QLoRA alone: 8bit (LLM.int8; trains on
    a CPU), 4bit (NF4, GPU only; the paper's QLoRA) or none. The table names each row's."""
    qlora_max_updates: int = 4
    """Cap on optimiser updates (0 = the paper's full schedule)."""

    def __post_init__(self) -> None:
        require(self.qlora_n_train >= 1, "qlora_n_train", "must be at least 1")
        if self.qlora_quantization not in ("model", "none", "4bit", "8bit"):
            raise ConfigError(
                "--qlora-quantization must be model, none, 4bit or 8bit, got "
                f"{self.qlora_quantization!r}"
            )
        require_non_negative(self.qlora_max_updates, "qlora_max_updates", "the full schedule")


@dataclass(frozen=True)
class MethodSettings:
    """Every method's settings, as the harness hands them to method factories."""

    probe: ProbeSettings = field(default_factory=ProbeSettings)
    icl: ICLSettings = field(default_factory=ICLSettings)
    cot: CoTSettings = field(default_factory=CoTSettings)
    qlora: QLoRASettings = field(default_factory=QLoRASettings)
