"""The ingredients every command's config is made of, declared once, and their validation.

Each command is one frozen dataclass composed of these small ones (the model, the activation
cache, the data, the prompt, the outputs); the command line is generated from the dataclasses
and their field docstrings (`truthprobe.cli`), so flags, defaults and help text cannot drift
from the code. Every check runs in `__post_init__`, so a bad setting is a `ConfigError` before
any model is loaded or anything is extracted, from the library and the command line alike.
This module imports nothing of the package above `truthprobe.hardness` and `truthprobe.prompts`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from truthprobe.errors import TruthprobeError
from truthprobe.probe_registry import FAMILIES

Quantization = Literal["none", "4bit", "8bit"]
Backend = Literal["hf", "nnsight", "transformer_lens"]
#: The registered probe families (`truthprobe.probe_registry`): the `--probes` choices.
PROBE_KINDS: tuple[str, ...] = tuple(FAMILIES)
ProbeKind = Literal[PROBE_KINDS]  # type: ignore[valid-type]  # built from the registry
ProbePreset = Literal["validated", "paper"]
PROBE_PRESETS: tuple[str, ...] = ("validated", "paper")
DType = Literal["auto", "bfloat16", "float32", "float16"]
Storage = Literal["bfloat16", "float32"]
Source = Literal["auto", "local", "hub"]
Launcher = Literal["local", "slurm"]


class ConfigError(TruthprobeError):
    """A setting that cannot work; the message names the flag and the valid range.

    Not a `ValueError`, on purpose: the command-line parser wraps a `ValueError` raised while
    it builds a config in its own error box, while this one reaches `truthprobe.cli` as it is
    and is printed as the one line it is."""


def flag(field: str) -> str:
    """The command-line spelling of a config field (`n_train` -> `--n-train`)."""
    return "--" + field.replace("_", "-")


def require(condition: bool, field: str, problem: str) -> None:
    """Raise `ConfigError` naming the flag of `field` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{flag(field)} {problem}")


def require_positive(value: int, field: str) -> None:
    require(isinstance(value, int) and value >= 1, field, f"must be at least 1, got {value}")


def require_non_negative(value: int, field: str, zero_means: str) -> None:
    require(
        isinstance(value, int) and value >= 0,
        field,
        f"must be 0 ({zero_means}) or a positive number, got {value}",
    )


def require_layers(layers: tuple[int, ...] | None) -> None:
    if layers is None:
        return
    require(len(layers) > 0, "layers", "needs at least one layer index")
    bad = [k for k in layers if k < 0]
    require(not bad, "layers", f"indices count from 0 (embeddings), got {bad[0] if bad else ''}")


@dataclass(frozen=True)
class ModelConfig:
    """Which model, in which precision, on which device."""

    name: Annotated[str, tyro.conf.arg(name="model")] = "default"
    """`default` (the embedded Gemma 3 270M, offline), a Hugging Face id, or a local path."""
    quantization: Quantization = "none"
    """bitsandbytes weights: NF4 (4bit) or LLM.int8 (8bit); none = full precision."""
    dtype: DType = "auto"
    """Compute dtype; auto = bfloat16 where the hardware runs it natively."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (every visible GPU, else the CPU)."""

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "model", "must not be empty")
        require(
            self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device),
            "device",
            f"must be cpu, cuda, cuda:N or auto, got {self.device!r}",
        )


@dataclass(frozen=True)
class ModelsConfig:
    """Which models, in which precision, on which device: one, or several compared.

    Several models are each run on their own (their own caches and run directories, reusable
    alone) and then compared (`truthprobe.model_sizes`): `--model a b` with `--quantization`
    one value for all or one per model, so `--model default default --quantization none 8bit`
    is the embedded model in full precision and under LLM.int8."""

    name: Annotated[tuple[str, ...], tyro.conf.arg(name="model")] = ("default",)
    """One or more of: `default` (the embedded Gemma 3 270M, offline), a Hugging Face id, a
    local path."""
    quantization: tuple[Quantization, ...] = ("none",)
    """bitsandbytes weights: NF4 (4bit) or LLM.int8 (8bit); none = full precision. One value
    for every model, or one per --model."""
    dtype: DType = "auto"
    """Compute dtype; auto = bfloat16 where the hardware runs it natively."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (every visible GPU, else the CPU)."""

    def __post_init__(self) -> None:
        require(len(self.name) > 0, "model", "needs at least one model")
        require(
            len(self.quantization) in (1, len(self.name)),
            "quantization",
            f"takes one value, or one per --model ({len(self.name)}), got {len(self.quantization)}",
        )
        each = self.each()  # each model's own checks
        twice = [m for m in each if each.count(m) > 1]
        require(
            not twice,
            "model",
            f"lists {twice[0].name} ({twice[0].quantization}) twice" if twice else "",
        )

    @classmethod
    def one(cls, model: ModelConfig) -> ModelsConfig:
        """The settings of the single model `model`."""
        return cls((model.name,), (model.quantization,), model.dtype, model.device)

    def each(self) -> list[ModelConfig]:
        """Every model, in the order given."""
        quantizations = self.quantization * (len(self.name) if len(self.quantization) == 1 else 1)
        return [
            ModelConfig(name, quantization, self.dtype, self.device)
            for name, quantization in zip(self.name, quantizations, strict=True)
        ]

    @property
    def single(self) -> ModelConfig:
        """The one model (refused where several are given: the caller runs each apart)."""
        each = self.each()
        require(len(each) == 1, "model", "names several models; this needs one")
        return each[0]


@dataclass(frozen=True)
class SlurmConfig:
    """What the SLURM job array asks for (`--launcher slurm`)."""

    partition: str | None = None
    """SLURM partition (None: the cluster's default)."""
    gpus_per_task: int = 1
    """GPUs of each array task; the model is placed across them (`--device auto`)."""
    cpus_per_task: int = 8
    time: int = 240
    """Minutes per array task; a task that runs out is requeued and resumes."""
    parallelism: int = 16
    """Array tasks running at once."""
    account: str | None = None
    """SLURM account to charge (None: the user's default)."""
    mem_gb: int = 0
    """Memory per task in GB (0: the partition's default)."""

    def __post_init__(self) -> None:
        for name in ("gpus_per_task", "cpus_per_task", "time", "parallelism"):
            require_positive(getattr(self, name), name)
        require_non_negative(self.mem_gb, "mem_gb", "the partition's default")


@dataclass(frozen=True)
class CacheConfig:
    """Where activation caches live and how a new one is written."""

    cache_dir: str = "activations"
    """Folder of activation caches (one file per model, dataset and prompt template)."""
    batch_size: int = 0
    """At most this many questions per forward pass (0: no cap); passes are packed up to a
    token budget that fits the device (`scoring.pass_tokens`) either way. A row's values do not
    depend on which questions share its pass, so this changes speed, never results."""
    storage: Storage = "bfloat16"
    """How hidden states are stored: bfloat16 (raw 16-bit words) or float32 (twice the size)."""
    max_prompt_tokens: int = 0
    """Longest prompt plus choice, in tokens (0 = the model's maximum positions). Longer
    records are refused when a cache is created, naming file, line and length."""
    truncate_prompts: bool = False
    """Instead of refusing long records, drop tokens from the start of their prompt (after
    BOS) to fit; part of the cache's identity."""
    shards: int = 1
    """Cut each cache this fills into this many shards, filled by --launcher's workers and
    merged into one cache file; every row of the cache is filled (docs/cache.md)."""
    launcher: Launcher = "local"
    """local = worker processes on this machine; slurm = a SLURM job array (via submitit)."""
    workers: int = 0
    """Local worker processes (0: one per shard, at most one per CPU core); each loads the
    model once and fills its shards in turn."""
    slurm: SlurmConfig = SlurmConfig()
    dry_run: bool = False
    """Print the plan (items, tokens, shards, estimated disk and model memory) and stop,
    before any weights are loaded."""

    def __post_init__(self) -> None:
        require(isinstance(self.shards, int) and self.shards >= 1, "shards", "must be at least 1")
        require_non_negative(self.workers, "workers", "one per shard")
        require_non_negative(self.batch_size, "batch_size", "a token budget for the device")
        require_non_negative(self.max_prompt_tokens, "max_prompt_tokens", "the model's limit")
        require(bool(self.cache_dir.strip()), "cache_dir", "must not be empty")


@dataclass(frozen=True)
class DataSource:
    """Where named datasets come from."""

    source: Source = "auto"
    """Where named datasets come from: local = --data-dir / $TRUTHPROBE_DATA_DIR / what
    `truthprobe data fetch` wrote, hub = Hugging Face hub, auto = local when one of those is
    there."""
    data_dir: str | None = None
    """Folder holding arc/, mmlu/, strategyqa/ and gsm8k/ (default: $TRUTHPROBE_DATA_DIR)."""
    strict: bool = False
    """Refuse a dataset with a record whose correct choice appears twice among its choices
    (default: leave such records out, with one warning naming them)."""

    def load(self, spec: str):
        """The dataset `spec` (a name or a .jsonl path) from where these settings say."""
        from truthprobe.data import load_dataset

        return load_dataset(spec, source=self.source, data_dir=self.data_dir, strict=self.strict)


@dataclass(frozen=True)
class FieldRules(DataSource):
    """How the records' own `meta.<field>` values become easy / medium / hard."""

    levels: str | None = None
    """For a task on the records' own field (`FILE.jsonl:meta.level`): its levels, easiest
    first, comma-separated (`high_school,professional`; the first is easy, the last hard)."""
    easy_max: float | None = None
    """For a numeric `meta.<field>` task: easy if the value is at most this (with --hard-min;
    neither: the 30th / 70th percentile rule)."""
    hard_min: float | None = None
    """For a numeric `meta.<field>` task: hard if the value is at least this."""
    hardness_spec: str | None = None
    """A JSON or YAML file giving each meta.<field> its levels or cut-offs (recorded by name;
    its content is part of the run's settings)."""

    def __post_init__(self) -> None:
        self.field_specs()  # bad levels or cut-offs are an error before anything runs

    def field_specs(self) -> dict:
        """The `meta.<field>` specs these settings give, by field name (`*`: every field)."""
        from truthprobe.hardness import FieldSpec, HardnessError, read_field_specs

        try:
            specs = read_field_specs(self.hardness_spec) if self.hardness_spec else {}
            levels = None
            if self.levels is not None:
                levels = tuple(v.strip() for v in self.levels.split(",") if v.strip())
            if levels is not None or self.easy_max is not None or self.hard_min is not None:
                specs["*"] = FieldSpec(levels, self.easy_max, self.hard_min)
        except HardnessError as err:
            raise ConfigError(str(err)) from None
        return specs

    def measure(self, name: str):
        """The hardness measure `name` under these rules: a `meta.<field>` with its levels or
        cut-offs (`truthprobe.hardness.field_measure`); any other name as it is, for
        `truthprobe.hardness.stratify` to resolve."""
        from truthprobe.hardness import FIELD_PREFIX, field_measure

        if not name.startswith(FIELD_PREFIX):
            return name
        specs = self.field_specs()
        return field_measure(name, specs.get(name) or specs.get("*"))


@dataclass(frozen=True)
class DataConfig(FieldRules):
    """Where datasets come from and which of their rated items a run uses."""

    max_per_stratum: int = 500
    """At most this many items per easy / medium / hard stratum, drawn with `subset_seed`
    (0 = every rated item)."""
    subset_seed: int = 0
    """Seed of the per-stratum draw."""

    def __post_init__(self) -> None:
        require_non_negative(self.max_per_stratum, "max_per_stratum", "every rated item")
        super().__post_init__()


@dataclass(frozen=True)
class PromptConfig:
    """How questions are rendered as prompts (part of each cache's identity)."""

    template: str | None = None
    """Prompt template: mc (question, lettered choices, "Answer:"), qa ("Q: ... A:"), lmeval
    (lm-evaluation-harness's ARC / MMLU style: "Question: ...\nAnswer:" + " <choice>", no
    listed choices; MMLU with lm-eval's subject line); default: the paper's template per
    dataset (qa for StrategyQA, mc otherwise)."""
    template_file: str | None = None
    """A JSON file with the PromptTemplate fields (name, question_format, list_choices,
    choice_format, answer_format, continuation_format, description, strip_question), instead of
    --template."""

    def __post_init__(self) -> None:
        from truthprobe.prompts import TEMPLATES, TemplateError, load_template_file

        require(
            self.template is None or self.template_file is None,
            "template",
            "and --template-file are alternatives; give one",
        )
        require(
            self.template is None or self.template in TEMPLATES,
            "template",
            f"must be one of {', '.join(TEMPLATES)}, got {self.template!r}",
        )
        if self.template_file is not None:
            try:
                load_template_file(self.template_file)
            except TemplateError as err:
                raise ConfigError(f"--template-file: {err}") from None

    @property
    def is_default(self) -> bool:
        return self.template is None and self.template_file is None

    def resolve(self, records):
        """The `PromptTemplate` for a dataset's `records` (`truthprobe.prompts`)."""
        from truthprobe.prompts import resolve_template

        return resolve_template(self.template, records, self.template_file)

    def identity(self) -> dict | None:
        """What enters a run's hash: the template's name, or a file's content (not its path);
        None for the default, so runs made before templates were selectable keep their folder."""
        if self.is_default:
            return None
        if self.template_file is not None:
            from truthprobe.prompts import load_template_file

            return {"file": load_template_file(self.template_file).identity()}
        return {"template": self.template}


@dataclass(frozen=True)
class OutputConfig:
    """Where results and figures go, and how intervals are computed."""

    runs_dir: str = "runs"
    """Run directories (results, per-item outputs, probe weights, config)."""
    plots_dir: str = "plots"
    """Figures, in a folder per run."""
    n_boot: int = 10_000
    """Bootstrap resamples of test items and seeds for every interval."""
    progress: bool = True
    """Progress bars on long work."""

    def __post_init__(self) -> None:
        require_positive(self.n_boot, "n_boot")


def settings_hash(values: dict) -> str:
    """Hash of a run's settings (`asdict` of its config, less what the caller leaves out),
    without what only says where things lie or how fast: the cache's folder, batch size and
    shards (a row does not depend on its pass, nor on its process), the data's source and
    folder (its content hash is kept with the results). The prompt enters only when it is not
    the default, so runs made before templates were selectable keep their folders."""
    values = dict(values)
    values["cache"] = {"storage": values["cache"]["storage"]}
    values["data"] = {k: v for k, v in values["data"].items() if k not in ("source", "data_dir")}
    prompt = PromptConfig(**values.pop("prompt"))
    if not prompt.is_default:
        values["prompt"] = prompt.identity()
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def check_fraction(value: float, field: str) -> None:
    require(
        isinstance(value, float | int) and math.isfinite(value) and 0 < value < 1,
        field,
        f"must be between 0 and 1 (exclusive), got {value}",
    )


def check_task(text: str) -> tuple[str, str]:
    """Validate a `dataset:measure` task and split it (no data is read).

    Raises:
        ConfigError: no measure, an unknown dataset, or a measure that does not apply.
    """
    from truthprobe.data import DATASET_NAMES
    from truthprobe.hardness import MEASURES, MODEL_MEASURES, measures_for

    dataset, sep, measure = text.rpartition(":")
    if not sep or not dataset or not measure:
        raise ConfigError(
            f"task {text!r} needs a hardness measure: write dataset:measure, for example "
            f"arc:grade ({', '.join(f'{d}:{measures_for(d)[0]}' for d in DATASET_NAMES)})"
        )
    if dataset not in DATASET_NAMES:
        if not dataset.endswith(".jsonl"):
            raise ConfigError(
                f"task {text!r}: unknown dataset {dataset!r}; give one of "
                f"{', '.join(DATASET_NAMES)} or the path of a .jsonl file"
            )
        if not Path(dataset).is_file():
            raise ConfigError(f"task {text!r}: no such file {dataset}")

    def human(names):  # or computed by truthprobe.mdl
        return [m for m in names if not MEASURES[m].needs_model or m in MODEL_MEASURES]

    if measure.startswith("meta."):
        if measure == "meta.":
            raise ConfigError(f"task {text!r}: name the field, as in {dataset}:meta.level")
        return dataset, measure
    if measure not in MEASURES:
        valid = human(measures_for(dataset) if dataset in DATASET_NAMES else list(MEASURES))
        raise ConfigError(
            f"task {text!r}: unknown hardness measure {measure!r}; valid: {', '.join(valid)}"
        )
    if MEASURES[measure].needs_model and measure not in MODEL_MEASURES:
        raise ConfigError(
            f"task {text!r}: {measure!r} is model-based and needs per-item scores, which the "
            f"command line cannot compute; it computes {', '.join(MODEL_MEASURES)}"
        )
    if dataset in DATASET_NAMES and not MEASURES[measure].applies_to(dataset):
        raise ConfigError(
            f"task {text!r}: measure {measure!r} does not apply to {dataset}; valid: "
            f"{', '.join(human(measures_for(dataset)))}"
        )
    return dataset, measure


#: Joins the tasks of a pooled training task: `arc:grade+mmlu:level` (`truthprobe.pooled`).
POOLED = "+"


def pooled_parts(text: str) -> tuple[str, ...]:
    """The tasks of a pooled training task, `(text,)` for a plain one (a .jsonl path that holds
    a "+" and names a file is a plain task)."""
    if POOLED not in text or Path(text.rpartition(":")[0]).is_file():
        return (text,)
    return tuple(text.split(POOLED))


def is_pooled(text: str) -> bool:
    """Whether a `--tasks` entry pools several tasks (`a:m+b:n`)."""
    return len(pooled_parts(text)) > 1


def check_pooled(text: str) -> None:
    """Validate a pooled task: two or more distinct tasks, each a valid human-rated one.

    Raises:
        ConfigError: as `check_task`, naming the pooled task too.
    """
    from truthprobe.hardness import MEASURES

    parts = pooled_parts(text)
    for part in parts:
        try:
            _, measure = check_task(part)
        except ConfigError as err:
            raise ConfigError(f"pooled task {text!r}: {err}") from None
        if measure in MEASURES and MEASURES[measure].needs_model:
            raise ConfigError(
                f"pooled task {text!r}: {part} is rated by the model; pool human-rated tasks"
            )
    if len(set(parts)) < len(parts):
        raise ConfigError(f"pooled task {text!r}: names a task twice")


def check_tasks(tasks: tuple[str, ...]) -> None:
    require(len(tasks) > 0, "tasks", "needs at least one dataset:measure")
    for task in tasks:
        if is_pooled(task):
            check_pooled(task)
        else:
            check_task(task)
    duplicated = sorted({t for t in tasks if tasks.count(t) > 1})
    require(not duplicated, "tasks", f"lists {duplicated[0] if duplicated else ''} twice")
