"""`ActivationCache`: per-layer hidden states of one (model, dataset, template) in one HDF5 file.

A cache's identity is (model fingerprint, dataset content, template, layers, storage) and
nothing else. It holds a row for every record of the dataset that has answer choices; hardness
measures, per-stratum caps and splits pick rows when results are computed and never change
which file is used. Rows are filled on demand: a run that needs rows the file lacks extracts
just those rows into the same file.

Layout (format 5; documented API, keys are stable):

    hidden/answer_end      (layers, items, choices, d_model)  16-bit words, see `storage`
    hidden/question_end    (layers, items, d_model)
    items/id               (items,)  str           record id
    items/row              (items,)  int64         index of the record in the dataset
    items/answer_index     (items,)  int64         gold choice
    items/n_choices        (items,)  int64
    items/choice_mask      (items, choices) bool   real choices (ragged choice lists)
    items/record           (items,)  str           the full record as JSON (hardness fields too)
    scores/choice_logprob  (items, choices) float32  summed log-likelihood of the continuation
    scores/choice_tokens   (items, choices) int32    continuation length in tokens
    scores/choice_chars    (items, choices) int32    choice length in characters (from 0.5:
                                                     without the separator; lm-eval acc_norm)
    scores/min_k           (items, k) float32        Min-K% of the question's tokens, one column
                                                     per attribute `min_k_percents` (NaN: the
                                                     question was truncated away)
    scores/min_k_pp        (items, k) float32        Min-K%++ (see `truthprobe.min_k`)
    scores/question_tokens (items,) int32            question tokens those scores cover
    rows/done              (items,) uint8            1 once a row's states and choice scores
                                                     are written
    rows/digest            (items, 16) uint8         BLAKE2b of the row's stored words (`STATES`)
    rows/scored            (items,) uint8            1 once its question scores are written
    rows/score_digest      (items, 16) uint8         BLAKE2b of those (`QUESTION_SCORES`)

Why rows, not batches: a row's values do not depend on which rows shared its forward pass (the
scoring engine packs questions, runs attention per question and gives every matrix product
one shape; see
`truthprobe.scoring.forward_batch`), so rows are written and checked one by one, a capped run
extracts exactly the rows it asks for, and passes may hold any rows. The attribute
`pass_check` records the largest difference the extraction measured between a row computed
alone and inside its pass (0.0 where bit-identical). Question scores (Min-K%, the LM head over
every question token) are a separate pass, run only when a `min_k` measure asks for them.
Rows are stored in one length-sorted order (similar lengths side by side) in HDF5 chunks of
`chunk_rows` rows per layer (fletcher32-checksummed), so reading one layer for all items is one
pass over that layer's chunks and a partly filled file stores only what is written.

Why bfloat16 stored as raw 16-bit words: Gemma 3's residual stream reaches ~1e5 in middle layers
and float16 overflows at 65504; bfloat16 keeps float32's range at half the size. HDF5 has no
bfloat16 type, so the top 16 bits of each float32 are stored as uint16 with the attribute
`storage = "bfloat16"`; `storage = "float32"` stores plain floats. Finiteness is checked on write.
Rows' data is flushed before their `rows/done` flags, so an interrupted run never counts
unwritten rows and resumes where it stopped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from truthprobe import __version__
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError, WriteRefusedError, remedy
from truthprobe.locks import InUseError, Lock, describe, holder
from truthprobe.min_k import PERCENTS as MIN_K_PERCENTS

try:
    import resource
except ImportError:  # not on Windows: no file-size limit to read there
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
Storage = Literal["bfloat16", "float32"]
#: Layout version written by this code; older files are refused with rebuild instructions.
#: 1: truthprobe 0.1 (keyed by hardness measure); 2: one cache per dataset; 3: batch digests;
#: 4: Min-K% scores of each question from the extraction pass; 5: rows independent of their
#: pass, written and checked one by one, question scores a pass of their own.
FORMAT = 5
#: Datasets an extraction pass writes rows of, and whose stored words `rows/digest` covers.
STATES = (
    "hidden/answer_end",
    "hidden/question_end",
    "scores/choice_logprob",
    "scores/choice_tokens",
    "scores/choice_chars",
)
#: Datasets the question-score pass writes, covered by `rows/score_digest`.
QUESTION_SCORES = ("scores/min_k", "scores/min_k_pp", "scores/question_tokens")
DIGESTED = STATES + QUESTION_SCORES
#: HDF5 chunk of every row dataset, in rows.
CHUNK_ROWS = 16
#: Numeric item tables, each checked against the records (`damaged_items`) and repairable.
ITEM_TABLES = ("row", "answer_index", "n_choices", "choice_mask")
#: Digested datasets that may hold NaN by design (a question truncated away has no Min-K%).
MAY_BE_NAN = ("scores/min_k", "scores/min_k_pp")
DIGEST_BYTES = 16
#: Rows read at once by `verify` (a multiple of `CHUNK_ROWS`; bounds its memory).
VERIFY_ROWS = 512
#: A write needs room for its bytes times this, plus `ROOM_EXTRA`: HDF5's chunk index and heap
#: grow with the data, and a refused write leaves a file HDF5 cannot close.
ROOM_FACTOR = 2
ROOM_EXTRA = 1 << 16
#: HDF5's message for a file shorter than the end its superblock records.
TRUNCATED = re.compile(r"truncated file: eof = (\d+), .*stored_eof = (\d+)")
#: Attribute of a merged cache: its shard files (`truthprobe.activations.shards`), relative to
#: its folder.
MERGED_ATTR = "shards"
#: Attribute of a shard file: JSON {"of": the whole cache's key, "index", "count", "range":
#: [lo, hi] of the whole cache's rows, "n_items": the whole cache's rows}.
SHARD_ATTR = "shard"
#: Attributes that must match between a cache and a request to reuse it.
IDENTITY_ATTRS = (
    "model",
    "template",
    "template_hash",
    "dataset",
    "dataset_hash",
    "layers",
    "storage",
    "n_choices_max",
    "prompt_limit",
)


class CacheError(TruthprobeError, RuntimeError):
    """A cache file is unreadable, incomplete, or does not match what was asked for."""


class CacheWriteError(WriteRefusedError, CacheError):
    """The disk or the system refused a write into a cache (full disk, quota, file-size limit);
    the rows written before it are kept and the next run resumes after them."""


class ExtractError(TruthprobeError, ValueError):
    """An extraction request that cannot be carried out (bad layer index, no choices, ...)."""


@dataclass(frozen=True)
class Damage:
    """Written rows whose stored words fail their checksum or their digest."""

    rows: tuple[int, ...]
    where: str
    """Dataset (and layer) of the first damaged block found, e.g. `hidden/answer_end layer 5`."""
    problem: str
    scores: bool = False
    """The rows' question scores are damaged (their states are sound)."""
    unreadable: str = ""
    """The dataset whose chunks holding the rows fail their checksum: those chunks are
    overwritten whole before the rows are written again (HDF5 cannot update a chunk it cannot
    read)."""

    def describe(self) -> str:
        rows = self.rows
        span = f"row {rows[0]}" if len(rows) == 1 else f"rows {rows[0]}..{rows[-1]}"
        return f"{self.where}, {span} ({self.problem})"


def _row(name: str, words: np.ndarray, i: int | slice) -> np.ndarray:
    """Row(s) `i` of a dataset's words (hidden states keep rows on axis 1)."""
    return words[:, i] if name.startswith("hidden/") else words[i]


def _digests(words: Mapping[str, np.ndarray], names: Sequence[str], n: int) -> np.ndarray:
    """(n, 16) BLAKE2b of each of n rows' stored words, in `names` order."""
    out = np.zeros((n, DIGEST_BYTES), np.uint8)
    for i in range(n):
        digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
        for name in names:
            digest.update(np.ascontiguousarray(_row(name, words[name], i)).tobytes())
        out[i] = np.frombuffer(digest.digest(), np.uint8)
    return out


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, stop row, offset in `rows`) of each run of consecutive sorted rows."""
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(rows)]])
    return [
        (int(rows[a]), int(rows[b - 1]) + 1, int(a)) for a, b in zip(starts, stops, strict=True)
    ]


def text_hash(*columns: np.ndarray) -> str:
    digest = hashlib.sha256()
    for column in columns:
        for text in column:
            digest.update(text.encode() if isinstance(text, str) else bytes(text))
            digest.update(b"\0")
    return digest.hexdigest()


def lock_path(path: Path) -> Path:
    """The writer lock beside a cache file (`<cache>.h5.lock`)."""
    return path.with_name(path.name + ".lock")


def writer_lock(path: Path) -> Lock:
    """Take the cache's writer lock or raise `InUseError` naming the process that holds it."""
    return Lock(lock_path(path)).acquire(
        str(path), "wait for it to finish, or pass another --cache-dir / --cache-path"
    )


def to_storage(values: np.ndarray, storage: Storage) -> np.ndarray:
    """float32 array -> stored words (bfloat16: round-to-nearest-even top half of float32)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if storage == "float32":
        return values
    bits = values.view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_storage(words: np.ndarray, storage: str) -> np.ndarray:
    """Stored words -> float32 array."""
    if storage == "float32":
        return np.asarray(words, dtype=np.float32)
    return (np.asarray(words, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class CacheSpec:
    """Everything that identifies a cache's contents; a mismatch means it cannot be reused."""

    model: str
    """Model fingerprint as JSON."""
    template: str
    """Template as JSON."""
    template_hash: str
    dataset: str
    dataset_hash: str
    """Content hash of every record with answer choices, in dataset order."""
    layers: tuple[int, ...]
    storage: Storage
    n_choices_max: int
    prompt_limit: int = 0
    """0: prompts as rendered; N: prompts left-truncated (after BOS) to N positions."""

    def attrs(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in IDENTITY_ATTRS}
        values["layers"] = json.dumps(list(self.layers))
        return values

    @property
    def key(self) -> str:
        """Short hash of the identity: the cache file's name ends with it."""
        text = json.dumps(self.attrs(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class ActivationCache:
    """Read access to one cache file (and, via `create`/`write_rows`, the writer's side).

    Opening reads only metadata: no model and no dataset are needed.
    """

    def __init__(self, path: str | Path, mode: Literal["r", "r+"] = "r") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such cache file")
        self._lock: Lock | None = None
        #: The handles of a write the system refused (kept open: HDF5 cannot close them).
        self._refused: list[Any] | None = None
        self._extended_from: int | None = None
        if mode == "r+":
            self._lock = writer_lock(self.path)
        try:
            self._file = self._open(mode)
            self._read_attrs()
        except BaseException:
            self._release()
            raise
        self._ids: list[str] | None = None
        self._records_sound = False
        self.shards: tuple[Path, ...] = ()
        """The shard files of a merged cache (`truthprobe.activations.shards`), else empty."""
        if MERGED_ATTR in self.attrs:
            self._open_merged(mode)
        if self._extended_from is not None:
            self._check_after_extension()

    def _open_merged(self, mode: str) -> None:
        """A merged cache reads its states from its shard files: each must be there (HDF5
        would read a missing one as zeros), and it is never written (its shards are)."""
        self.shards = tuple(self.path.parent / p for p in json.loads(self.attrs[MERGED_ATTR]))
        missing = [str(p) for p in self.shards if not p.is_file()]
        problem = (
            f"{len(missing)} of its {len(self.shards)} shard files are missing "
            f"({', '.join(missing[:3])}); put them back or run the shards again and merge"
            if missing
            else "a merged cache is read-only: repair or extend its shards, then merge again"
            if mode == "r+"
            else ""
        )
        if problem:
            self.close()
            raise CacheError(f"{self.path}: {problem}")

    def _open(self, mode: str) -> h5py.File:
        try:
            return h5py.File(self.path, mode)
        except OSError as err:
            cut = TRUNCATED.search(str(err))
            if cut and int(cut[1]) < int(cut[2]) and self._extended_from is None:
                return self._extend_and_open(mode, int(cut[1]), int(cut[2]), err)
            busy = holder(lock_path(self.path))
            if busy is not None and busy.get("pid") != os.getpid():
                raise InUseError(
                    f"{self.path} is in use by {describe(busy)}, which is writing to it; wait "
                    "for it to finish, or pass another --cache-dir / --cache-path"
                ) from None
            if "unable to lock file" in str(err):  # HDF5's own lock: another process reads it
                raise InUseError(
                    f"{self.path} is open in another process that reads it (a notebook or a "
                    "script holding it open; HDF5 lets no one write while it does): close it "
                    "there and run again, or pass another --cache-dir / --cache-path"
                ) from None
            raise CacheError(
                f"{self.path}: not a readable truthprobe activation cache (not an HDF5 file, "
                f"or truncated or damaged: {err}). If truthprobe wrote it, delete it and run "
                "again; otherwise pass another --cache-path"
            ) from err

    def _extend_and_open(self, mode: str, eof: int, stored_eof: int, err: OSError) -> h5py.File:
        """Open a file that ends before the end its superblock records.

        That is what a write refused by the system (full disk, file-size limit) leaves: the
        rows marked written were flushed before, only the refused tail is missing. The file
        is extended with zeros to its recorded end (under the writer lock) and every written
        row is verified (`_check_after_extension`), so damaged ones are extracted again
        instead of the finished work being thrown away. If it still does not open, it is put
        back as it was.
        """
        lock = None if self._lock is not None else writer_lock(self.path)
        try:
            try:
                os.truncate(self.path, stored_eof)
            except OSError as refused:
                raise CacheWriteError(
                    f"{self.path}: ends at byte {eof} of {stored_eof} (a write was refused) and "
                    f"could not be extended to its recorded end: {refused.strerror}; "
                    f"{remedy(refused.errno)}"
                ) from None
            self._extended_from = eof
            try:
                f = h5py.File(self.path, mode)
                try:  # a file cut anywhere but in its refused tail lost its structure too
                    _ = f.attrs["n_items"], f["rows/done"][:], f["rows/digest"][:]
                    _ = f["items/id"].shape, f["hidden/question_end"].shape
                except Exception:
                    f.close()
                    raise OSError("its structure is in the missing part") from None
                return f
            except OSError:
                os.truncate(self.path, eof)
                self._extended_from = None
                raise CacheError(
                    f"{self.path}: not a readable truthprobe activation cache (truncated: {err}). "
                    "If truthprobe wrote it, delete it and run again; otherwise pass another "
                    "--cache-path"
                ) from err
        finally:
            if lock is not None:
                lock.release()

    def _check_after_extension(self) -> None:
        """Verify every written row and the item tables of a file `_extend_and_open` extended;
        damaged rows are marked to be extracted again, damaged tables rewritten."""
        damaged = self.verify()
        tables = [name for name in self.damaged_items() if name != "row"]  # row: by a run
        if tables:
            self.repair_items(tables)
        self.mark_missing(damaged)
        log.warning(
            "%s: ended at byte %d of its recorded %d (a refused write); extended it and verified "
            "every written row: %d of %d kept, %d to extract again",
            self.path, self._extended_from, self.path.stat().st_size,
            self.rows_done, self.n_items, sum(len(d.rows) for d in damaged if not d.scores),
        )  # fmt: skip

    def _read_attrs(self) -> None:
        attrs = self._file.attrs
        if int(attrs.get("format", 1)) != FORMAT:
            raise CacheError(
                f"{self.path} was written by another truthprobe version (cache layout "
                f"{int(attrs.get('format', 1))}; this version reads layout {FORMAT}). Delete the "
                "file; the next `truthprobe extract` or sweep rebuilds what it needs."
            )
        try:
            self.attrs: dict[str, Any] = {k: _plain(v) for k, v in attrs.items()}
            self.n_items = int(attrs["n_items"])
            self.chunk_rows = int(attrs["chunk_rows"])
            self.layers: tuple[int, ...] = tuple(json.loads(attrs["layers"]))
            self.storage: str = str(attrs["storage"])
            self.n_choices_max = int(attrs["n_choices_max"])
            self.d_model = int(self._file["hidden/question_end"].shape[-1])
        except (OSError, KeyError) as err:
            raise CacheError(
                f"{self.path}: not a readable truthprobe activation cache (a field is "
                f"missing: {err}). If truthprobe wrote it, delete it and run again."
            ) from err

    @contextmanager
    def writing(self) -> Iterator[ActivationCache]:
        """Hold the writer lock and the file open for writing, for the `with` block.

        Raises:
            InUseError: another process is writing to this cache (the message names it).
        """
        if self._lock is not None:
            yield self
            return
        if self.shards:
            raise CacheError(
                f"{self.path}: a merged cache is read-only: repair or extend its shards, then "
                "merge again"
            )
        self._file.close()
        try:
            self._lock = writer_lock(self.path)
            self._file = self._open("r+")
        except BaseException:
            self._release()
            self._file = self._open("r")
            raise
        try:
            yield self
        finally:
            if self._refused is None:
                self._file.close()
                self._release()
                self._file = self._open("r")
            else:
                self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- writer side -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        spec: CacheSpec,
        records: Sequence[Question],
        order: Sequence[int],
        d_model: int,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> ActivationCache:
        """Create an empty cache for `records` taken in the order `order` (dataset indices).

        The skeleton is written under the writer lock, to a name of this process's own, and
        renamed into place, so a crash never leaves a half-made file at `path` and two creators
        never share a staging file. Returns the cache opened for reading.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with writer_lock(path):
            if not path.exists():  # another process may have made it while we waited
                cls._write_skeleton(path, spec, records, order, d_model, extra_attrs)
        return cls(path)

    @staticmethod
    def _write_skeleton(
        path: Path,
        spec: CacheSpec,
        records: Sequence[Question],
        order: Sequence[int],
        d_model: int,
        extra_attrs: Mapping[str, Any] | None,
    ) -> None:
        n, c, n_layers = len(order), spec.n_choices_max, len(spec.layers)
        b = max(1, min(CHUNK_ROWS, n))
        word = np.uint16 if spec.storage == "bfloat16" else np.float32
        ordered = [records[i] for i in order]
        text = h5py.string_dtype()
        items = {
            "id": np.array([r.id for r in ordered], dtype=object).astype(text),
            "row": np.asarray(order, dtype=np.int64),
            **_item_tables(ordered, c),
            "record": np.array(
                [json.dumps(r.to_dict(), ensure_ascii=False) for r in ordered], dtype=object
            ).astype(text),
        }
        staging = path.with_name(f"{path.name}.partial-{os.getpid()}")
        texts = sum(len(t.encode()) for t in (*items["id"], *items["record"]))
        need = ROOM_FACTOR * (texts + sum(v.nbytes for v in items.values() if v.dtype != object))
        problem = room_problem(staging, need + ROOM_EXTRA)
        if problem:
            code, why = problem
            raise CacheWriteError(f"{path}: cannot be created: {why}; {remedy(code)}")
        try:
            with h5py.File(staging, "w") as f:
                checked = dict(fletcher32=True)
                f.create_dataset(
                    "hidden/answer_end", (n_layers, n, c, d_model), word,
                    chunks=(1, b, c, d_model), **checked,
                )  # fmt: skip
                f.create_dataset(
                    "hidden/question_end", (n_layers, n, d_model), word, chunks=(1, b, d_model),
                    **checked,
                )  # fmt: skip
                for name, values in items.items():
                    if values.dtype == object:  # HDF5 cannot checksum strings: a hash does
                        f.create_dataset(f"items/{name}", data=values)
                    else:
                        f.create_dataset(f"items/{name}", data=values, chunks=True, **checked)
                f.attrs["items_sha256"] = text_hash(items["id"], items["record"])
                for name, dtype in (
                    ("choice_logprob", np.float32),
                    ("choice_tokens", np.int32),
                    ("choice_chars", np.int32),
                ):
                    f.create_dataset(f"scores/{name}", (n, c), dtype, chunks=(b, c), **checked)
                k = len(MIN_K_PERCENTS)
                for name in ("min_k", "min_k_pp"):
                    f.create_dataset(f"scores/{name}", (n, k), np.float32, chunks=(b, k), **checked)
                f.create_dataset("scores/question_tokens", (n,), np.int32, chunks=(b,), **checked)
                f.attrs["min_k_percents"] = json.dumps(list(MIN_K_PERCENTS))
                for flag, digest in (("done", "digest"), ("scored", "score_digest")):
                    f[f"rows/{flag}"] = np.zeros(n, np.uint8)
                    f[f"rows/{digest}"] = np.zeros((n, DIGEST_BYTES), np.uint8)
                f.attrs.update(spec.attrs())
                f.attrs.update(
                    format=FORMAT,
                    n_items=n,
                    chunk_rows=b,
                    package_version=__version__,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    layer_indexing="0 = embeddings (HF hidden_states); last = final-norm output",
                    extract_seconds=0.0,
                )
                f.attrs.update(dict(extra_attrs or {}))
        except (OSError, RuntimeError) as err:  # refused by the system after the check
            staging.unlink(missing_ok=True)
            code, why = _refusal(err)
            raise CacheWriteError(f"{path}: cannot be created: {why}; {remedy(code)}") from None
        staging.replace(path)

    def write_rows(
        self,
        rows: np.ndarray,
        answer_end: np.ndarray,
        question_end: np.ndarray,
        logprob: np.ndarray,
        tokens: np.ndarray,
        chars: np.ndarray,
    ) -> None:
        """Write the states and choice scores of cache rows `rows` (sorted), then mark them done.

        Args:
            answer_end: (layers, rows, choices, d_model) float32.
            question_end: (layers, rows, d_model) float32.
            logprob, tokens, chars: (rows, choices).
        """
        rows = np.asarray(rows, np.int64)
        if answer_end.shape[1] != len(rows):
            raise CacheError(f"{self.path}: {len(rows)} rows to write, got {answer_end.shape[1]}")
        for name, values in (("answer_end", answer_end), ("question_end", question_end)):
            if not np.isfinite(values).all():
                bad = np.argwhere(~np.isfinite(values))[0]
                raise CacheError(
                    f"{self.path}: non-finite hidden state in {name} at layer "
                    f"{self.layers[bad[0]]}, row {rows[bad[1]]}; refusing to cache it"
                )
        stored = {
            "hidden/answer_end": to_storage(answer_end, self.storage),
            "hidden/question_end": to_storage(question_end, self.storage),
            "scores/choice_logprob": np.asarray(logprob, np.float32),
            "scores/choice_tokens": np.asarray(tokens, np.int32),
            "scores/choice_chars": np.asarray(chars, np.int32),
        }
        self._write(rows, stored, "done", "digest")

    def write_question_scores(
        self, rows: np.ndarray, min_k: np.ndarray, min_k_pp: np.ndarray, question_tokens: np.ndarray
    ) -> None:
        """Write the question scores of cache rows `rows` (sorted), then mark them scored.

        Args:
            min_k, min_k_pp: (rows, len(min_k_percents)); question_tokens: (rows,).
        """
        stored = {
            "scores/min_k": np.asarray(min_k, np.float32),
            "scores/min_k_pp": np.asarray(min_k_pp, np.float32),
            "scores/question_tokens": np.asarray(question_tokens, np.int32),
        }
        self._write(np.asarray(rows, np.int64), stored, "scored", "score_digest")

    def _write(self, rows: np.ndarray, stored: dict[str, np.ndarray], flag: str, digest: str):
        """Rows' words, then their digests, flushed, then their flags: a crash never counts
        unwritten rows."""
        digests, kept = _digests(stored, list(stored), len(rows)), self.rows_done
        need = ROOM_FACTOR * sum(words.nbytes for words in stored.values()) + ROOM_EXTRA
        problem = room_problem(self.path, need)
        if problem:
            raise self._write_refused(rows, kept, *problem)
        f = self._file
        handles = [f[name] for name in stored]
        flags, sums = f[f"rows/{flag}"], f[f"rows/{digest}"]
        try:
            for lo, hi, at in _runs(rows):
                part = slice(at, at + hi - lo)
                for data, (name, words) in zip(handles, stored.items(), strict=True):
                    if name.startswith("hidden/"):
                        data[:, lo:hi] = words[:, part]
                    else:
                        data[lo:hi] = words[part]
                sums[lo:hi] = digests[part]
            f.flush()
            for lo, hi, _ in _runs(rows):
                flags[lo:hi] = 1
            f.flush()
        except (OSError, RuntimeError) as err:
            self._refused = [f, *handles, flags, sums]  # freed, HDF5 would flush them again
            raise self._write_refused(rows, kept, *_refusal(err)) from None

    def _write_refused(
        self, rows: np.ndarray, kept: int, code: int | None, why: str
    ) -> CacheWriteError:
        return CacheWriteError(
            f"{self.path}: rows {int(rows[0])}..{int(rows[-1])} not written: {why}; "
            f"{remedy(code)}: the {kept} rows written before them are kept and the same command "
            "resumes after them"
        )

    def set_attr(self, name: str, value: Any) -> None:
        """Set a descriptive attribute (never an identity one) while writing."""
        if name in IDENTITY_ATTRS:
            raise CacheError(f"{self.path}: {name} is part of the cache's identity")
        self._file.attrs[name] = value
        self.attrs[name] = value

    def add_extract_seconds(self, seconds: float) -> None:
        """Accumulate wall time spent extracting into this file (attribute `extract_seconds`)."""
        total = float(self._file.attrs.get("extract_seconds", 0.0)) + seconds
        self._file.attrs["extract_seconds"] = total
        self.attrs["extract_seconds"] = total

    # -- rows --------------------------------------------------------------------------------

    def done_rows(self) -> np.ndarray:
        """(items,) bool: which rows' states and choice scores are written."""
        return self._file["rows/done"][:].astype(bool)

    def scored_rows(self) -> np.ndarray:
        """(items,) bool: which rows' question scores (Min-K%) are written."""
        return self._file["rows/scored"][:].astype(bool)

    @property
    def rows_done(self) -> int:
        return int(self.done_rows().sum())

    @property
    def is_complete(self) -> bool:
        return bool(self.done_rows().all())

    @property
    def is_scored(self) -> bool:
        """Every row's question scores are written."""
        return bool(self.scored_rows().all())

    def missing_rows(self, rows: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Sorted cache rows among `rows` (all if None) whose states are not written yet."""
        return _missing(self.done_rows(), rows)

    def unscored_rows(self, rows: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Sorted cache rows among `rows` (all if None) without question scores yet."""
        return _missing(self.scored_rows(), rows)

    def require_rows(self, rows: np.ndarray | Sequence[int] | None = None) -> None:
        missing = self.missing_rows(rows)
        if len(missing):
            raise CacheError(
                f"{self.path}: {len(missing)} of the requested rows are not extracted yet "
                f"(first: row {int(missing[0])}); run the same command again, or `truthprobe "
                "extract`, to fill them"
            )

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = list(self.item("id"))
        return self._ids

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Cache rows of the given item ids (CacheError naming the first unknown id)."""
        where = {item_id: row for row, item_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise CacheError(f"{self.path}: item {missing[0]!r} is not in this cache")
        return np.array([where[i] for i in ids], dtype=np.int64)

    # -- reader side -------------------------------------------------------------------------

    def check_spec(self, spec: CacheSpec) -> None:
        """Raise `CacheError` naming every identity attribute that differs from `spec`."""
        wanted = spec.attrs()
        differ = [
            f"{name}: cache has {self.attrs.get(name)!r}, requested {wanted[name]!r}"
            for name in IDENTITY_ATTRS
            if str(self.attrs.get(name)) != str(wanted[name])
        ]
        if differ:
            raise CacheError(
                f"{self.path} was made for something else; differing: "
                + "; ".join(differ)
                + ". Use another --cache path or delete the file."
            )

    @property
    def key(self) -> str:
        """The identity hash (`CacheSpec.key`) of what this file holds."""
        text = json.dumps({name: self.attrs.get(name) for name in IDENTITY_ATTRS}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def layer_position(self, layer: int) -> int:
        if layer not in self.layers:
            raise CacheError(
                f"{self.path}: layer {layer} not cached; cached layers: {list(self.layers)}"
            )
        return self.layers.index(layer)

    def _read_rows(self, name: str, rows: np.ndarray | None, lead: tuple = ()) -> np.ndarray:
        """Rows of dataset `name` (all rows if None), reading only the chunks that hold them."""
        if name in QUESTION_SCORES:
            missing = self.unscored_rows(rows)
            if len(missing):
                raise CacheError(
                    f"{self.path}: the question scores (Min-K%) of {len(missing)} requested rows "
                    "are not computed yet; a sweep with a min_k or min_k_pp task computes them"
                )
        else:
            self.require_rows(rows)
        data = self._file[name]
        try:
            if rows is None:
                return data[lead + (slice(None),)]
            rows = np.asarray(rows, dtype=np.int64)
            spans = self._spans(np.unique(rows // self.chunk_rows))
            block = np.concatenate([data[lead + (slice(lo, hi),)] for lo, hi in spans])
            offsets = np.cumsum([0] + [hi - lo for lo, hi in spans])
            starts = np.array([lo for lo, _ in spans])
            run = np.searchsorted(starts, rows, side="right") - 1
            return block[offsets[run] + rows - starts[run]]
        except OSError as err:  # a failed fletcher32 checksum surfaces here
            raise self._damaged(f"{name} could not be read ({err})") from err

    def _spans(self, chunks: np.ndarray) -> list[tuple[int, int]]:
        """Row ranges of runs of consecutive chunks (one read each)."""
        runs = np.split(chunks, np.flatnonzero(np.diff(chunks) > 1) + 1) if len(chunks) else []
        size = self.chunk_rows
        return [(int(r[0]) * size, min((int(r[-1]) + 1) * size, self.n_items)) for r in runs]

    def _damaged(self, problem: str) -> CacheError:
        return CacheError(
            f"{self.path}: {problem}. Run `truthprobe cache verify {self.path} --repair`, then "
            "the same command again: only the damaged rows are extracted again"
        )

    def _states(self, name: str, layer: int, rows: np.ndarray | None) -> np.ndarray:
        words = self._read_rows(name, rows, (self.layer_position(layer),))
        values = from_storage(words, self.storage)
        if not np.isfinite(values).all():
            raise self._damaged(f"{name} holds non-finite values at layer {layer}")
        return values

    def answer_end(self, layer: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Hidden states at each choice's last token: (rows, choices, d_model) float32."""
        return self._states("hidden/answer_end", layer, rows)

    def question_end(self, layer: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Hidden states at the question prompt's last token: (rows, d_model) float32."""
        return self._states("hidden/question_end", layer, rows)

    @property
    def min_k_percents(self) -> tuple[int, ...]:
        """k of the columns of `score("min_k")` and `score("min_k_pp")`."""
        return tuple(json.loads(self.attrs["min_k_percents"]))

    def score(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """A `scores/...` array (`choice_logprob`, `choice_tokens`, `choice_chars`, `min_k`,
        `min_k_pp`, `question_tokens`)."""
        return self._read_rows(f"scores/{name}", rows)

    def content_hash(self) -> str:
        """A hash of what the file holds: identity, items, which rows are written and their
        digests. Anything derived from the cache (model-based hardness) is keyed by it."""
        h = hashlib.sha256()
        h.update(self.key.encode())
        h.update(str(self.attrs.get("items_sha256")).encode())
        for name in ("done", "digest", "scored", "score_digest"):
            h.update(self._file[f"rows/{name}"][:].tobytes())
        return h.hexdigest()[:16]

    def verify(
        self, rows: np.ndarray | Sequence[int] | None = None, skip: set[int] | None = None
    ) -> list[Damage]:
        """Check every written row among `rows` (all if None) against what was written.

        Each row's blocks must pass their fletcher32 checksums and hash to the digest stored
        when the row was written (a torn write that zeroes a block and its checksum passes
        fletcher32 but not this); rows in `skip` are not read. Returns the damaged rows, first
        first, each group naming a dataset, layer and rows; states and question scores are
        checked apart (a damaged score leaves the row's states in use).
        """
        self._check_records()
        done, scored = self.done_rows(), self.scored_rows()
        wanted = np.arange(self.n_items) if rows is None else np.unique(np.asarray(rows, np.int64))
        wanted = wanted[done[wanted] | scored[wanted]]
        if skip:
            wanted = wanted[~np.isin(wanted, list(skip))]
        damaged = []
        groups = np.unique(wanted // VERIFY_ROWS)
        for group in groups:
            lo, hi = group * VERIFY_ROWS, min((group + 1) * VERIFY_ROWS, self.n_items)
            here = wanted[(wanted >= lo) & (wanted < hi)]
            for names, flags, digest, is_score in (
                (STATES, done, "digest", False),
                (QUESTION_SCORES, scored, "score_digest", True),
            ):
                check = here[flags[here]]
                if len(check):
                    damaged += self._check_rows(check, lo, hi, names, digest, is_score, flags)
        return damaged

    def _check_rows(
        self,
        rows: np.ndarray,
        lo: int,
        hi: int,
        names: Sequence[str],
        digest: str,
        scores: bool,
        flags: np.ndarray,
    ) -> list[Damage]:
        """Damaged rows among `rows` (within lo..hi) of datasets `names`; a chunk that fails its
        checksum damages every written row it holds (`flags`), asked for or not."""
        words, unreadable = {}, {}
        for name in names:
            try:
                words[name] = self._block(name, lo, hi)
            except OSError:  # a failed fletcher32 checksum: find the chunks that fail
                words[name], unreadable[name] = self._chunks(name, lo, hi)
        found = []
        for name, bad in unreadable.items():
            hit = bad[flags[bad]]
            if len(hit):
                where = self._where(name, hit)
                found.append(Damage(tuple(map(int, hit)), where, "checksum mismatch", scores, name))
        hit_rows = {r for d in found for r in d.rows}
        rest = np.array([r for r in rows if r not in hit_rows], np.int64)
        if len(rest):
            stored = self._file[f"rows/{digest}"][lo:hi][rest - lo]
            local = {name: _row(name, words[name], rest - lo) for name in names}
            wrong = ~np.all(_digests(local, names, len(rest)) == stored, axis=1)
            if wrong.any():
                bad_rows = rest[wrong]
                where, problem = self._explain(local, names, wrong)
                found.append(Damage(tuple(int(r) for r in bad_rows), where, problem, scores))
        return found

    def _block(self, name: str, lo: int, hi: int) -> np.ndarray:
        data = self._file[name]
        return data[:, lo:hi] if name.startswith("hidden/") else data[lo:hi]

    def _chunks(self, name: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows lo..hi of `name` read chunk by chunk (unreadable chunks left as zeros), and the
        rows of the chunks that failed."""
        data = self._file[name]
        shape = (data.shape[0], hi - lo, *data.shape[2:]) if name.startswith("hidden/") else (
            hi - lo, *data.shape[1:])  # fmt: skip
        out = np.zeros(shape, data.dtype)
        bad: list[int] = []
        for a in range(lo, hi, self.chunk_rows):
            b = min(a + self.chunk_rows, hi)
            try:
                if name.startswith("hidden/"):
                    out[:, a - lo : b - lo] = data[:, a:b]
                else:
                    out[a - lo : b - lo] = data[a:b]
            except OSError:
                bad += range(a, b)
        return out, np.array(bad, np.int64)

    def _explain(
        self, local: dict[str, np.ndarray], names: Sequence[str], wrong: np.ndarray
    ) -> tuple[str, str]:
        """Where and why rows whose digest mismatched are damaged.

        A digest equal to the one stored at write time proves a row holds what was written
        (and writes refuse non-finite states), so values are converted and inspected only to
        explain a mismatch.
        """
        for name in names:
            part = _row(name, local[name], wrong)
            values = from_storage(part, self.storage) if name.startswith("hidden/") else part
            if name not in MAY_BE_NAN and not np.isfinite(values).all():
                if name.startswith("hidden/"):
                    bad = ~np.isfinite(values).reshape(len(values), -1).all(1)
                    return f"{name} layer {self.layers[int(np.argmax(bad))]}", "non-finite values"
                return name, "non-finite values"
        return "row contents", "they do not hash to what was written"

    def _where(self, name: str, rows: np.ndarray) -> str:
        """The dataset (and, for hidden states, the first unreadable layer) of damaged rows."""
        if not name.startswith("hidden/"):
            return name
        lo, hi = int(rows.min()), int(rows.max()) + 1
        for pos, layer in enumerate(self.layers):
            try:
                self._file[name][pos, lo:hi]
            except OSError:
                return f"{name} layer {layer}"
        return name

    def _check_records(self) -> None:
        """Raise unless the item ids and records hash to what was written at creation (once
        per open file: nothing here rewrites them)."""
        if self._records_sound:
            return
        try:
            stored = text_hash(self.item("id"), self.item("record"))
        except (OSError, UnicodeDecodeError, CacheError) as err:
            stored = f"unreadable ({err})"
        if stored != self.attrs.get("items_sha256"):
            raise CacheError(
                f"{self.path}: its item ids and records (written when it was created) are "
                "damaged; delete the file and run again to rebuild it"
            )
        self._records_sound = True

    def damaged_items(self, ids_in_dataset: Sequence[str] = ()) -> list[str]:
        """Item tables (`items/row`, `answer_index`, `n_choices`, `choice_mask`) that fail their
        checksums or disagree with the records they were made from, e.g. ['choice_mask'].

        `items/row` is checked against `ids_in_dataset` (the dataset's ids with choices, in
        dataset order) when given, else only for being distinct indices.

        Raises:
            CacheError: the records themselves do not hash to what was written.
        """
        self._check_records()
        expected = self._expected_items(ids_in_dataset)
        damaged = []
        for name in ITEM_TABLES:
            try:
                have = self._file[f"items/{name}"][:]
            except OSError:  # a failed fletcher32 checksum
                damaged.append(name)
                continue
            if name == "row" and "row" not in expected:
                sound = have.ndim == 1 and len(np.unique(have)) == self.n_items == len(have)
                if not sound or (len(have) and have.min() < 0):
                    damaged.append(name)
            elif not np.array_equal(have, expected[name]):
                damaged.append(name)
        return damaged

    def repair_items(self, names: Sequence[str], ids_in_dataset: Sequence[str] = ()) -> None:
        """Rewrite damaged item tables from the stored records (under the writer lock).

        `items/row` (each item's index in the dataset) is not in the records: it is rebuilt
        from `ids_in_dataset`, the dataset's ids with choices in dataset order.

        Raises:
            CacheError: `row` is damaged and no dataset ids were given.
        """
        expected = self._expected_items(ids_in_dataset)
        if "row" in names and "row" not in expected:
            raise CacheError(
                f"{self.path}: items/row (each item's place in the dataset) is damaged and "
                "only the dataset can rebuild it: run `truthprobe extract` or the sweep on "
                "the same dataset, which repairs it"
            )
        with self.writing():
            for name in names:
                self._file[f"items/{name}"][...] = expected[name]
            self._file.flush()

    def _expected_items(self, ids_in_dataset: Sequence[str]) -> dict[str, np.ndarray]:
        expected = _item_tables(self.records(), self.n_choices_max)
        if ids_in_dataset:
            where = {item_id: row for row, item_id in enumerate(ids_in_dataset)}
            expected["row"] = np.array([where.get(i, -1) for i in self.ids], np.int64)
        return expected

    def mark_missing(self, damaged: Sequence[Damage]) -> None:
        """Forget damaged rows (under the writer lock) so they are computed again: their states
        and question scores, or only the scores where only those are damaged."""
        if not damaged:
            return
        with self.writing():
            for d in damaged:
                if d.unreadable:
                    self._clear_chunks(d.unreadable, d.rows)
                for flag in ("scored",) if d.scores else ("done", "scored"):
                    self._file[f"rows/{flag}"][list(d.rows)] = 0
            self._file.flush()

    def _clear_chunks(self, name: str, rows: Sequence[int]) -> None:
        """Overwrite whole the chunks of `name` holding `rows` with zeros (a write covering a
        chunk does not read it, so a chunk failing its checksum is replaced)."""
        data = self._file[name]
        for chunk in np.unique(np.asarray(rows) // self.chunk_rows):
            lo = int(chunk) * self.chunk_rows
            hi = min(lo + self.chunk_rows, self.n_items)
            if name.startswith("hidden/"):
                data[:, lo:hi] = np.zeros((data.shape[0], hi - lo, *data.shape[2:]), data.dtype)
            else:
                data[lo:hi] = np.zeros((hi - lo, *data.shape[1:]), data.dtype)

    def item(self, name: str) -> np.ndarray:
        """An `items/...` array (`id`, `row`, `answer_index`, `n_choices`, `choice_mask`)."""
        data = self._file[f"items/{name}"]
        try:
            if h5py.check_string_dtype(data.dtype):
                return data.asstr()[:]
            return data[:]
        except OSError as err:  # a failed fletcher32 checksum surfaces here
            raise self._damaged(f"items/{name} could not be read ({err})") from err

    def records(self) -> list[Question]:
        """The cached items as `Question`s, in cache row order (no dataset needed)."""
        from truthprobe.data import parse_record

        return [parse_record(json.loads(text), str(self.path)) for text in self.item("record")]

    def info(self) -> dict[str, Any]:
        """Shape, fingerprint and completeness, for `truthprobe cache info`."""
        done = self.done_rows()
        return {
            "path": str(self.path),
            "items": self.n_items,
            "rows_extracted": int(done.sum()),
            "rows_scored": int(self.scored_rows().sum()),
            "complete": bool(done.all()),
            "layers": list(self.layers),
            "choices_max": self.n_choices_max,
            "d_model": self.d_model,
            "storage": self.storage,
            "model": json.loads(self.attrs["model"]),
            "template_hash": self.attrs["template_hash"],
            "dataset": self.attrs["dataset"],
            "dataset_hash": self.attrs["dataset_hash"],
            "extract_seconds": float(self.attrs.get("extract_seconds", 0.0)),
            "pass_check": json.loads(self.attrs.get("pass_check") or "null"),
            "package_version": self.attrs.get("package_version"),
            "created": self.attrs.get("created"),
            "shards": [str(p) for p in self.shards],
        }

    def describe(self) -> str:
        """Human-readable shape, fingerprint and completeness (`truthprobe cache info`)."""
        info = self.info()
        layers = info["layers"]
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        lines = [
            f"{info['path']}",
            f"  items         {info['items']} ({info['rows_extracted']} extracted, "
            f"{info['rows_scored']} with question scores)",
            f"  shape         layers {len(layers)} x items {info['items']} x choices "
            f"{info['choices_max']} x d_model {info['d_model']} ({info['storage']})",
            f"  layers        {f'{layers[0]}..{layers[-1]}' if contiguous else layers}"
            " (0 = embeddings)",
            f"  model         {json.dumps(info['model'], sort_keys=True)}",
            f"  dataset       {info['dataset']} (sha256 {info['dataset_hash'][:16]})",
            f"  template      {info['template_hash']}",
            f"  extraction    {info['extract_seconds']:.1f} s in all; {_pass_check(info)}",
            f"  created       {info['created']} by truthprobe {info['package_version']}",
        ]
        if self.shards:
            lines.append(f"  shards        {len(self.shards)}, all present (merged views)")
            lines += [f"    {p}" for p in info["shards"]]
        if SHARD_ATTR in self.attrs:
            part = json.loads(self.attrs[SHARD_ATTR])
            lo, hi = part["range"]
            lines.append(
                f"  shard         {part['index']} of {part['count']}: rows {lo}..{hi - 1} of "
                f"{part['n_items']} (cache {part['of']})"
            )
        return "\n".join(lines)

    def close(self) -> None:
        if self._refused is None:  # a file whose write was refused cannot be closed by HDF5
            self._file.close()
        self._release()

    def __enter__(self) -> ActivationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _missing(flags: np.ndarray, rows: np.ndarray | Sequence[int] | None) -> np.ndarray:
    wanted = np.arange(len(flags)) if rows is None else np.unique(np.asarray(rows, np.int64))
    return wanted[~flags[wanted]]


def _pass_check(info: Mapping[str, Any]) -> str:
    check = info.get("pass_check")
    if not check:
        return "rows alone vs in their pass: not measured yet"
    return (
        f"a row alone vs in a pass of {check['pass_rows']}: largest difference "
        f"{check['max_abs_difference']:.3g} ({check['dtype']}, {check['machine']})"
    )


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def item_bytes(n_layers: int, n_choices: int, d_model: int, storage: str) -> int:
    """Bytes one item's hidden states take in a cache: its answer-end states (one per choice)
    and its question-end state, at every kept layer. Scores and tables add well under 1%."""
    word = 2 if storage == "bfloat16" else 4
    return n_layers * (n_choices + 1) * d_model * word


def chunk_bytes(missing: np.ndarray, done: np.ndarray, per_item: int) -> int:
    """Bytes HDF5 allocates to write the rows `missing` of a cache whose written rows are
    `done` (a flag per row): whole chunks of `CHUNK_ROWS` rows (all rows, in a smaller cache),
    less the chunks a written row holds already. Rows a run asks for are spread over the
    length-sorted order, so a run writing a fifth of a cache's rows can allocate most of it."""
    per_chunk = max(1, min(CHUNK_ROWS, len(done)))
    chunks = set((np.asarray(missing, np.int64) // per_chunk).tolist())
    chunks -= set((np.flatnonzero(done) // per_chunk).tolist())
    return len(chunks) * per_chunk * per_item


def gigabytes(size: float) -> str:
    """A size in GB (in MB below 1 GB)."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def free_disk(folder: str | Path) -> tuple[Path, int]:
    """The nearest existing folder at or above `folder` (which a run may not have made yet)
    and the bytes free on its disk."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    return existing, shutil.disk_usage(existing).free


def require_disk(folder: Path, need: int, what: str) -> None:
    """Refuse to start `what` when its estimated `need` of bytes passes the free disk under
    `folder`, naming both numbers: found at the start rather than hours into the run (the
    file-size limit is `room_problem`'s, before each write).

    Raises:
        CacheError: not enough room (nothing is written yet, so not a `CacheWriteError`).
    """
    existing, free = free_disk(folder)
    if need > free:
        raise CacheError(
            f"{what}: the estimated cache is {gigabytes(need)}, more than the "
            f"{gigabytes(free)} free on the disk of {existing}; {remedy(errno.ENOSPC)}"
        )


def room_problem(path: Path, need: int) -> tuple[int, str] | None:
    """Why `need` more bytes cannot go into file `path` now, as (errno, reason), or None.

    Checked before writing, because a write the system refuses inside HDF5 leaves a file
    handle HDF5 can neither flush nor close.
    """
    size = path.stat().st_size if path.exists() else 0
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else -1
    if resource and limit != resource.RLIM_INFINITY and size + need > limit:
        return errno.EFBIG, (
            f"the file-size limit (ulimit -f) is {_mb(limit)}, the file is {_mb(size)} and "
            f"the next write needs {_mb(need)}"
        )
    free = shutil.disk_usage(path.parent).free
    if free < need:
        return errno.ENOSPC, f"{_mb(free)} is free on its disk, the next write needs {_mb(need)}"
    return None


def _refusal(err: BaseException) -> tuple[int | None, str]:
    """The system error number of a failed write and its text, from the exception or from
    HDF5's message (which carries `errno = N`)."""
    code = getattr(err, "errno", None)
    if not code:
        found = re.search(r"errno = (\d+)", str(err))
        code = int(found[1]) if found else None
    return code, os.strerror(code) if code else str(err)


def _item_tables(records: Sequence[Question], width: int) -> dict[str, np.ndarray]:
    """The item tables a cache's records determine (`width`: the cache's choices axis)."""
    n_choices = np.array([r.n_choices for r in records], np.int64)
    return {
        "answer_index": np.array([r.answer_index for r in records], np.int64),
        "n_choices": n_choices,
        "choice_mask": np.arange(width)[None, :] < n_choices[:, None],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def locate_cache(identity: dict, cache_dir: str | Path, owner: str = "") -> Path:
    """The cache file a run's task refers to, found by identity: under `cache_dir` at the path
    recorded relative to it, at the absolute path recorded, or anywhere under `cache_dir` (a
    run folder or a cache folder moved elsewhere still finds its cache). Each candidate's
    identity hash (`ActivationCache.key`) must equal the recorded one.

    Raises:
        CacheError: no cache with that identity (the message says where it looked).
    """
    key = identity["key"]
    root = Path(cache_dir)
    candidates = []
    if identity.get("relative"):
        candidates.append(root / identity["relative"])
    if identity.get("path"):
        candidates.append(Path(identity["path"]))
    seen = set()
    anywhere = sorted(root.rglob("*.h5")) if root.is_dir() else []
    for path in [*candidates, *anywhere]:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            with ActivationCache(path) as cache:
                if cache.key == key:
                    return path
        except (CacheError, OSError):
            continue
    raise CacheError(
        f"{owner + ': ' if owner else ''}no activation cache with identity {key[:12]} under "
        f"{root} (nor at {identity.get('path')}); pass the folder that holds it as --cache-dir"
    )
