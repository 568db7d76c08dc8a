"""What every transfer study reads: each dataset's whole activation cache and its task split.

A `Source` is one `dataset:measure` task with every choice record of the dataset behind it:
the records' answer-end states at any layer (read from the dataset's one activation cache,
filled once by `truthprobe.harness.fill_dataset`), their zero-shot correctness (the cached
choice log-likelihoods) and choice counts, and the task's split (hard test set, easy
validation set, easy / hard / all training pools) as indices into the records. The split is the
sweep's own (`truthprobe.tasks.load_task`), so a study's hard test set is the sweep's when both
use every rated item (`--max-per-stratum 0`, the studies' default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from truthprobe.configs import CacheConfig, DataConfig, PromptConfig
from truthprobe.data import Dataset, Question
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import SplitConfig
from truthprobe.hardness import get_measure, hardness_values
from truthprobe.probes import ProbeData
from truthprobe.tasks import Task, TaskSpec, choice_records, load_task


@dataclass
class Source:
    """One task's records, their cached states and its split; every index is into `records`."""

    task: str
    records: tuple[Question, ...]
    read: Callable[[int], ProbeData]
    """The answer-end states of every record at a layer."""
    layers: tuple[int, ...]
    zero_shot: np.ndarray
    """1.0 where zero-shot scoring gets the record right."""
    test: np.ndarray
    validation: np.ndarray
    pools: dict[str, np.ndarray]
    hard: np.ndarray | None = None
    """True where the task's measure rates a record hard (costs in learning curves)."""
    content_hash: str = ""
    cache: str = ""
    _layer: tuple[int, ProbeData] | None = field(default=None, repr=False)

    @property
    def dataset(self) -> str:
        return self.task.split(":")[0]

    def at(self, layer: int) -> ProbeData:
        """Every record's states at `layer` (the last layer read is kept)."""
        if self._layer is None or self._layer[0] != layer:
            self._layer = (layer, self.read(layer))
        return self._layer[1]

    @cached_property
    def n_choices(self) -> np.ndarray:
        """Each record's number of choices (read once: every cell's chance uses it)."""
        return np.array([len(r.choices or ()) for r in self.records])

    def chance(self, rows: np.ndarray) -> np.ndarray:
        """Per item 1 / choices: uniform guessing's expected correctness."""
        return 1.0 / self.n_choices[rows]

    def values(self, measure: str) -> np.ndarray:
        """Each record's value under a human hardness measure (NaN: unrated)."""
        if get_measure(measure).needs_model:
            raise TruthprobeError(f"{measure}: the studies take human-rated measures only")
        values = hardness_values(self.records, measure)
        return np.array([np.nan if v is None else v for v in values], dtype=float)


def source_from_task(
    task: Task, read: Callable[[int], ProbeData], layers: Sequence[int], zero_shot: np.ndarray
) -> Source:
    """A `Source` over `task.pool` (every choice record), with the task's split mapped onto it."""
    items = task.items
    hard = np.zeros(len(task.pool), bool)
    hard[items[np.array([s == "hard" for s in task.strata], bool)]] = True
    return Source(
        task=task.name,
        records=task.pool,
        read=read,
        layers=tuple(layers),
        zero_shot=np.asarray(zero_shot, dtype=float),
        test=items[task.split.test],
        validation=items[task.split.validation],
        pools={name: items[rows] for name, rows in task.split.pools.items()},
        hard=hard,
        content_hash=task.dataset.content_hash,
    )


def _reader(path: Path, rows: np.ndarray, records: tuple[Question, ...]):
    from truthprobe.activations import ActivationCache
    from truthprobe.methods.base import answer_end_features

    ids = tuple(r.id for r in records)
    answers = np.array([r.answer_index for r in records])

    def read(layer: int) -> ProbeData:
        with ActivationCache(path) as cache:
            states = answer_end_features(cache, layer, rows)
            mask = cache.item("choice_mask")[rows]
        return ProbeData(ids, states, mask, answers)

    return read


def load_sources(
    tasks: Sequence[str],
    models,
    data: DataConfig,
    split: SplitConfig,
    cache_config: CacheConfig,
    progress: bool = True,
    prompt: PromptConfig | None = None,
) -> dict[str, Source]:
    """Each task's `Source`, its dataset's cache filled first (only missing rows extracted).

    Raises:
        TruthprobeError: a free-form dataset (no choices, so no states), a model-based measure,
            bad data or too few items for the split.
    """
    from truthprobe.activations import ActivationCache
    from truthprobe.harness import fill_dataset
    from truthprobe.mdl import zero_shot_correct

    datasets: dict[str, Dataset] = {}
    resolved: dict[str, Task] = {}
    for text in tasks:  # from the data alone, before any model is loaded
        spec = TaskSpec.parse(text)
        if get_measure(spec.measure).needs_model:
            raise TruthprobeError(f"{text}: the studies take human-rated measures only")
        if spec.dataset not in datasets:
            datasets[spec.dataset] = data.load(spec.dataset)
        dataset = datasets[spec.dataset]
        if not choice_records(dataset):
            raise TruthprobeError(f"{text}: {dataset.name} has no answer choices, so no probes")
        resolved[text] = load_task(spec, data, split, dataset)
    sources: dict[str, Source] = {}
    verified: dict[str, set[int]] = {}
    for text, task in resolved.items():
        path, layers, _ = fill_dataset(
            task.dataset, models, cache_config, progress, verified, prompt
        )
        with ActivationCache(path) as cache:
            rows = cache.rows_of([r.id for r in task.pool])
            right = zero_shot_correct(cache)
        zero_shot = np.array([right[r.id] for r in task.pool])
        source = source_from_task(task, _reader(path, rows, task.pool), layers, zero_shot)
        source.cache = str(path)
        sources[text] = source
    return sources
