"""`truthprobe data fetch`: the local data layout built from the Hugging Face hub, once.

Each dataset is loaded through the hub converters (`truthprobe.data.hub`, the same records a
`--source hub` run reads) and written in the layout of `LOCAL_FILES`, with the ARC hardness
annotations beside ARC. Every file is written whole under a temporary name and renamed, and
`FETCHED.json` (what was fetched, from where, when) gains each dataset once all its files are
written: an interrupted fetch leaves no half-written file, and a folder without the mark is not
used as the default data directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from truthprobe.data.hub import ARC_ANNOTATIONS_URL, fetch_arc_annotations, load_hub_located
from truthprobe.data.local import FETCHED_MARK, LOCAL_FILES
from truthprobe.data.records import DataError, Question


def local_file(record: Question) -> str:
    """The file of the local layout a record belongs in (`arc/easy-train.jsonl`, ...)."""
    if record.dataset == "arc":
        return f"arc/{record.meta['subset']}-{record.split}.jsonl"
    if record.dataset == "mmlu":
        return f"mmlu/stem5-{record.split}.jsonl"
    return f"{record.dataset}/{record.split}.jsonl"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


@dataclass(frozen=True)
class Fetched:
    dataset: str
    records: int
    files: tuple[str, ...]


def fetch_datasets(
    to: str | Path, names: Sequence[str], annotations: str | Path | None = None
) -> list[Fetched]:
    """Write `names` (arc, mmlu, strategyqa, gsm8k) under `to` from the hub.

    Raises:
        DataError: a dataset the hub cannot serve (offline, unknown), naming it and the ways to
            use local data instead.
    """
    root = Path(to).expanduser()
    unknown = [n for n in names if n not in LOCAL_FILES]
    if unknown:
        raise DataError(f"no dataset {unknown[0]!r} to fetch; known: {', '.join(LOCAL_FILES)}")
    done: list[Fetched] = []
    notes = fetch_arc_annotations(annotations) if "arc" in names else None
    for name in names:
        located = load_hub_located(name, notes=notes)
        files: dict[str, list[str]] = {relative: [] for relative in LOCAL_FILES[name]}
        for record, where in located:
            relative = local_file(record)
            if relative not in files:
                raise DataError(f"{where}: split {record.split!r} has no file in the local layout")
            files[relative].append(json.dumps(record.to_dict()))  # ASCII: no stray line breaks
        for relative, lines in files.items():
            _write_atomically(root / relative, "".join(line + "\n" for line in lines))
        if name == "arc":
            _write_atomically(root / "arc" / "annotations.json", json.dumps(notes))
        done.append(Fetched(name, len(located), tuple(files)))
        _mark(root, done[-1], annotations)  # each dataset marked as soon as it is whole
    return done


def _mark(root: Path, fetched: Fetched, annotations: str | Path | None) -> None:
    """Add what was fetched, from where and when, to the folder's `FETCHED.json`."""
    mark = root / FETCHED_MARK
    entries = json.loads(mark.read_text()) if mark.is_file() else {}
    entries[fetched.dataset] = {
        "records": fetched.records,
        "files": list(fetched.files),
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "annotations": str(annotations or ARC_ANNOTATIONS_URL)
        if fetched.dataset == "arc"
        else None,
    }
    _write_atomically(mark, json.dumps(entries, indent=2))
