"""Pooled training tasks: one training set drawn from several tasks' pools (`arc:grade+mmlu:level`).

A pooled task is a task like any other to the harness: its items are its components' items
(ids prefixed by their dataset), its strata theirs, and its split their splits side by side: the
hard test set is every component's hard test set, the easy validation set every component's,
and each training pool (easy, hard, all, a study's own) the union of theirs. So `truthprobe sweep
--tasks arc:grade+mmlu:level` trains on pooled easy items and reports SGR on the pooled hard test
set, and a pooled probe scored on a held-out task (`Harness.run_transfers`) is the
leave-one-dataset-out cell of the transfer matrix. Its parts live in the task's own folder
(`pooled-arc-grade--mmlu-level`): one part-key value.

The draw rule is the split's, taken per component: a pooled draw of n items takes the first
items of each component's own seeded order in turn, so every dataset gives an equal share (a
large dataset does not drown a small one, as a uniform draw over the union would), a draw of
80 is the start of the draw of 160, and each component's share is a prefix of that
component's own draw with the same seed. Only methods that read the activation cache (zero-shot,
probes) run on it: a prompt cannot hold several datasets' templates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from truthprobe.configs import is_pooled, pooled_parts
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import EvalSplit
from truthprobe.names import safe_name
from truthprobe.tasks import Task, TaskSpec

#: What a pooled task can run: the methods that read only the activation cache.
POOLED_METHODS = ("zero_shot", "probe")


@dataclass(frozen=True)
class PooledSpec:
    """`a:m+b:n`: the tasks whose pools are drawn from together."""

    parts: tuple[TaskSpec, ...]

    @classmethod
    def parse(cls, text: str) -> PooledSpec:
        return cls(tuple(TaskSpec.parse(p) for p in pooled_parts(text)))

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    @property
    def slug(self) -> str:
        return safe_name("pooled-" + "--".join(p.slug for p in self.parts))

    @property
    def measure(self) -> str:
        return "+".join(p.measure for p in self.parts)


@dataclass(frozen=True)
class PooledSplit(EvalSplit):
    """Components' splits side by side (rows offset into the pooled items); draws take each
    component's own seeded order in turn."""

    parts: tuple[EvalSplit, ...] = ()
    offsets: tuple[int, ...] = ()

    @classmethod
    def of(cls, splits: list[EvalSplit], sizes: list[int]) -> PooledSplit:
        offsets = tuple(int(o) for o in np.cumsum([0, *sizes[:-1]]))
        names = set(splits[0].pools).intersection(*(s.pools for s in splits))

        def joined(rows: list[np.ndarray]) -> np.ndarray:
            return np.concatenate([r + o for r, o in zip(rows, offsets, strict=True)])

        return cls(
            test=joined([s.test for s in splits]),
            validation=joined([s.validation for s in splits]),
            pools={n: joined([s.pools[n] for s in splits]) for n in sorted(names)},
            config=splits[0].config,
            parts=tuple(splits),
            offsets=offsets,
        )

    def draw_order(self, train_on: str, seed: int) -> np.ndarray:
        """Each component's `draw_order` (offset), interleaved: one item of each in turn
        while it has items left; a study's own pool of the pooled task is drawn as a whole."""
        if not all(train_on in s.pools for s in self.parts):
            return super().draw_order(train_on, seed)
        orders = [s.draw_order(train_on, seed) + o
                  for s, o in zip(self.parts, self.offsets, strict=True)]  # fmt: skip
        turn = np.concatenate([np.arange(len(order)) for order in orders])
        rows = np.concatenate(orders)
        part = np.concatenate([np.full(len(order), i) for i, order in enumerate(orders)])
        return rows[np.lexsort((part, turn))]


@dataclass
class PooledTask(Task):
    """A task whose items are several tasks' items (`Task`'s fields over all of them)."""

    components: tuple[Task, ...] = field(default=())

    @classmethod
    def of(cls, spec: PooledSpec, components: list[Task]) -> PooledTask:
        """Join component tasks (resolved from their data as usual).

        Raises:
            TruthprobeError: a component without answer choices (no hidden states to pool).
        """
        for task in components:
            if task.free_form:
                raise TruthprobeError(
                    f"{spec.name}: {task.name} has no answer choices, so nothing to pool"
                )
        records = tuple(r for t in components for r in t.records)
        split = PooledSplit.of([t.split for t in components], [len(t.items) for t in components])
        strata = tuple(s for t in components for s in t.strata)
        return cls(spec, None, records, np.arange(len(records)), strata, split, tuple(components))  # type: ignore[arg-type]

    @cached_property
    def ids(self) -> tuple[str, ...]:
        """Component item ids prefixed by their task (two datasets may share an id)."""
        return tuple(f"{t.spec.slug}/{i}" for t in self.components for i in t.ids)

    @cached_property
    def fingerprint(self) -> str:
        payload = json.dumps([t.fingerprint for t in self.components])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class PooledStates:
    """The cached states of a pooled task: its components' (`TaskStates`), choices padded to
    the widest component (padding masked out, as a cache pads its own short items)."""

    def __init__(self, parts: list, task: PooledTask) -> None:
        self.parts = parts
        self.task = task
        self._layer: tuple[int, object] | None = None

    def probe_data(self, layer: int):
        from truthprobe.probes import ProbeData

        if self._layer is None or self._layer[0] != layer:
            data = [p.probe_data(layer) for p in self.parts]
            width = max(d.mask.shape[1] for d in data)
            states = np.concatenate([_padded(d.states, width) for d in data])
            mask = np.concatenate([_padded(d.mask, width) for d in data])
            answers = np.concatenate([d.answer_index for d in data])
            self._layer = (layer, ProbeData(self.task.ids, states, mask, answers))
        return self._layer[1]

    def scores(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        found = [p.scores(name) for p in self.parts]
        width = max(mask.shape[1] for _, mask in found)
        return (
            np.concatenate([_padded(score, width) for score, _ in found]),
            np.concatenate([_padded(mask, width) for _, mask in found]),
        )


def _padded(array: np.ndarray, width: int) -> np.ndarray:
    """`array` with its choice axis (1) padded with zeros (False) to `width`."""
    pad = [(0, 0)] * array.ndim
    pad[1] = (0, width - array.shape[1])
    return np.pad(array, pad)


def pooled_cache(identities: list[dict]) -> dict:
    """A pooled task's cache identity: its components' (part fingerprints hash its key)."""
    key = hashlib.sha256(json.dumps([i["key"] for i in identities]).encode()).hexdigest()[:16]
    return {"key": key, "format": identities[0]["format"], "components": identities}


def leave_one_out(tasks: tuple[str, ...]) -> dict[str, str]:
    """Per task B, the pooled task of every task on another dataset than B's, where at least two
    are left (with one, it is that task's own row): leave-one-dataset-out training sets."""
    specs = {t: TaskSpec.parse(t) for t in tasks if not is_pooled(t)}
    pooled = {}
    for held, spec in specs.items():
        rest = [t for t, other in specs.items() if other.dataset != spec.dataset]
        if len(rest) >= 2:
            pooled[held] = "+".join(rest)
    return pooled
