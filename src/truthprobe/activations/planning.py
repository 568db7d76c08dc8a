"""What filling caches will take, said before any weight is loaded (`--dry-run`).

A command that fills caches names them as `CacheRequest`s (a dataset's records with choices,
which of them, the template); `estimate` plans each with the model's configuration and
tokenizer alone (`models.load_planning`: weights on the meta device), so a 70B model is
planned on a login node in seconds: the cache's path, items wanted and already cached, tokens,
the disk the new rows and the whole cache take (`cache.item_bytes`), and each shard's share.
The same estimate is the disk check a fill starts with (`cache.require_disk`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from truthprobe.activations.cache import (
    ActivationCache,
    chunk_bytes,
    free_disk,
    gigabytes,
    item_bytes,
)
from truthprobe.configs import CacheConfig, ModelConfig

if TYPE_CHECKING:
    from truthprobe.activations.extraction import CachePlan
    from truthprobe.data import Question
    from truthprobe.models import LoadedModel
    from truthprobe.prompts import PromptTemplate


@dataclass(frozen=True)
class CacheRequest:
    """One cache a command fills: a dataset's records with choices and which of them."""

    dataset: str
    records: Sequence[Question]
    template: PromptTemplate
    ids: tuple[str, ...] | None = None
    """The items wanted (None: every record, as sharded runs and model-rated hardness fill)."""
    layers: tuple[int, ...] | None = None
    cache_path: str | None = None
    question_scores: bool = False


@dataclass
class CacheEstimate:
    """A planned cache: where, how much is wanted and cached, and its size."""

    request: CacheRequest
    plan: CachePlan
    wanted: list[int]
    """Dataset indices of the wanted records."""
    cached: int
    """Wanted items already written (in a cache or in finished shards)."""
    per_item: int
    new_bytes: int
    """What writing the wanted rows not yet written allocates (`cache.chunk_bytes`)."""
    shards: int = 1

    @property
    def whole_bytes(self) -> int:
        n = len(self.plan.order)
        return chunk_bytes(np.arange(n), np.zeros(n, bool), self.per_item)

    def shard_shares(self) -> list[tuple[int, int]]:
        """(items, tokens) of each shard."""
        from truthprobe.activations.shards import shard_ranges

        order, lengths = self.plan.order, self.plan.lengths
        return [
            (hi - lo, sum(lengths[i] for i in order[lo:hi]))
            for lo, hi in shard_ranges(len(order), self.shards)
        ]

    def lines(self) -> list[str]:
        spec, plan = self.plan.spec, self.plan
        tokens = sum(plan.lengths[i] for i in self.wanted)
        rows = sum(self.request.records[i].n_choices for i in self.wanted)
        width = spec.n_choices_max
        lines = [
            f"  {self.request.dataset} ({self.request.template.name} template): {plan.path}",
            f"    items {len(self.wanted):,} of {len(plan.order):,} ({self.cached:,} already "
            f"cached), {rows:,} choice rows, {tokens:,} tokens",
            f"    disk: {len(spec.layers)} layers x ({width} choices + question) x "
            f"{plan.d_model} x {spec.storage} = {self.per_item / 1e3:,.1f} KB per item; this "
            f"run writes about {gigabytes(self.new_bytes)}, the whole cache is "
            f"{gigabytes(self.whole_bytes)}",
        ]
        if self.shards > 1:
            shares = self.shard_shares()
            items = sorted({n for n, _ in shares})
            span = f"{items[0]:,}" if len(items) == 1 else f"{items[0]:,}-{items[-1]:,}"
            lines.append(
                f"    shards: {self.shards} of {span} items, at most "
                f"{gigabytes(items[-1] * self.per_item)} and "
                f"{max(t for _, t in shares):,} tokens each"
            )
        return lines


def estimate(request: CacheRequest, loaded: LoadedModel, cache: CacheConfig) -> CacheEstimate:
    """Plan `request` for `loaded` (a planning model will do) under `cache`'s settings."""
    from truthprobe.activations.extraction import plan_cache
    from truthprobe.activations.shards import shard_path

    plan = plan_cache(
        request.dataset, request.records, loaded, request.template, request.layers, cache,
        request.cache_path,
    )  # fmt: skip
    if request.ids is None or cache.shards > 1:
        wanted = list(range(len(request.records)))
    else:
        index = {r.id: i for i, r in enumerate(request.records)}
        wanted = sorted(index[i] for i in request.ids)
    spec = plan.spec
    per_item = item_bytes(len(spec.layers), spec.n_choices_max, plan.d_model, spec.storage)
    done = np.zeros(len(plan.order), bool)
    if plan.path.exists():  # its own row order (a cache made by earlier code may differ)
        with ActivationCache(plan.path) as opened:
            done = opened.done_rows()
            rows = opened.rows_of([request.records[i].id for i in wanted])
    else:  # a new cache's rows follow the plan's order
        row_of = np.empty(len(plan.order), np.int64)
        row_of[np.asarray(plan.order, np.int64)] = np.arange(len(plan.order))
        rows = row_of[wanted]
    if not plan.path.exists() and cache.shards > 1:
        from truthprobe.activations.shards import shard_ranges

        for k, (lo, hi) in enumerate(shard_ranges(len(plan.order), cache.shards)):
            done[lo:hi] = shard_path(plan.path, k, cache.shards).exists()
    missing = rows[~done[rows]]
    new_bytes = chunk_bytes(missing, done, per_item)
    return CacheEstimate(
        request, plan, wanted, len(rows) - len(missing), per_item, new_bytes, cache.shards
    )


def dry_run(
    requests: Sequence[CacheRequest], models: Sequence[ModelConfig], cache: CacheConfig
) -> str:
    """The plan of filling `requests` for each of `models`, as printed by `--dry-run`: per
    model its size and weight memory, per cache what `CacheEstimate.lines` says, and the
    estimate against the free disk."""
    from truthprobe.models import load_planning, parameter_count, weight_bytes

    lines = ["dry run: nothing is loaded, extracted or written"]
    total = 0
    for model in models:
        loaded = load_planning(model)
        lines.append(
            f"model {model.name} ({model.quantization}, {loaded.fingerprint.dtype}): "
            f"{parameter_count(loaded):,} parameters, {loaded.n_layers} layers, d_model "
            f"{loaded.d_model}; weights about {gigabytes(weight_bytes(loaded))} in memory"
        )
        for request in requests:
            found = estimate(request, loaded, cache)
            lines += found.lines()
            total += found.new_bytes
    if cache.shards > 1:
        workers = (
            "one array task per shard"
            if cache.launcher == "slurm"
            else f"{cache.workers or 'one worker per shard, at most one per core'}"
        )
        lines.append(f"launcher: {cache.launcher} ({workers}), {cache.shards} shards per cache")
    existing, free = free_disk(cache.cache_dir)
    verdict = "fits" if total <= free else "does NOT fit: the run would refuse to start"
    lines.append(
        f"disk: this plan writes about {gigabytes(total)}; {gigabytes(free)} free under "
        f"{existing}: {verdict}"
    )
    return "\n".join(lines)
