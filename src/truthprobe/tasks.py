"""Tasks: a dataset, a hardness measure, the items a run uses and how they are split.

A task (`arc:grade`) is resolved from the data alone: its items are the dataset's rated records
in dataset order (optionally capped per stratum with a seed), stratified once over the whole
dataset, and split into a hard test set, training pools and an easy validation set. Nothing
here depends on a model, a tokenizer or a cache, so every model sees the same test items; the
harness then maps the items to rows of the dataset's activation cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from truthprobe.configs import DataConfig, check_task
from truthprobe.data import Dataset, Question
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import EvalSplit, SplitConfig, make_split
from truthprobe.hardness import STRATA, Stratum, stratify
from truthprobe.names import safe_name


@dataclass(frozen=True)
class TaskSpec:
    """A `dataset:measure` pair, validated without reading data."""

    dataset: str
    measure: str

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        dataset, measure = check_task(text)
        return cls(dataset, measure)

    @property
    def name(self) -> str:
        return f"{self.dataset}:{self.measure}"

    @property
    def slug(self) -> str:
        """A folder name for this task's outputs: safe characters only, never a path.

        A file dataset is named by its stem plus a hash of its path, so two files with the same
        name in different folders do not share outputs.
        """
        base = self.dataset
        if base.endswith(".jsonl"):
            digest = hashlib.sha256(str(Path(base).resolve()).encode()).hexdigest()[:8]
            base = f"{Path(base).stem}-{digest}"
        return safe_name(f"{base}-{self.measure}")


def choice_records(dataset: Dataset) -> tuple[Question, ...]:
    """The records with answer choices: what probes and the activation cache use."""
    return tuple(r for r in dataset.records if r.choices)


def select_items(strata: tuple[Stratum | None, ...], data: DataConfig) -> np.ndarray:
    """Indices of rated items, at most `max_per_stratum` per stratum, in their original order.

    The draw is per stratum with `subset_seed`, so a cap keeps every stratum represented.
    """
    rng = np.random.default_rng(data.subset_seed)
    keep: list[int] = []
    for stratum in STRATA:
        rows = [i for i, s in enumerate(strata) if s == stratum]
        cap = data.max_per_stratum
        if cap and len(rows) > cap:
            rows = sorted(rng.choice(rows, cap, replace=False).tolist())
        keep.extend(rows)
    return np.array(sorted(keep), dtype=np.int64)


@dataclass
class Task:
    """One task's items (dataset order), their strata and split, and the data they came from."""

    spec: TaskSpec
    dataset: Dataset
    pool: tuple[Question, ...]
    """Every record the task draws from (records with choices, or all for free-form data)."""
    items: np.ndarray
    """Indices into `pool` of the task's items (rated, capped), ascending."""
    strata: tuple[Stratum, ...]
    """Stratum of each item."""
    split: EvalSplit
    """Rows index `items`: test, validation and training pools."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free_form(self) -> bool:
        """True for datasets without answer choices (GSM8k): generation methods only."""
        return self.pool[0].choices is None

    @cached_property
    def records(self) -> tuple[Question, ...]:
        return tuple(self.pool[i] for i in self.items)

    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.records)

    @cached_property
    def answers(self) -> np.ndarray:
        """Gold choice per item (-1 for free-form items)."""
        return np.array([-1 if r.answer_index is None else r.answer_index for r in self.records])

    @cached_property
    def roles(self) -> np.ndarray:
        """Per item: `test`, `validation`, or `pool` (eligible for training)."""
        roles = np.full(len(self.items), "pool", dtype=object)
        roles[self.split.test] = "test"
        roles[self.split.validation] = "validation"
        return roles

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the data, items, strata and roles: parts made for another differ."""
        payload = json.dumps(
            [self.dataset.content_hash, self.ids, list(self.strata), list(self.roles)]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def table(self) -> dict[str, list]:
        """The task's item table as stored in a run (JSON-ready)."""
        return {
            "id": list(self.ids),
            "stratum": list(self.strata),
            "role": [str(r) for r in self.roles],
            "answer_index": [int(a) for a in self.answers],
            "n_choices": [r.n_choices for r in self.records],
        }


def load_task(
    spec: TaskSpec,
    data: DataConfig,
    split: SplitConfig,
    dataset: Dataset | None = None,
    scores: Mapping[str, float] | None = None,
) -> Task:
    """Read the data of `spec` and resolve its items, strata and split.

    `scores` (item id -> hardness) rate the items under a model-based measure
    (`truthprobe.mdl`); human measures read the records.

    Raises:
        TruthprobeError: bad records, a measure that rates nothing here, or too few items.
    """
    dataset = dataset or data.load(spec.dataset)
    pool = choice_records(dataset) or dataset.records
    all_strata = stratify(pool, data.measure(spec.measure), scores)
    items = select_items(all_strata, data)
    if not len(items):
        raise TruthprobeError(
            f"{spec.name}: the measure {spec.measure!r} rates none of the {len(pool)} records "
            f"of {dataset.name}"
        )
    strata = tuple(all_strata[i] for i in items)
    try:
        made = make_split(strata, split)
    except TruthprobeError as err:
        raise TruthprobeError(f"{spec.name}: {err}") from err
    return Task(spec, dataset, pool, items, strata, made)  # type: ignore[arg-type]
