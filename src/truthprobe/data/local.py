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


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The local data directory: `data_dir` if given, else `$TRUTHPROBE_DATA_DIR`.

    Raises:
        DataError: with instructions when neither is set or the directory is missing.
    """
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise DataError(
            f"no local data directory: set {DATA_DIR_ENV} to the folder that holds arc/, mmlu/, "
            f"strategyqa/ and gsm8k/ (for example `export {DATA_DIR_ENV}=../shared/data`), "
            "or load from the Hugging Face hub when online (`--source hub`)"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data directory {path} does not exist (from "
            f"{'the data_dir argument' if data_dir is not None else DATA_DIR_ENV}); point "
            f"{DATA_DIR_ENV} at the folder that holds arc/, mmlu/, strategyqa/ and gsm8k/, "
            "or use `--source hub` when online"
        )
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
