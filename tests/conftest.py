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
