"""Extraction: fill a dataset's activation cache with the rows a run needs, and no others.

`open_cache` finds (or creates) the one cache of a (model, dataset, template, layers, storage):
its file name ends with a hash of that identity, so a different model, data version, template,
layer set or storage gets its own file, and hardness measures, caps and splits never do.
`fill_rows` computes the requested rows that are not written yet, in packed passes of any
composition (a row's values do not depend on its pass; see `truthprobe.scoring.forward_batch`),
and their question scores only when asked (`truthprobe extract` is both, for the rows its flags
select: `truthprobe.activations.extract_command`). The forward passes themselves are the scoring
engine's (`truthprobe.scoring`).
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from truthprobe.activations.cache import (
    ActivationCache,
    CacheError,
    CacheSpec,
    Damage,
    ExtractError,
    chunk_bytes,
    item_bytes,
    require_disk,
)
from truthprobe.backends import get_runner
from truthprobe.configs import CacheConfig
from truthprobe.data import Question, content_hash
from truthprobe.min_k import min_k_rows
from truthprobe.models import LoadedModel
from truthprobe.names import safe_name
from truthprobe.prompts import PromptTemplate
from truthprobe.scoring import (
    HEAD_ROWS,
    VOCAB_CHUNK,
    BatchOutput,
    EncodedItem,
    encode,
    forward_batch,
    forward_per_sequence,
    max_positions,
    packs,
    pass_tokens,
)

log = logging.getLogger(__name__)
#: A prompt over this many times its dataset's median length (and over the floor) is reported.
LONG_PROMPT_FACTOR = 8
LONG_PROMPT_FLOOR = 512
#: Marks, in a `fill_rows` caller's set of verified rows, that the item tables were checked.
ITEMS_CHECKED = -1


def resolve_layers(requested: Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Validate hidden-state indices (0 = embeddings .. n_layers = last block)."""
    if requested is None:
        return tuple(range(n_layers + 1))
    bad = [k for k in requested if not 0 <= k <= n_layers]
    if bad:
        raise ExtractError(
            f"layer index {bad[0]} out of range: this model has hidden states 0..{n_layers} "
            "(0 = embeddings)"
        )
    return tuple(sorted(set(requested)))


def cache_spec(
    dataset_name: str,
    records: Sequence[Question],
    loaded: LoadedModel,
    template: PromptTemplate,
    layers: tuple[int, ...],
    storage: str,
    prompt_limit: int = 0,
) -> CacheSpec:
    """The identity of the cache of `records` (a dataset's records with choices)."""
    require_choices(dataset_name, records)
    return CacheSpec(
        model=loaded.fingerprint.to_json(),
        template=template.to_json(),
        template_hash=template.hash,
        dataset=dataset_name,
        dataset_hash=content_hash(records),
        layers=layers,
        storage=storage,  # type: ignore[arg-type]
        n_choices_max=max(r.n_choices for r in records),
        prompt_limit=prompt_limit,
    )


def require_choices(dataset_name: str, records: Sequence[Question]) -> None:
    if not records:
        raise ExtractError(
            f"{dataset_name}: no records with answer choices to extract (free-form datasets "
            "such as GSM8k are used by ICL and QLoRA with chain-of-thought, not by probes)"
        )


def default_cache_path(cache_dir: str | Path, loaded: LoadedModel, spec: CacheSpec) -> Path:
    """`<cache_dir>/<model-slug>/<dataset>-<template>-<identity hash>.h5`."""
    name = Path(spec.dataset).stem if spec.dataset.endswith(".jsonl") else spec.dataset
    template = json.loads(spec.template)["name"]
    file = safe_name(f"{safe_name(name)}-{safe_name(template)}-{spec.key}") + ".h5"
    return Path(cache_dir) / loaded.fingerprint.slug / file


@dataclass(frozen=True)
class CachePlan:
    """Where a cache of `records` lives, what it is and its rows' order: all `open_cache` needs
    to create it, and all a shard needs to hold the same rows (`truthprobe.activations.shards`)."""

    spec: CacheSpec
    path: Path
    order: tuple[int, ...]
    """Dataset indices in cache row order (longest prompt first)."""
    d_model: int
    extra_attrs: dict = field(default_factory=dict)
    lengths: tuple[int, ...] = ()
    """Tokens of each record (dataset order) in a pass: prompt and every choice."""


def plan_cache(
    dataset_name: str,
    records: Sequence[Question],
    loaded: LoadedModel,
    template: PromptTemplate,
    layers: Sequence[int] | None,
    cache: CacheConfig,
    cache_path: str | Path | None = None,
    backend: str = "hf",
    ordered: bool = True,
) -> CachePlan:
    """The identity, path and row order of the cache of `records` (`ordered=False`: identity
    and path only, for a cache that exists). Every record is tokenised here, before any
    forward pass: the place to refuse long ones. The order is one length-sorted order (longest
    first: passes of similar lengths, and memory peaks early), the same in every process that
    plans the same cache."""
    limit = prompt_limit(loaded, cache)
    spec = cache_spec(
        dataset_name,
        records,
        loaded,
        template,
        resolve_layers(layers, loaded.n_layers),
        cache.storage,
        limit if cache.truncate_prompts else 0,
    )
    path = Path(cache_path) if cache_path else default_cache_path(cache.cache_dir, loaded, spec)
    extra = {"backend": backend, "dtype_compute": loaded.fingerprint.dtype}
    if not ordered:
        return CachePlan(spec, path, (), loaded.d_model, extra)
    lengths = [
        encode_within(loaded, template, r, limit, cache.truncate_prompts).n_tokens for r in records
    ]
    warn_long_prompts(records, lengths, loaded)
    order = sorted(range(len(records)), key=lambda i: (-lengths[i], i))
    return CachePlan(spec, path, tuple(order), loaded.d_model, extra, tuple(lengths))


def open_cache(
    dataset_name: str,
    records: Sequence[Question],
    loaded: LoadedModel,
    template: PromptTemplate,
    layers: Sequence[int] | None,
    cache: CacheConfig,
    cache_path: str | Path | None = None,
    backend: str = "hf",
) -> ActivationCache:
    """Open the cache of `records` (for reading), creating its skeleton if there is none
    (`plan_cache` gives its path and row order).

    Raises:
        CacheError: an explicit `cache_path` holds a cache made for something else.
    """
    wanted = (dataset_name, records, loaded, template, layers, cache, cache_path, backend)
    plan = plan_cache(*wanted, ordered=False)
    if plan.path.exists():
        opened = ActivationCache(plan.path)
        try:
            opened.check_spec(plan.spec)
        except CacheError:
            opened.close()
            raise
        return opened
    plan = plan_cache(*wanted)
    return ActivationCache.create(
        plan.path, plan.spec, records, plan.order, plan.d_model, plan.extra_attrs
    )


def warn_long_prompts(
    records: Sequence[Question], lengths: Sequence[int], loaded: LoadedModel
) -> None:
    """Warn, before extraction, of prompts far longer than the rest of their dataset.

    One 29k-token question among 100-token ones is accepted by the model, but its forward pass
    takes minutes and gigabytes where the others take milliseconds, with nothing saying why. A
    prompt is reported when it is over `LONG_PROMPT_FACTOR` times the median and over
    `LONG_PROMPT_FLOOR` tokens, with its length and the memory its pass will take.
    """
    if not lengths:
        return
    median = float(np.median(lengths))
    bound = max(LONG_PROMPT_FACTOR * median, LONG_PROMPT_FLOOR)
    long = sorted((i for i, n in enumerate(lengths) if n > bound), key=lambda i: -lengths[i])
    if long:
        first = records[long[0]]
        others = f" and {len(long) - 1} more over {bound:.0f}" if len(long) > 1 else ""
        log.warning(
            "%s (id %r): its prompt and longest choice are %d tokens, %.0fx this dataset's "
            "median of %.0f%s; its forward pass takes about %s of memory and far longer than "
            "the others. To bound it, pass --max-prompt-tokens N with --truncate-prompts (drops "
            "tokens from the prompt's start), or leave the record out",
            first.where or "record", first.id, lengths[long[0]], lengths[long[0]] / median,
            median, others, _gib(pass_memory(loaded, lengths[long[0]])),
        )  # fmt: skip


def pass_memory(loaded: LoadedModel, tokens: int) -> int:
    """Rough bytes one forward pass over `tokens` positions holds at its peak: every layer's
    hidden states, one layer's attention weights (quadratic in length) and one head product's
    logits (`HEAD_ROWS` rows by `VOCAB_CHUNK`), in float32."""
    config = loaded.model.config.get_text_config()
    heads = int(getattr(config, "num_attention_heads", 1))
    states = (loaded.n_layers + 1) * tokens * loaded.d_model
    return 4 * (states + heads * tokens * tokens + HEAD_ROWS * VOCAB_CHUNK)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def prompt_limit(loaded: LoadedModel, cache: CacheConfig) -> int:
    """The longest prompt plus choice a cache accepts: the flag, or the model's positions."""
    return cache.max_prompt_tokens or max_positions(loaded)


def encode_within(
    loaded: LoadedModel, template: PromptTemplate, record: Question, limit: int, truncate: bool
) -> EncodedItem:
    """`encode`, then left-truncated to `limit` positions, or refused naming file and line."""
    item = encode(loaded.tokenizer, template, record)
    if item.longest <= limit:
        return item
    if truncate:
        return item.truncated(limit)
    raise ExtractError(
        f"{record.where or 'record'} (id {record.id!r}): the prompt and its longest choice are "
        f"{item.longest} tokens, more than the {limit} allowed (the model's positions, or "
        "--max-prompt-tokens); shorten the record, or pass --truncate-prompts to drop tokens "
        "from the start of long prompts"
    )


@dataclass
class FillResult:
    rows_extracted: int
    passes: int
    seconds: float
    tokens: int
    damaged: list[Damage] = field(default_factory=list)
    """Written rows that failed verification and were computed again."""
    rows_scored: int = 0
    """Rows whose question scores (Min-K%) this call computed."""


def fill_rows(
    cache: ActivationCache,
    records: Sequence[Question],
    rows: np.ndarray | None,
    loaded: LoadedModel,
    template: PromptTemplate,
    backend: str = "hf",
    progress: bool = True,
    max_prompt_tokens: int = 0,
    verified: set[int] | None = None,
    batch_size: int = 0,
    question_scores: bool = False,
    weights: Callable[[], LoadedModel] | None = None,
) -> FillResult:
    """Extract every unwritten row among `rows` (cache rows; None = all), and with
    `question_scores` their question scores (Min-K%) where missing.

    `weights`: where `loaded` is the model without its weights (`models.load_planning`), how to
    load them; called only when a row is to be computed, so a run over a full cache never loads
    them.

    The written rows among `rows` are verified first (checksums and digests), except those in
    `verified` (rows this run has checked already; the set is extended); damaged ones are
    computed again, so a run never uses a damaged row. Passes hold as many questions as
    `scoring.pass_tokens` tokens for the device, at most `batch_size` when it is not 0.

    `records` are the dataset's records with choices, indexed as the cache's `items/row`.
    """
    if verified is None or ITEMS_CHECKED not in verified:
        ids = [r.id for r in records]
        tables = cache.damaged_items(ids)
        if tables:
            log.warning(
                "%s: item table(s) %s damaged, rewriting them from the stored records",
                cache.path,
                ", ".join(f"items/{name}" for name in tables),
            )
            cache.repair_items(tables, ids)
        if verified is not None:
            verified.add(ITEMS_CHECKED)
    damaged = cache.verify(rows, skip=verified)  # never use a row that fails its checks
    if damaged:
        log.warning(
            "%s: %d damaged row(s), computing them again; first: %s",
            cache.path,
            sum(len(d.rows) for d in damaged),
            damaged[0].describe(),
        )
        cache.mark_missing(damaged)
        if rows is not None:  # a damaged chunk's other rows are computed again too
            rows = np.union1d(rows, [r for d in damaged for r in d.rows])
    if verified is not None:
        verified.update(int(k) for k in (range(cache.n_items) if rows is None else rows))
    todo = cache.missing_rows(rows)
    if not len(todo) and not (question_scores and len(cache.unscored_rows(rows))):
        return FillResult(0, 0, 0.0, 0, damaged)
    per_item = item_bytes(len(cache.layers), cache.n_choices_max, cache.d_model, cache.storage)
    need = chunk_bytes(todo, cache.done_rows(), per_item)
    require_disk(cache.path.parent, need, f"{cache.path}: extracting {len(todo)} rows")
    if weights is not None:
        loaded = weights()
    truncate_to = int(cache.attrs.get("prompt_limit") or 0)
    limit = truncate_to or max_prompt_tokens or max_positions(loaded)
    record_of_row = cache.item("row")
    budget = pass_tokens(loaded)
    name = Path(str(cache.attrs["dataset"])).stem

    def encoded(todo: np.ndarray) -> list[EncodedItem]:
        return [
            encode_within(loaded, template, records[record_of_row[i]], limit, truncate_to > 0)
            for i in todo
        ]

    began = time.perf_counter()
    tokens = n_passes = 0
    with cache.writing():
        missing = cache.missing_rows(rows)  # again, now that no one else can write
        items = encoded(missing)
        groups = packs(items, budget, batch_size)
        forward = _forward(backend, loaded)
        layers, n_choices = cache.layers, cache.n_choices_max
        bar = tqdm(total=len(missing), unit="item", disable=not progress, desc=f"extract {name}")
        for group in groups:
            batch = [items[i] for i in group]
            out = forward(loaded, batch, layers, n_choices)
            if "pass_check" not in cache.attrs and len(batch) > 1:
                _check_pass(cache, loaded, batch, out, forward)
            chars = np.zeros((len(batch), n_choices), dtype=np.int32)
            for i, it in enumerate(batch):
                chars[i, : len(it.choice_chars)] = it.choice_chars
            cache.write_rows(
                missing[group], out.answer_end, out.question_end, out.logprob, out.tokens, chars
            )
            tokens += sum(it.n_tokens for it in batch)
            bar.update(len(batch))
        bar.close()
        n_passes += len(groups)
        scored = 0
        if question_scores:
            unscored = cache.unscored_rows(rows)
            scored = len(unscored)
            tokens += _score_questions(cache, unscored, encoded(unscored), loaded, progress, name)
        seconds = time.perf_counter() - began
        cache.add_extract_seconds(seconds)
    return FillResult(len(missing), n_passes, seconds, tokens, damaged, scored)


def _score_questions(
    cache: ActivationCache,
    rows: np.ndarray,
    items: list[EncodedItem],
    loaded: LoadedModel,
    progress: bool,
    name: str,
) -> int:
    """The question-score pass: Min-K% of each question's tokens, prefixes only (the LM head over
    every question token is what makes it dear). Returns the tokens it ran."""
    percents = cache.min_k_percents
    bar = tqdm(total=len(rows), unit="item", disable=not progress, desc=f"question scores {name}")
    tokens = 0
    for group in packs(items, pass_tokens(loaded)):
        batch = [items[i] for i in group]
        out = forward_batch(loaded, batch, [], cache.n_choices_max, True, choices=False)
        assert out.question_logprob is not None and out.question_zscore is not None
        cache.write_question_scores(
            rows[group],
            min_k_rows(out.question_logprob, percents),
            min_k_rows(out.question_zscore, percents),
            np.array([it.n_question_tokens for it in batch], np.int32),
        )
        tokens += sum(len(it.prefix) for it in batch)
        bar.update(len(batch))
    bar.close()
    return tokens


def _check_pass(cache: ActivationCache, loaded: LoadedModel, batch, out: BatchOutput, forward):
    """Run the first question of a cache's first multi-question pass again alone and record the
    largest difference between the two (attribute `pass_check`): what a row's neighbours in a
    pass change, measured on this machine (0.0 where bit-identical)."""
    alone = forward(loaded, batch[:1], cache.layers, cache.n_choices_max)
    pairs = (
        (alone.answer_end[:, 0], out.answer_end[:, 0]),
        (alone.question_end[:, 0], out.question_end[:, 0]),
        (alone.logprob[0], out.logprob[0]),
    )
    with np.errstate(invalid="ignore"):  # non-finite states are refused by the write
        worst = max(float(np.abs(a - b).max(initial=0.0)) for a, b in pairs)
    check = {
        "pass_rows": len(batch),
        "max_abs_difference": worst,
        "dtype": loaded.fingerprint.dtype,
        "machine": f"{platform.machine()} {loaded.device.type}",
    }
    cache.set_attr("pass_check", json.dumps(check))
    if worst:
        log.info("%s: a row alone and in its pass differ by up to %.3g", cache.path, worst)


def _forward(backend: str, loaded: LoadedModel):
    if backend == "hf":
        return forward_batch
    return functools.partial(forward_per_sequence, runner=get_runner(backend, loaded))
