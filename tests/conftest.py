"""Shared fixtures: the real datasets from $TRUTHPROBE_DATA_DIR (default: ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from truthprobe.data import DATA_DIR_ENV, Dataset, load_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def data_dir() -> Path:
    """The real data directory; tests fail loudly rather than skip when it is missing."""
    path = Path(os.environ.get(DATA_DIR_ENV) or REPO.parent / "shared" / "data")
    assert path.is_dir(), f"real data not found at {path}; set {DATA_DIR_ENV}"
    os.environ[DATA_DIR_ENV] = str(path)
    return path


_CACHE: dict[str, Dataset] = {}


@pytest.fixture(scope="session")
def load(data_dir: Path):
    """Load a real dataset once per test session."""

    def _load(name: str) -> Dataset:
        if name not in _CACHE:
            _CACHE[name] = load_dataset(name, source="local", data_dir=data_dir)
        return _CACHE[name]

    return _load


@pytest.fixture(scope="session")
def gemma_fp32():
    """The embedded default model in float32 with eager attention, for exact comparisons."""
    from truthprobe.models import load_model

    return load_model("default", dtype="float32", attn_implementation="eager")


@pytest.fixture(scope="session")
def mixed_arc_file(tmp_path_factory, load) -> Path:
    """A JSONL of real ARC records with 3, 4 and 5 choices (ragged choice lists)."""
    import json

    records = load("arc").records
    picked = [r for r in records if r.n_choices == 3][:2]
    picked += [r for r in records if r.n_choices == 5][:2]
    picked += [r for r in records if r.n_choices == 4][:6]
    path = tmp_path_factory.mktemp("data") / "arc-mixed.jsonl"
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in picked))
    return path
