"""Question records from real datasets: local JSONL, the Hugging Face hub, or a user's file.

`load_dataset("arc")` is the one entry point; it returns a `Dataset` whose records are all
validated and whose ids are unique, or raises `DataError` naming file, line and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from truthprobe.data.local import (
    DATA_DIR_ENV,
    LOCAL_FILES,
    configured_data_dir,
    load_local_located,
    resolve_data_dir,
)
from truthprobe.data.records import (
    MAX_CHOICES,
    DataError,
    Question,
    check_unique_ids,
    content_hash,
    leave_out_ambiguous,
    parse_record,
    read_jsonl,
    read_jsonl_located,
)

#: The paper's four datasets, loadable by name.
DATASET_NAMES: tuple[str, ...] = tuple(LOCAL_FILES)

Source = Literal["auto", "local", "hub"]


@dataclass(frozen=True)
class Dataset:
    """A validated, ordered collection of `Question`s and where they came from."""

    name: str
    records: tuple[Question, ...]
    source: str
    excluded: tuple[str, ...] = ()
    """Ids of records left out when loading (their correct choice appears twice)."""

    def __len__(self) -> int:
        return len(self.records)

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of the records' content; caches and results record it for traceability."""
        return content_hash(self.records)

    def select(self, splits: Sequence[str] | None = None, limit: int | None = None) -> Dataset:
        """A sub-dataset of the given splits and/or the first `limit` records (order kept)."""
        records = self.records
        if splits is not None:
            unknown = set(splits) - {r.split for r in records}
            if unknown:
                known = sorted({r.split for r in records})
                raise DataError(
                    f"{self.name}: no split(s) {sorted(unknown)}; the dataset has {known}"
                )
            records = tuple(r for r in records if r.split in splits)
        if limit is not None:
            records = records[:limit]
        return Dataset(self.name, records, self.source, self.excluded)

    @classmethod
    def from_hf(cls, table, name: str = "hf", strict: bool = False, **columns) -> Dataset:
        """A dataset from a Hugging Face `datasets.Dataset` / `DatasetDict` (or any rows of
        mappings), every row validated like a JSONL record; `columns` map the table's columns
        onto the schema (`question=`, `choices=`, `answer=`, `meta=[...]`, `id=`, `split=`;
        see `truthprobe.data.hf.records_from_hf`). Rows whose correct choice appears twice
        are left out (`strict`: refused), as in `load_dataset`."""
        from truthprobe.data.hf import records_from_hf

        records = records_from_hf(table, name=name, **columns)
        kept, excluded = leave_out_ambiguous(name, records, strict)
        return cls(name, kept, f"hf:{name}", excluded)

    def to_hf(self):
        """The records as a `datasets.Dataset` with the schema's columns."""
        from truthprobe.data.hf import records_to_hf

        return records_to_hf(self.records)

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the records as a JSONL file in the schema (whole, then renamed into place),
        for `--tasks FILE.jsonl:<measure>` and `--dataset FILE.jsonl`."""
        import json
        import os

        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in self.records))
        os.replace(partial, path)
        return path


def load_dataset(
    spec: str | Path,
    source: Source = "auto",
    data_dir: str | Path | None = None,
    max_choices: int = MAX_CHOICES,
    strict: bool = False,
) -> Dataset:
    """Load a dataset by name (`arc`, `mmlu`, `strategyqa`, `gsm8k`) or from a JSONL file path.

    Records whose correct choice appears twice among their choices are left out with one
    warning (`Dataset.excluded` lists them), or refused when `strict`.

    Args:
        spec: a dataset name, or a path to a JSONL file in the shared schema.
        source: `local` reads `data_dir` / `$TRUTHPROBE_DATA_DIR` / what `truthprobe data
            fetch` wrote; `hub` downloads from the Hugging Face hub; `auto`: local when a
            directory is configured, else the hub.
        data_dir: overrides `$TRUTHPROBE_DATA_DIR` (the --data-dir flag).
        max_choices: the most answer choices a record may have (e.g. the cache's choice axis).

    Raises:
        DataError: for malformed records (file, line, field), duplicate ids, or no data source.
    """
    text = str(spec)
    if text.endswith(".jsonl") or Path(text).is_file():
        located = read_jsonl_located(text, max_choices)
        name, where = Path(text).stem, text
    elif text in DATASET_NAMES:
        if source == "auto":
            source = "local" if _local_configured(data_dir) else "hub"
        if source == "local":
            located = load_local_located(text, data_dir, max_choices)
            where = f"local:{resolve_data_dir(data_dir)}"
        elif source == "hub":
            from truthprobe.data.hub import load_hub_located

            located = load_hub_located(text, max_choices)
            where = "hub"
        else:
            raise DataError(f"unknown source {source!r}; use auto, local or hub")
        name = text
    else:
        raise DataError(
            f"unknown dataset {text!r}: give one of {', '.join(DATASET_NAMES)} "
            "or the path of a .jsonl file in the truthprobe schema"
        )
    records = tuple(record for record, _ in located)
    check_unique_ids(records, [loc for _, loc in located])
    kept, excluded = leave_out_ambiguous(text, records, strict)
    return Dataset(name, kept, where, excluded)


def _local_configured(data_dir: str | Path | None) -> bool:
    return configured_data_dir(data_dir) is not None


__all__ = [
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "MAX_CHOICES",
    "DataError",
    "Dataset",
    "Question",
    "content_hash",
    "load_dataset",
    "parse_record",
    "read_jsonl",
]
