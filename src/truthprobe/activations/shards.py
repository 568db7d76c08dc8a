"""Shards: one cache's rows in several files, filled by separate processes, read as one cache.

A shard is (cache identity, a range of the cache's rows in its one length-sorted order). A
row's values do not depend on which rows share its pass (`truthprobe.scoring.forward_batch`),
so a shard's rows equal the whole cache's. A shard file is an ordinary cache whose items are
its range, with the same identity attributes, checksums and digests, plus the attribute
`shard`; it is filled under a temporary name and renamed once every row is written, so a
finished shard is never computed again and a killed one resumes from its written rows.

`merge_shards` presents the shards as one cache through an HDF5 virtual dataset file at the
whole cache's path: its states, scores and row flags are views of the shard files (nothing
is copied but the item tables), so probes, reports, studies and `cache verify` read it as
they read a cache made in one process. It is read-only: a damaged row is repaired in its
shard, and the merge made again.

Layout: `<cache>.h5` (the merged file) beside `<cache>.shards/<i>-of-<n>.h5`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from truthprobe.activations.cache import (
    CHUNK_ROWS,
    MERGED_ATTR,
    SHARD_ATTR,
    ActivationCache,
    CacheError,
    text_hash,
    writer_lock,
)

if TYPE_CHECKING:  # merging needs neither torch nor a model
    from truthprobe.activations.extraction import CachePlan
    from truthprobe.data import Question
    from truthprobe.models import LoadedModel
    from truthprobe.prompts import PromptTemplate

#: A shard file's name: `<index>-of-<count>.h5`.
SHARD_NAME = re.compile(r"(\d+)-of-(\d+)\.h5")

#: Datasets of a merged file that are views of its shards (rows on axis 1 for hidden states).
VIEWED = (
    "hidden/answer_end",
    "hidden/question_end",
    "scores/choice_logprob",
    "scores/choice_tokens",
    "scores/choice_chars",
    "scores/min_k",
    "scores/min_k_pp",
    "scores/question_tokens",
    "rows/done",
    "rows/digest",
    "rows/scored",
    "rows/score_digest",
)
#: Item tables a merged file holds itself (concatenated from its shards).
ITEMS = ("id", "row", "answer_index", "n_choices", "choice_mask", "record")


def shard_ranges(n_items: int, count: int) -> list[tuple[int, int]]:
    """`count` contiguous row ranges covering 0..n_items, as even as whole `CHUNK_ROWS` chunks
    allow (a chunk never straddles two shards, so every shard reads and checks whole chunks).

    Raises:
        CacheError: more shards than chunks.
    """
    chunks = -(-n_items // CHUNK_ROWS)
    if not 1 <= count <= max(chunks, 1):
        raise CacheError(
            f"{count} shards for {n_items} rows: at most one shard per {CHUNK_ROWS} rows "
            f"({max(chunks, 1)} here)"
        )
    bounds = [min(n_items, (chunks * i // count) * CHUNK_ROWS) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def shard_path(cache_path: str | Path, index: int, count: int) -> Path:
    """Where shard `index` of `count` of the cache at `cache_path` lives."""
    cache_path = Path(cache_path)
    width = len(str(count))
    return cache_path.with_name(cache_path.stem + ".shards") / f"{index:0{width}d}-of-{count}.h5"


def _working(path: Path) -> Path:
    """A shard's name while it is being filled."""
    return path.with_name(path.name + ".filling")


def _shard_info(plan: CachePlan, index: int, count: int) -> dict:
    lo, hi = shard_ranges(len(plan.order), count)[index]
    return {
        "of": plan.spec.key,
        "index": index,
        "count": count,
        "range": [lo, hi],
        "n_items": len(plan.order),
    }


def _check_shard(cache: ActivationCache, plan: CachePlan, info: dict) -> None:
    """Refuse a shard file made for another cache or another cut of it."""
    cache.check_spec(plan.spec)
    found = json.loads(cache.attrs.get(SHARD_ATTR) or "null")
    if found != info:
        raise CacheError(
            f"{cache.path}: a shard of another cut of this cache ({found}, wanted {info}); "
            "delete the folder's shards or run with the same --shards"
        )


def fill_shard(
    plan: CachePlan,
    records: Sequence[Question],
    loaded: LoadedModel,
    template: PromptTemplate,
    index: int,
    count: int,
    backend: str = "hf",
    progress: bool = True,
    max_prompt_tokens: int = 0,
    batch_size: int = 0,
    question_scores: bool = False,
) -> Path:
    """Make shard `index` of `count` of the cache `plan` describes, unless it is made already
    (with `question_scores`: also its rows' Min-K% scores).

    Idempotent: a finished shard file (checked for identity and cut) is returned as it is; a
    shard interrupted while filling resumes from its written rows. Returns its path.

    Raises:
        CacheError: a file at the shard's place was made for another cache or cut.
    """
    from truthprobe.activations.extraction import fill_rows

    refuse_whole(plan.path)
    info = _shard_info(plan, index, count)
    final = shard_path(plan.path, index, count)
    if final.exists():
        with ActivationCache(final) as done:
            _check_shard(done, plan, info)
            if done.is_complete and not (question_scores and len(done.unscored_rows())):
                return final
            if done.is_complete:  # finished before question scores were asked for
                fill_rows(
                    done, records, None, loaded, template, backend, progress, max_prompt_tokens,
                    batch_size=batch_size, question_scores=True,
                )  # fmt: skip
                return final
    work = _working(final)
    lo, hi = info["range"]
    if not work.exists():
        attrs = {**plan.extra_attrs, SHARD_ATTR: json.dumps(info)}
        ActivationCache.create(work, plan.spec, records, plan.order[lo:hi], plan.d_model, attrs)
    with ActivationCache(work) as cache:
        _check_shard(cache, plan, info)
        fill_rows(
            cache, records, None, loaded, template, backend, progress, max_prompt_tokens,
            batch_size=batch_size, question_scores=question_scores,
        )  # fmt: skip
        complete = cache.is_complete
    if not complete:  # fill_rows writes every row or raises
        raise CacheError(f"{work}: not every row was written")
    with writer_lock(work):
        os.replace(work, final)
    return final


def merged_or_absent(cache_path: Path) -> bool:
    """True where no cache lies at `cache_path` or a merged one does (shards may go there)."""
    if not cache_path.is_file():
        return True
    try:
        with h5py.File(cache_path, "r") as f:
            return MERGED_ATTR in f.attrs
    except OSError:
        return False


def refuse_whole(cache_path: Path) -> None:
    """Never shard (and so never replace by a merge) a cache made in one process."""
    if not merged_or_absent(cache_path):
        raise CacheError(
            f"{cache_path}: a cache made in one process is there already; it is used as it is "
            "(run without --shards), and merging shards would replace it: move it away first "
            "to shard it"
        )


def shard_count(cache_path: str | Path) -> int:
    """How many shards the finished files beside `cache_path` were cut into.

    Raises:
        CacheError: no shard files, or files of several cuts.
    """
    cache_path = Path(cache_path)
    folder = shard_path(cache_path, 0, 1).parent
    counts = {int(m[2]) for p in folder.glob("*.h5") if (m := SHARD_NAME.fullmatch(p.name))}
    if len(counts) != 1:
        found = "no shard files" if not counts else f"shards of cuts {sorted(counts)}"
        raise CacheError(f"{cache_path}: {found} in {folder}; run the shards first")
    return counts.pop()


def merge_shards(cache_path: str | Path, count: int | None = None) -> Path:
    """Build the merged file at `cache_path` from its `count` finished shards (None: as many
    as the files beside it say, `shard_count`; see the module docstring). Made under a
    temporary name and renamed: a failed merge leaves nothing.

    Raises:
        CacheError: a shard is missing, unfinished, or made for another cache or cut.
    """
    cache_path = Path(cache_path)
    refuse_whole(cache_path)
    count = count or shard_count(cache_path)
    paths = [shard_path(cache_path, i, count) for i in range(count)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CacheError(
            f"{cache_path}: cannot merge: {len(missing)} of {count} shards not finished "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); run them first"
        )
    shards = [ActivationCache(p) for p in paths]
    try:
        infos = _consistent(cache_path, shards, count)
        staging = cache_path.with_name(f"{cache_path.name}.merging-{os.getpid()}")
        try:
            _write_merged(staging, cache_path, shards, infos)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        os.replace(staging, cache_path)
    finally:
        for shard in shards:
            shard.close()
    return cache_path


def _consistent(cache_path: Path, shards: list[ActivationCache], count: int) -> list[dict]:
    """The shards' `shard` attributes, once every shard is finished, of one cache, and their
    ranges tile its rows in order."""
    first = shards[0]
    infos = []
    for i, shard in enumerate(shards):
        info = json.loads(shard.attrs.get(SHARD_ATTR) or "null")
        if not info or info.get("index") != i or info.get("count") != count:
            raise CacheError(f"{shard.path}: not shard {i} of {count} of {cache_path.name}")
        if shard.key != first.key or info["of"] != first.key:
            raise CacheError(
                f"{shard.path}: made for another cache than {first.path} (model, data, "
                "template, layers or storage differ); delete it and run that shard again"
            )
        if not shard.is_complete:
            raise CacheError(f"{shard.path}: not every row is written; run that shard again")
        infos.append(info)
    n = infos[0]["n_items"]
    if [tuple(i["range"]) for i in infos] != shard_ranges(n, count):
        raise CacheError(f"{cache_path}: its shards' row ranges do not tile its {n} rows")
    return infos


def _write_merged(
    staging: Path, cache_path: Path, shards: list[ActivationCache], infos: list[dict]
) -> None:
    n = infos[0]["n_items"]
    relative = [os.path.relpath(s.path, cache_path.parent) for s in shards]
    with h5py.File(staging, "w") as f:
        for name in VIEWED:
            sample = shards[0]._file[name]
            rows_axis = 1 if name.startswith("hidden/") else 0
            shape = list(sample.shape)
            shape[rows_axis] = n
            layout = h5py.VirtualLayout(shape=tuple(shape), dtype=sample.dtype)
            for shard, info, source in zip(shards, infos, relative, strict=True):
                lo, hi = info["range"]
                part = shard._file[name]
                where = (slice(None), slice(lo, hi)) if rows_axis else (slice(lo, hi),)
                layout[where] = h5py.VirtualSource(source, name, shape=part.shape)
            f.create_virtual_dataset(name, layout)
        columns = {name: [s.item(name) for s in shards] for name in ITEMS}
        for name, parts in columns.items():
            values = np.concatenate(parts)
            if values.dtype == object or values.dtype.kind in "OUS":
                f.create_dataset(f"items/{name}", data=values.astype(object).astype(
                    h5py.string_dtype()))  # fmt: skip
            else:
                f.create_dataset(f"items/{name}", data=values, chunks=True, fletcher32=True)
        ids, texts = np.concatenate(columns["id"]), np.concatenate(columns["record"])
        f.attrs.update({k: v for k, v in shards[0]._file.attrs.items() if k != SHARD_ATTR})
        f.attrs.update(
            n_items=n,
            chunk_rows=CHUNK_ROWS,
            items_sha256=text_hash(ids, texts),
            extract_seconds=sum(float(s.attrs.get("extract_seconds", 0.0)) for s in shards),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        f.attrs[MERGED_ATTR] = json.dumps(relative)
