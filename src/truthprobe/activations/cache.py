"""`ActivationCache`: per-layer hidden states of one (model, dataset, template) in one HDF5 file.

Layout (documented API; keys are stable):

    hidden/answer_end      (layers, items, choices, d_model)  16-bit words, see `storage`
    hidden/question_end    (layers, items, d_model)
    items/id               (items,)  str           record id
    items/row              (items,)  int64         index of the record in the dataset
    items/answer_index     (items,)  int64         gold choice (-1 for free-form questions)
    items/n_choices        (items,)  int64
    items/choice_mask      (items, choices) bool   real choices (ragged choice lists)
    items/record           (items,)  str           the full record as JSON (hardness fields too)
    scores/choice_logprob  (items, choices) float32  summed log-likelihood of the continuation
    scores/choice_tokens   (items, choices) int32    continuation length in tokens
    scores/choice_chars    (items, choices) int32    continuation length in characters

Why layer-major and contiguous rather than item-major and chunked: a probe reads one layer for
all items, and with layers first that is one contiguous block on disk, one sequential read.

Why bfloat16 stored as raw 16-bit words: Gemma 3's residual stream reaches ~1e5 in middle layers
and float16 overflows at 65504; bfloat16 keeps float32's range at half the size. HDF5 has no
bfloat16 type, so the top 16 bits of each float32 are stored as uint16 with the attribute
`storage = "bfloat16"`; `storage = "float32"` stores plain floats. Finiteness is checked on write.

Rows are in processing (length-sorted) order; `items/row` maps back to the dataset. Writes go
batch by batch and the attribute `completed_rows` advances only after a batch's data is flushed,
so an interrupted run resumes at the first incomplete row and a reader never mistakes a partial
file for a complete one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from truthprobe import __version__
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError

Storage = Literal["bfloat16", "float32"]
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
)


class CacheError(TruthprobeError, RuntimeError):
    """A cache file is unreadable, incomplete, or does not match what was asked for."""


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
    layers: tuple[int, ...]
    storage: Storage
    n_choices_max: int

    def attrs(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in IDENTITY_ATTRS}
        values["layers"] = json.dumps(list(self.layers))
        return values


class ActivationCache:
    """Read access to one cache file (and, via `create`/`write_batch`, the writer's side).

    Opening reads only metadata: no model and no dataset are needed.
    """

    def __init__(self, path: str | Path, mode: Literal["r", "r+"] = "r") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such cache file")
        try:
            self._file = h5py.File(self.path, mode)
            attrs = self._file.attrs
            self.attrs: dict[str, Any] = {k: _plain(v) for k, v in attrs.items()}
            self.n_items = int(attrs["n_items"])
            self.layers: tuple[int, ...] = tuple(json.loads(attrs["layers"]))
            self.storage: str = str(attrs["storage"])
            self.n_choices_max = int(attrs["n_choices_max"])
            self.d_model = int(self._file["hidden/question_end"].shape[-1])
        except (OSError, KeyError) as err:
            raise CacheError(
                f"{self.path}: not a readable truthprobe activation cache (truncated, corrupt, "
                f"or another file type): {err}. Delete it and extract again."
            ) from err

    # -- writer side -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        spec: CacheSpec,
        records: Sequence[Question],
        rows: Sequence[int],
        d_model: int,
        batch_size: int,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> ActivationCache:
        """Create an empty cache for `records` taken in the order `rows` (dataset indices)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n, c, n_layers = len(rows), spec.n_choices_max, len(spec.layers)
        word = np.uint16 if spec.storage == "bfloat16" else np.float32
        ordered = [records[i] for i in rows]
        n_choices = np.array([r.n_choices for r in ordered], np.int64)
        # Build the skeleton under a temporary name: a crash here leaves no file at `path`.
        staging = path.with_name(path.name + ".partial")
        with h5py.File(staging, "w") as f:
            f.create_dataset("hidden/answer_end", (n_layers, n, c, d_model), dtype=word)
            f.create_dataset("hidden/question_end", (n_layers, n, d_model), dtype=word)
            text = h5py.string_dtype()
            f["items/id"] = np.array([r.id for r in ordered], dtype=object).astype(text)
            f["items/row"] = np.asarray(rows, dtype=np.int64)
            f["items/answer_index"] = np.array(
                [-1 if r.answer_index is None else r.answer_index for r in ordered], np.int64
            )
            f["items/n_choices"] = n_choices
            f["items/choice_mask"] = np.arange(c)[None, :] < n_choices[:, None]
            f["items/record"] = np.array(
                [json.dumps(r.to_dict(), ensure_ascii=False) for r in ordered], dtype=object
            ).astype(text)
            for name, dtype in (
                ("choice_logprob", np.float32),
                ("choice_tokens", np.int32),
                ("choice_chars", np.int32),
            ):
                f.create_dataset(f"scores/{name}", (n, c), dtype=dtype)
            f.attrs.update(spec.attrs())
            f.attrs.update(
                n_items=n,
                completed_rows=0,
                batch_size=batch_size,
                package_version=__version__,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                layer_indexing="0 = embeddings (HF hidden_states); last = final-norm output",
            )
            f.attrs.update(dict(extra_attrs or {}))
        staging.replace(path)
        return cls(path, "r+")

    def write_batch(
        self,
        start: int,
        answer_end: np.ndarray,
        question_end: np.ndarray,
        logprob: np.ndarray,
        tokens: np.ndarray,
        chars: np.ndarray,
    ) -> None:
        """Write rows `start:start+len(batch)` and then advance `completed_rows`.

        Args:
            answer_end: (layers, batch, choices, d_model) float32.
            question_end: (layers, batch, d_model) float32.
            logprob, tokens, chars: (batch, choices).
        """
        if start != self.completed_rows:
            raise CacheError(
                f"{self.path}: batch starts at row {start}, expected {self.completed_rows}"
            )
        for name, values in (("answer_end", answer_end), ("question_end", question_end)):
            if not np.isfinite(values).all():
                bad = np.argwhere(~np.isfinite(values))[0]
                raise CacheError(
                    f"{self.path}: non-finite hidden state in {name} at layer "
                    f"{self.layers[bad[0]]}, row {start + bad[1]}; refusing to cache it"
                )
        stop = start + answer_end.shape[1]
        f = self._file
        f["hidden/answer_end"][:, start:stop] = to_storage(answer_end, self.storage)
        f["hidden/question_end"][:, start:stop] = to_storage(question_end, self.storage)
        f["scores/choice_logprob"][start:stop] = logprob
        f["scores/choice_tokens"][start:stop] = tokens
        f["scores/choice_chars"][start:stop] = chars
        f.flush()  # data first, then the counter: a crash never counts unwritten rows
        f.attrs["completed_rows"] = stop
        f.flush()

    def add_extract_seconds(self, seconds: float) -> None:
        """Accumulate wall time spent extracting into this file (attribute `extract_seconds`)."""
        self._file.attrs["extract_seconds"] = (
            float(self.attrs.get("extract_seconds", 0.0)) + seconds
        )
        self.attrs["extract_seconds"] = self._file.attrs["extract_seconds"]

    # -- reader side -------------------------------------------------------------------------

    @property
    def completed_rows(self) -> int:
        return int(self._file.attrs["completed_rows"])

    @property
    def is_complete(self) -> bool:
        return self.completed_rows == self.n_items

    def require_complete(self) -> None:
        if not self.is_complete:
            raise CacheError(
                f"{self.path}: incomplete cache ({self.completed_rows}/{self.n_items} rows); "
                "rerun the same extraction to resume it"
            )

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

    def layer_position(self, layer: int) -> int:
        if layer not in self.layers:
            raise CacheError(
                f"{self.path}: layer {layer} not cached; cached layers: {list(self.layers)}"
            )
        return self.layers.index(layer)

    def answer_end(self, layer: int) -> np.ndarray:
        """Hidden states at each choice's last token: (items, choices, d_model) float32."""
        self.require_complete()
        return from_storage(
            self._file["hidden/answer_end"][self.layer_position(layer)], self.storage
        )

    def question_end(self, layer: int) -> np.ndarray:
        """Hidden states at the question prompt's last token: (items, d_model) float32."""
        self.require_complete()
        return from_storage(
            self._file["hidden/question_end"][self.layer_position(layer)], self.storage
        )

    def item(self, name: str) -> np.ndarray:
        """An `items/...` array (`id`, `row`, `answer_index`, `n_choices`, `choice_mask`)."""
        data = self._file[f"items/{name}"]
        if h5py.check_string_dtype(data.dtype):
            return data.asstr()[:]
        return data[:]

    def score(self, name: str) -> np.ndarray:
        """A `scores/...` array (`choice_logprob`, `choice_tokens`, `choice_chars`)."""
        self.require_complete()
        return self._file[f"scores/{name}"][:]

    @property
    def ids(self) -> list[str]:
        return list(self.item("id"))

    def records(self) -> list[Question]:
        """The cached items as `Question`s, in cache row order (no dataset needed)."""
        from truthprobe.data import parse_record

        return [parse_record(json.loads(text), str(self.path)) for text in self.item("record")]

    def info(self) -> dict[str, Any]:
        """Shape, fingerprint and completeness, for `truthprobe cache info`."""
        return {
            "path": str(self.path),
            "items": self.n_items,
            "completed_rows": self.completed_rows,
            "complete": self.is_complete,
            "layers": list(self.layers),
            "choices_max": self.n_choices_max,
            "d_model": self.d_model,
            "storage": self.storage,
            "model": json.loads(self.attrs["model"]),
            "template_hash": self.attrs["template_hash"],
            "dataset": self.attrs["dataset"],
            "dataset_hash": self.attrs["dataset_hash"],
            "package_version": self.attrs.get("package_version"),
            "created": self.attrs.get("created"),
        }

    def describe(self) -> str:
        """Human-readable shape, fingerprint and completeness (`truthprobe cache info`)."""
        info = self.info()
        layers = info["layers"]
        contiguous = layers == list(range(layers[0], layers[-1] + 1))
        incomplete = "" if info["complete"] else ", INCOMPLETE: rerun the extraction to resume"
        lines = [
            f"{info['path']}",
            f"  items         {info['items']} ({info['completed_rows']} complete{incomplete})",
            f"  shape         layers {len(layers)} x items {info['items']} x choices "
            f"{info['choices_max']} x d_model {info['d_model']} ({info['storage']})",
            f"  layers        {f'{layers[0]}..{layers[-1]}' if contiguous else layers}"
            " (0 = embeddings)",
            f"  model         {json.dumps(info['model'], sort_keys=True)}",
            f"  dataset       {info['dataset']} (sha256 {info['dataset_hash'][:16]})",
            f"  template      {info['template_hash']}",
            f"  created       {info['created']} by truthprobe {info['package_version']}",
        ]
        return "\n".join(lines)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ActivationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
