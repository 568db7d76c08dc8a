"""Shared fixtures: the real datasets from $TRUTHPROBE_DATA_DIR (default: ../shared/data), the
embedded Gemma 3 270M for tests of what a real model computes, and a tiny random-weight Gemma 3
(built from a config, no download) for plumbing tests of the cache, harness and command line."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

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


def write_jsonl(path: Path, records) -> Path:
    import json

    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random-weight Gemma 3 saved as a local model folder (`--model PATH`)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gemma3")


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    from truthprobe.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def arc_sample(tmp_path_factory, load) -> Path:
    """Every 13th real ARC record (600 records, annotated and not), as a JSONL file.

    The records keep `"dataset": "arc"`, so ARC's hardness measures apply to the file.
    """
    records = load("arc").records[::13]
    return write_jsonl(tmp_path_factory.mktemp("data") / "arc-sample.jsonl", records)


def pytest_collection_modifyitems(items) -> None:
    """Tests that load the embedded 270M model are `real_model`: left out of the default run
    (`python -m pytest`), run by `python -m pytest -m real_model` and by `.ci/run`."""
    for item in items:
        if "gemma_fp32" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)


@pytest.fixture()
def cli(capsys):
    """`truthprobe ARGS` in-process (what the console script calls): exit status, stdout and
    stderr. For output tests; errors are tested through the console script in a subprocess."""

    def run(*args: str) -> SimpleNamespace:
        from truthprobe.cli import main

        status = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=status, stdout=out.out, stderr=out.err)

    return run


@pytest.fixture(scope="session")
def extracted(tiny_model_dir, arc_sample, tmp_path_factory):
    """A whole cache of the ARC sample (batches of 4), made once through the console script:
    the undamaged file that damaged, refused and resumed ones are compared with."""
    cache_dir = tmp_path_factory.mktemp("clean")
    from test_cli_config import truthprobe

    result = truthprobe(
        "extract", "--dataset", str(arc_sample), "--model", str(tiny_model_dir),
        "--cache-dir", str(cache_dir), "--batch-size", "4", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return next(cache_dir.rglob("*.h5"))
