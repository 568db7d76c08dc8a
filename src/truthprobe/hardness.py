"""Hardness measures of Hase et al. (2024) and stratification into easy / medium / hard.

A measure turns a `Question` into a number (higher = harder). Discrete human measures use the
paper's fixed cut-offs (easy if value <= easy_max, hard if value >= hard_min, else medium);
continuous measures (lengths, model-based scores) use the 30th / 70th percentiles of the pool
being stratified, as the paper's code does. Model-based measures (MDL, "minimum description
length": one minus the average label confidence along a learning curve) read per-item scores
computed elsewhere, so this module never needs a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from truthprobe.data.hub import gsm8k_solution_lines
from truthprobe.data.records import DataError, Question
from truthprobe.errors import TruthprobeError
from truthprobe.min_k import MEASURE_SCORES as MIN_K_MEASURES

#: Model-based measures the package computes itself (`truthprobe.mdl`), per item, beside a cache.
MODEL_MEASURES: tuple[str, ...] = ("mdl", "probe_mdl", *MIN_K_MEASURES)

Stratum = Literal["easy", "medium", "hard"]
STRATA: tuple[Stratum, ...] = ("easy", "medium", "hard")

#: The paper caps GSM8k reasoning steps at 10 solution lines.
GSM8K_MAX_STEPS = 10
#: Percentiles that bound easy and hard for continuous measures.
QUANTILE_CUTS = (0.30, 0.70)


class HardnessError(TruthprobeError, ValueError):
    """A measure was asked for that does not exist or does not apply to the data."""


@dataclass(frozen=True)
class Cutoffs:
    """Fixed cut-offs of a discrete measure: easy if value <= easy_max, hard if >= hard_min."""

    easy_max: float
    hard_min: float

    def __post_init__(self) -> None:
        if self.easy_max >= self.hard_min:
            raise ValueError(f"easy_max {self.easy_max} must be below hard_min {self.hard_min}")

    def stratum(self, value: float) -> Stratum:
        if value <= self.easy_max:
            return "easy"
        if value >= self.hard_min:
            return "hard"
        return "medium"


@dataclass(frozen=True)
class HardnessMeasure:
    """One way to rate a question's hardness.

    Attributes:
        name: the name used on the command line and in result tables.
        description: one line for `--help` and error messages.
        value: maps a question to its hardness value, or None if it is unrated; None for
            model-based measures, whose values are passed to `stratify` as `scores`.
        cutoffs: fixed cut-offs per dataset; None means the 30th / 70th percentile rule.
        datasets: datasets the measure applies to; None means every dataset.
        excluded: datasets it never applies to (e.g. answer length on yes/no answers).
    """

    name: str
    description: str
    value: Callable[[Question], float | None] | None
    cutoffs: Mapping[str, Cutoffs] | None = None
    datasets: tuple[str, ...] | None = None
    excluded: tuple[str, ...] = ()

    @property
    def needs_model(self) -> bool:
        """True for model-based measures (their scores come from a model run)."""
        return self.value is None

    def applies_to(self, dataset: str) -> bool:
        if dataset in self.excluded:
            return False
        return self.datasets is None or dataset in self.datasets


def _ordinal(field: str, levels: Sequence[str]) -> Callable[[Question], float | None]:
    """Levels in order (easiest first) -> 1, 2, ...; a value outside them is an error."""
    codes = {level: float(i + 1) for i, level in enumerate(levels)}

    def value(record: Question) -> float | None:
        raw = record.meta.get(field)
        if raw is None:
            return None
        key = raw if isinstance(raw, str) else str(raw)  # `--levels 1,2,3` names numbers too
        if key not in codes:
            raise ValueError(f"meta.{field} = {raw!r} is not one of {', '.join(levels)}")
        return codes[key]

    return value


def _number(record: Question, field: str) -> float | None:
    """A numeric `meta` field (None when absent); anything else is an error naming it."""
    raw = record.meta.get(field)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"meta.{field} = {raw!r} is not a number")
    try:
        return float(raw)
    except OverflowError:
        raise ValueError(f"meta.{field} is a number too large for a float") from None


def _grade(record: Question) -> float | None:
    return _number(record, "grade")


_mmlu_level = _ordinal("level", ("high_school", "college"))


def reasoning_steps(record: Question) -> float | None:
    """StrategyQA: sub-questions in the gold decomposition; GSM8k: solution lines, capped at 10."""
    if record.dataset == "gsm8k":
        solution = record.meta.get("solution")
        return None if not solution else float(min(GSM8K_MAX_STEPS, gsm8k_solution_lines(solution)))
    decomposition = record.meta.get("decomposition")
    if decomposition:
        return float(len(decomposition))
    return _number(record, "num_steps")


def _question_words(record: Question) -> float:
    return float(len(record.question.split()))


def _answer_chars(record: Question) -> float:
    return float(len(record.answer))


def _reasoning_words(record: Question) -> float | None:
    if record.dataset == "gsm8k":
        text = record.meta.get("solution", "").split("####")[0]
    else:
        text = " ".join(record.meta.get("facts") or [])
    return float(len(text.split())) if text.strip() else None


MEASURES: dict[str, HardnessMeasure] = {}


def register_measure(measure: HardnessMeasure) -> HardnessMeasure:
    """Add a measure (a new model-based score, say) so `stratify` and the CLI know it."""
    if measure.name in MEASURES:
        raise ValueError(f"hardness measure {measure.name!r} is already registered")
    MEASURES[measure.name] = measure
    return measure


for _measure in (
    HardnessMeasure(
        "grade",
        "ARC school grade 3-8 (easy <= 5, hard = 8)",
        _grade,
        {"arc": Cutoffs(5, 8)},
        ("arc",),
    ),
    HardnessMeasure(
        "bloom",
        "ARC Bloom level 1-5 (easy <= Understanding, hard >= Analyzing)",
        _ordinal("bloom", ("Remembering", "Understanding", "Applying", "Analyzing", "Evaluating")),
        {"arc": Cutoffs(2, 4)},
        ("arc",),
    ),
    HardnessMeasure(
        "difficulty",
        "ARC expert difficulty Low/Medium/High = 1/2/3",
        _ordinal("difficulty", ("Low", "Medium", "High")),
        {"arc": Cutoffs(1, 3)},
        ("arc",),
    ),
    HardnessMeasure(
        "depth_of_knowledge",
        "ARC depth of knowledge I/II/III = 1/2/3",
        _ordinal("depth_of_knowledge", ("I", "II", "III")),
        {"arc": Cutoffs(1, 3)},
        ("arc",),
    ),
    HardnessMeasure(
        "level",
        "MMLU education level (high school easy, college hard)",
        _mmlu_level,
        {"mmlu": Cutoffs(1, 2)},
        ("mmlu",),
    ),
    HardnessMeasure(
        "steps",
        "reasoning steps (StrategyQA decomposition: easy <= 2, hard >= 4; "
        "GSM8k solution lines capped at 10: easy <= 4, hard >= 7)",
        reasoning_steps,
        {"strategyqa": Cutoffs(2, 4), "gsm8k": Cutoffs(4, 7)},
        ("strategyqa", "gsm8k"),
    ),
    HardnessMeasure(
        "question_words",
        "question length in words (30th / 70th percentile)",
        _question_words,
    ),
    HardnessMeasure(
        "answer_chars",
        "gold answer length in characters (30th / 70th percentile)",
        _answer_chars,
        excluded=("strategyqa",),
    ),
    HardnessMeasure(
        "reasoning_words",
        "gold reasoning length in words: StrategyQA facts, GSM8k solution (30th / 70th percentile)",
        _reasoning_words,
        datasets=("strategyqa", "gsm8k"),
    ),
    HardnessMeasure(
        "mdl",
        "model-based: zero-shot MDL, 1 - p(gold) under the model (30th / 70th percentile)",
        None,
        excluded=("gsm8k",),  # scores choices: free-form answers have none
    ),
    HardnessMeasure(
        "probe_mdl",
        "model-based: probe MDL, 1 - held-out probe confidence along a learning curve, "
        "cross-fitted (30th / 70th percentile)",
        None,
        excluded=("gsm8k",),
    ),
    HardnessMeasure(
        "min_k",
        "model-based contamination: minus Min-K% (k = 20) of the question's tokens; easy = "
        "likely seen in pretraining, hard = likely unseen (30th / 70th percentile)",
        None,
        excluded=("gsm8k",),  # read from the activation cache, which needs answer choices
    ),
    HardnessMeasure(
        "min_k_pp",
        "model-based contamination: minus Min-K%++ (k = 20) of the question's tokens; easy = "
        "likely seen, hard = likely unseen (30th / 70th percentile)",
        None,
        excluded=("gsm8k",),
    ),
):
    register_measure(_measure)


FIELD_PREFIX = "meta."


class _Everywhere(Mapping[str, Cutoffs]):
    """The same cut-offs for every dataset (a field measure is the user's own, not a
    dataset's)."""

    def __init__(self, cutoffs: Cutoffs) -> None:
        self.cutoffs = cutoffs

    def __getitem__(self, dataset: str) -> Cutoffs:
        return self.cutoffs

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class FieldSpec:
    """How a `meta.<field>` measure rates records: ordered levels (easiest first; the first is
    easy, the last hard, any between medium), numeric cut-offs, or (neither given) the 30th /
    70th percentile rule on a numeric field."""

    levels: tuple[str, ...] | None = None
    easy_max: float | None = None
    hard_min: float | None = None

    def __post_init__(self) -> None:
        if self.levels is not None and (self.easy_max is not None or self.hard_min is not None):
            raise HardnessError("give either --levels or --easy-max / --hard-min, not both")
        if self.levels is not None:
            if len(self.levels) < 2 or len(set(self.levels)) != len(self.levels):
                raise HardnessError(
                    f"--levels needs at least two different levels, easiest first; got "
                    f"{','.join(self.levels)}"
                )
        if (self.easy_max is None) != (self.hard_min is None):
            raise HardnessError("--easy-max and --hard-min go together")
        if self.easy_max is not None and not self.easy_max < self.hard_min:  # type: ignore[operator]
            raise HardnessError(
                f"--easy-max {self.easy_max:g} must be below --hard-min {self.hard_min:g}"
            )


def read_field_specs(path: str) -> dict[str, FieldSpec]:
    """A hardness spec file: JSON or YAML mapping `meta.<field>` to `levels` (a list, easiest
    first) or `easy_max` and `hard_min`; every error names the file and the field."""
    import json
    from pathlib import Path

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        if file.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as err:  # OSError, JSON's ValueError, any of yaml's errors
        from_yaml = type(err).__module__.split(".")[0] == "yaml"
        if not isinstance(err, OSError | ValueError) and not from_yaml:
            raise
        first = " ".join(str(err).split())[:200]
        raise HardnessError(f"{path}: cannot read the hardness spec: {first}") from None
    if not isinstance(raw, dict):
        raise HardnessError(f"{path}: a hardness spec maps meta.<field> to its levels or cut-offs")
    specs = {}
    for name, entry in raw.items():
        if not str(name).startswith(FIELD_PREFIX) or not isinstance(entry, dict):
            raise HardnessError(
                f"{path}: {name!r}: keys are meta.<field>, values {{levels: [...]}} or "
                "{easy_max: N, hard_min: M}"
            )
        unknown = set(entry) - {"levels", "easy_max", "hard_min"}
        if unknown:
            raise HardnessError(f"{path}: {name}: unknown key {sorted(unknown)[0]!r}")
        for key in ("easy_max", "hard_min"):
            value = entry.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if value is not None and not number:
                raise HardnessError(f"{path}: {name}: {key} must be a number, got {value!r}")
        levels = entry.get("levels")
        if levels is not None and not isinstance(levels, list):
            raise HardnessError(f"{path}: {name}: levels must be a list, easiest first")
        try:
            specs[str(name)] = FieldSpec(
                tuple(str(v) for v in levels) if levels is not None else None,
                entry.get("easy_max"),
                entry.get("hard_min"),
            )
        except HardnessError as err:
            raise HardnessError(f"{path}: {name}: {err}") from None
    return specs


def field_measure(name: str, spec: FieldSpec | None = None) -> HardnessMeasure:
    """The measure `meta.<field>`: a record's own `meta` field, rated as `spec` says (default:
    the percentile rule on a numeric field). A run's specs come from its settings
    (`truthprobe.configs.FieldRules.measure`), never from a global."""
    field = name[len(FIELD_PREFIX) :]
    if not field:
        raise HardnessError(f"{name!r}: name the field, as in meta.level")
    spec = spec or FieldSpec()
    if spec.levels is not None:
        return HardnessMeasure(
            name,
            f"the records' meta.{field}, levels {' < '.join(spec.levels)} (easy = "
            f"{spec.levels[0]}, hard = {spec.levels[-1]})",
            _ordinal(field, spec.levels),
            _Everywhere(Cutoffs(1, len(spec.levels))),
        )
    if spec.easy_max is not None:
        return HardnessMeasure(
            name,
            f"the records' numeric meta.{field} (easy <= {spec.easy_max:g}, hard >= "
            f"{spec.hard_min:g})",
            lambda record: _number(record, field),
            _Everywhere(Cutoffs(spec.easy_max, spec.hard_min)),  # type: ignore[arg-type]
        )
    return HardnessMeasure(
        name,
        f"the records' numeric meta.{field} (30th / 70th percentile)",
        lambda record: _field_number(record, field),
    )


def _field_number(record: Question, field: str) -> float | None:
    """A numeric field; a word there means the user meant levels: say how to give them."""
    try:
        return _number(record, field)
    except ValueError as err:
        if "is not a number" not in str(err):
            raise
        raise ValueError(f"{err}; for levels give them easiest first: --levels a,b,c") from None


def measures_for(dataset: str) -> list[str]:
    """Names of the measures that apply to `dataset`."""
    return [name for name, measure in MEASURES.items() if measure.applies_to(dataset)]


def get_measure(name: str, dataset: str | None = None) -> HardnessMeasure:
    """Look up a measure, checking that it applies to `dataset` if one is given."""
    if name.startswith(FIELD_PREFIX):
        return field_measure(name)
    valid = measures_for(dataset) if dataset is not None else list(MEASURES)
    if name not in MEASURES:
        raise HardnessError(f"unknown hardness measure {name!r}; valid: {', '.join(valid)}")
    if dataset is not None and not MEASURES[name].applies_to(dataset):
        raise HardnessError(
            f"hardness measure {name!r} does not apply to dataset {dataset!r}; "
            f"valid for {dataset}: {', '.join(valid)}"
        )
    return MEASURES[name]


def hardness_values(
    records: Sequence[Question],
    measure: str | HardnessMeasure,
    scores: Mapping[str, float] | None = None,
) -> list[float | None]:
    """Each record's hardness value under `measure` (None where it is unrated)."""
    measure = _resolve(records, measure)
    if measure.value is not None:
        return [_checked(record, measure, measure.value) for record in records]
    if scores is None:
        dataset = records[0].dataset if records else "DATASET"
        raise HardnessError(
            f"hardness measure {measure.name!r} is model-based: `truthprobe sweep --tasks "
            f"{dataset}:{measure.name}` computes its per-item scores with the model (stored "
            "beside the activation cache); from Python pass scores={item_id: hardness}"
        )

    def score(record: Question) -> float | None:
        found = scores.get(record.id)
        return None if found is None else float(found)

    return [_checked(record, measure, score) for record in records]


def _checked(
    record: Question, measure: HardnessMeasure, value: Callable[[Question], float | None]
) -> float | None:
    """The record's value, or a `HardnessError` naming record, measure and field."""
    try:
        found = value(record)
    except (ValueError, TypeError) as err:
        raise HardnessError(
            f"{record.where or 'record'} (id {record.id!r}): hardness measure "
            f"{measure.name!r}: {err}"
        ) from None
    if found is not None and not np.isfinite(found):
        raise HardnessError(
            f"{record.where or 'record'} (id {record.id!r}): hardness measure "
            f"{measure.name!r} got {found}, not a finite number"
        )
    return found


def stratify(
    records: Sequence[Question],
    measure: str | HardnessMeasure,
    scores: Mapping[str, float] | None = None,
) -> tuple[Stratum | None, ...]:
    """The stratum of every record under `measure`, aligned with `records`.

    Records the measure cannot rate (ARC items without annotations, say) get None. Percentile
    cut-offs are computed over the rated records passed in, so pass the whole pool.

    Raises:
        HardnessError: for an unknown measure or one that does not apply to the records'
            dataset; the message lists the valid measures.
    """
    measure = _resolve(records, measure)
    values = hardness_values(records, measure, scores)
    if measure.name.startswith(FIELD_PREFIX) and records and all(v is None for v in values):
        where = records[0].where.split(":")[0] if records[0].where else "the data"
        raise HardnessError(
            f"{where}: none of the {len(records)} records has {measure.name} (check the "
            "field's name: meta.<field> reads each record's meta)"
        )
    if measure.cutoffs is not None:
        return tuple(
            None if v is None else measure.cutoffs[r.dataset].stratum(v)
            for r, v in zip(records, values, strict=True)
        )
    rated = np.array([v for v in values if v is not None], dtype=float)
    if rated.size == 0:
        return tuple(None for _ in records)
    low, high = np.quantile(rated, QUANTILE_CUTS)
    if low == high:  # the tie spans both percentiles: tied values are easy, larger ones hard
        return tuple(None if v is None else ("easy" if v <= low else "hard") for v in values)
    cuts = Cutoffs(float(low), float(high))
    return tuple(None if v is None else cuts.stratum(v) for v in values)


def group_by_stratum(
    records: Sequence[Question], strata: Sequence[Stratum | None]
) -> dict[Stratum, list[Question]]:
    """Records per stratum (unrated records are left out)."""
    groups: dict[Stratum, list[Question]] = {s: [] for s in STRATA}
    for record, stratum in zip(records, strata, strict=True):
        if stratum is not None:
            groups[stratum].append(record)
    return groups


def _resolve(records: Sequence[Question], measure: str | HardnessMeasure) -> HardnessMeasure:
    if isinstance(measure, HardnessMeasure):
        return measure
    datasets = sorted({r.dataset for r in records})
    if not datasets or measure.startswith(FIELD_PREFIX):
        return get_measure(measure)
    for dataset in datasets:
        get_measure(measure, dataset)
    return MEASURES[measure]


__all__ = [
    "MEASURES",
    "STRATA",
    "Cutoffs",
    "DataError",
    "FieldSpec",
    "HardnessError",
    "HardnessMeasure",
    "Stratum",
    "get_measure",
    "field_measure",
    "group_by_stratum",
    "hardness_values",
    "measures_for",
    "register_measure",
    "stratify",
]
