"""Loading the four paper datasets from a local directory (the layout of `shared/data`)."""

from __future__ import annotations

import os
from pathlib import Path

from truthprobe.data.records import MAX_CHOICES, DataError, Question, read_jsonl_located

#: Environment variable naming the local data directory.
DATA_DIR_ENV = "TRUTHPROBE_DATA_DIR"

#: Files of each dataset, relative to the data directory, in a fixed order (the order fixes
#: record rows in caches, so it must not change).
LOCAL_FILES: dict[str, tuple[str, ...]] = {
    "arc": tuple(
        f"arc/{subset}-{split}.jsonl"
        for subset in ("easy", "challenge")
        for split in ("train", "validation", "test")
    ),
    "mmlu": ("mmlu/stem5-dev.jsonl", "mmlu/stem5-test.jsonl"),
    "strategyqa": ("strategyqa/train.jsonl", "strategyqa/test.jsonl"),
    "gsm8k": ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
}


#: What to do without a data directory: the two ways to name one (the message of every error).
WAYS = (
    f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR, DIR being a folder that holds arc/, mmlu/, "
    "strategyqa/ and gsm8k/ (online, `truthprobe data fetch --to DIR` builds one)"
)


def default_data_dir() -> Path:
    """Where `truthprobe data fetch` writes without --to: beside the converted models."""
    return Path.home() / ".cache" / "truthprobe" / "data"


def configured_data_dir(data_dir: str | Path | None = None) -> tuple[Path, str] | None:
    """The local data directory and what named it: `data_dir` (the --data-dir flag), else
    `$TRUTHPROBE_DATA_DIR`, else what `truthprobe data fetch` wrote by default; None if none."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "--data-dir"
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser(), DATA_DIR_ENV
    if (default_data_dir() / FETCHED_MARK).is_file():
        return default_data_dir(), "`truthprobe data fetch`"
    return None


#: Written last by `truthprobe data fetch`: a folder without it was not fetched completely.
FETCHED_MARK = "FETCHED.json"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The local data directory (see `configured_data_dir`).

    Raises:
        DataError: naming --data-dir and TRUTHPROBE_DATA_DIR when neither is set, or the
            directory is missing.
    """
    found = configured_data_dir(data_dir)
    if found is None:
        raise DataError(f"no local data directory: {WAYS}")
    path, named_by = found
    if not path.is_dir():
        raise DataError(f"data directory {path} (from {named_by}) does not exist: {WAYS}")
    return path


def load_local_located(
    name: str, data_dir: str | Path | None = None, max_choices: int = MAX_CHOICES
) -> list[tuple[Question, str]]:
    """Records of dataset `name` from the local directory, each with its `file:line`."""
    if name not in LOCAL_FILES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(LOCAL_FILES)}")
    root = resolve_data_dir(data_dir)
    located: list[tuple[Question, str]] = []
    for relative in LOCAL_FILES[name]:
        path = root / relative
        if not path.is_file():
            raise DataError(f"{path}: missing file of dataset {name!r} under {root}")
        located.extend(read_jsonl_located(path, max_choices))
    return located
