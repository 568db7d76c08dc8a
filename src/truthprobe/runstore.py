"""The run store: one folder per run, one file per finished part, and `load_run` to read it.

Layout (stable API):

    runs/<kind>-<hash>/config.json                      settings, provenance, invocations
    runs/<kind>-<hash>/parts/<task>/task.json           the task's items: id, stratum, role, ...
    runs/<kind>-<hash>/parts/<task>/<method>/<train_on>.<seed>.npz
    runs/<kind>-<hash>/parts/<task>/<method>/<train_on>.<seed>.jsonl   completions (generation)
    runs/<kind>-<hash>/adapters/                        QLoRA adapters
    runs/<kind>-<hash>/{table,accuracy,sgr}.csv, summary.txt           the report

A part holds, per evaluated item (`item` indexes the task's items): `correct`, `prediction`
(choice index, -1 for none), `probs` (per-choice probabilities, float32; absent for
generations), and for probes the fitted arrays `probe_mean`, `probe_std` (standardisation),
`probe_weight`, `probe_bias`; `train` lists the training items; `meta` is JSON (method, layer,
train_on, seed, seconds, settings, the fingerprint of the code and data that made it). Parts are
written to a temporary name and renamed, so a part on disk is always whole; every member of a
part is checked against its zip CRC when read, and `config.json`, `task.json` and a study's
JSON files carry a digest of their content (`write_json` / `read_json`), so a damaged file is
recomputed where it can be and refused in one line naming it where it cannot, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from truthprobe.choice_probs import (
    choice_auroc,
    expected_calibration_error,
    prediction_confidence,
)
from truthprobe.errors import TruthprobeError

#: The training pools of sweep parts (`evaluate.TRAIN_ON` and `none`, the unsupervised floor);
#: a study's own pools (`grade=3`) are not sweep parts.
SWEEP_POOLS = ("easy", "hard", "all", "none")

#: Bumped when the part format changes; parts of another version are recomputed.
PART_FORMAT = 1


log = logging.getLogger(__name__)

#: What reading a damaged `.npz` raises (a bad CRC or header, a cut-off file).
DAMAGED_PART = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)

#: The key under which a stored JSON file carries the digest of the rest of its content.
DIGEST = "content_sha256"


class RunStoreError(TruthprobeError, RuntimeError):
    """A run directory that cannot be read (missing, damaged, or not made by truthprobe)."""


def read_npz(path: Path, only: str | None = None) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file (or just `only`), each member checked against its zip CRC
    (the check reads every member once; the arrays are then read from the OS's cache).

    Raises:
        RunStoreError: the file is damaged (a changed byte, cut short, not a zip).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} fails its CRC")
        with np.load(path) as data:
            return {k: data[k] for k in data.files if only is None or k == only}
    except DAMAGED_PART as err:
        raise RunStoreError(f"{path}: damaged ({err})") from None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_json(path: Path, value: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Write `value` as JSON atomically, with a digest of its content that `read_json` checks."""
    plain = json.loads(json.dumps(value, default=default))
    _write_atomic(path, json.dumps({**plain, DIGEST: _digest(plain)}, indent=1))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file `write_json` wrote, its digest checked (files written before digests were
    kept are read as they are).

    Raises:
        RunStoreError: the file is not JSON, or its content does not match its digest.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunStoreError(f"{path}: damaged, not readable JSON ({err})") from None
    if not isinstance(value, dict):
        raise RunStoreError(f"{path}: damaged, not a JSON object")
    stored = value.pop(DIGEST, None)
    if stored is not None and stored != _digest(value):
        raise RunStoreError(f"{path}: damaged, its content does not match its digest")
    return value


@dataclass(frozen=True)
class PartKey:
    """Names one cell any command computes; equal keys are the same part file.

    The model, data, split and prompt are the run directory's (its hash); within it a part is
    (training task, method at its layer, training pool, seed) plus what a study varies: the
    number of training items, the share of noisy training labels, and the task whose items are
    scored (a probe applied to another dataset). A cell a study shares with the sweep has the
    sweep's key, so it is the sweep's part.
    """

    task: str
    """The training task's folder name (`TaskSpec.slug`)."""
    method: str
    """The method's label (`mc_linear@9`, `icl+cot`)."""
    train_on: str
    seed: int
    n_train: int = 0
    """Training items; 0 = the run's split setting (`--n-train`)."""
    noise: float = 0.0
    """Share of training labels replaced by a random wrong choice."""
    test: str = ""
    """What was scored: "" = the training task's own test and validation items; `<task>` =
    another task's; `<task>~<set>` = a named set of a task's items (a study's)."""

    @property
    def is_default(self) -> bool:
        """A sweep part: a sweep pool (not a study's own), the split's n_train, clean labels,
        scored on its own task."""
        return (
            self.train_on in SWEEP_POOLS and not self.n_train and not self.noise and not self.test
        )

    def relative(self) -> Path:
        stem = self.train_on
        if self.n_train:
            stem += f"~n{self.n_train}"
        if self.noise:
            stem += f"~noise{self.noise:g}"
        folder = Path(self.task) / self.method
        if self.test:
            folder = folder / f"on-{self.test}"
        return folder / f"{stem}.{self.seed}.npz"

    @classmethod
    def from_path(cls, task: str, relative: Path) -> PartKey:
        """The key of a part file (`relative` to the task folder)."""
        head, seed = relative.stem.rsplit(".", 1)
        train_on, *extras = head.split("~")
        n_train, noise = 0, 0.0
        for extra in extras:
            if extra.startswith("noise"):
                noise = float(extra[5:])
            elif extra.startswith("n"):
                n_train = int(extra[1:])
        method = relative.parts[0]
        test = relative.parts[1][3:] if len(relative.parts) == 3 else ""
        return cls(task, method, train_on, int(seed), n_train, noise, test)


@dataclass
class Part:
    """One stored part: its arrays and its metadata."""

    key: PartKey
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def probe_arrays(self) -> dict[str, np.ndarray] | None:
        found = {k: v for k, v in self.arrays.items() if k.startswith("probe_")}
        return found or None


class RunStore:
    """Reads and writes the parts of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.parts_dir = self.run_dir / "parts"

    # -- tasks -----------------------------------------------------------------------------

    def write_task(self, slug: str, description: dict[str, Any]) -> None:
        """Store a task's item table (`task.json`); parts index its items."""
        write_json(self.parts_dir / slug / "task.json", description)

    def task(self, slug: str) -> dict[str, Any]:
        """A task's item table; a damaged one is refused (the next run writes it again)."""
        path = self.parts_dir / slug / "task.json"
        if not path.is_file():
            raise RunStoreError(f"{self.run_dir}: no task {slug!r} stored (missing {path})")
        try:
            return read_json(path)
        except RunStoreError as err:
            raise RunStoreError(
                f"{err}; run the command that made it again to rewrite it"
            ) from None

    def task_slugs(self) -> list[str]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.parts_dir.glob("*/task.json"))

    # -- parts -----------------------------------------------------------------------------

    def path(self, key: PartKey) -> Path:
        return self.parts_dir / key.relative()

    def meta(self, key: PartKey) -> dict[str, Any] | None:
        """The stored part's metadata, or None if it is not stored, or damaged (any member
        failing its CRC: the part is then recomputed, and the log names it)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(str(read_npz(path, only="meta")["meta"]))
        except (RunStoreError, KeyError, ValueError) as err:
            log.warning("%s; computing the part again", err)
            return None

    def put(self, key: PartKey, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
        """Write a part atomically (and its completions, if any, beside it)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        generations = meta.pop("generations", None)
        if generations is not None:
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in generations)
            _write_atomic(path.with_suffix(".jsonl"), text)
        meta = {**meta, "part_format": PART_FORMAT}
        staging = path.with_name(f"{path.stem}.partial-{os.getpid()}.npz")
        with _staged(staging, path):
            np.savez(staging, meta=np.array(json.dumps(meta)), **arrays)
            staging.replace(path)
        return path

    def read(self, key: PartKey) -> Part:
        """A stored part, every member checked against its CRC.

        Raises:
            RunStoreError: the part is damaged (the message names it and how to recompute it).
        """
        path = self.path(key)
        try:
            arrays = read_npz(path)
            meta = json.loads(str(arrays.pop("meta")))
        except (RunStoreError, KeyError, ValueError) as err:
            raise RunStoreError(
                f"{err}; run the command that made this part again to compute it again"
            ) from None
        return Part(key, arrays, meta)

    def keys(self, task: str | None = None, default_only: bool = False) -> Iterator[PartKey]:
        """Every stored part (of one task folder, if given; only sweep parts if
        `default_only`), in a stable order."""
        for slug in [task] if task else self.task_slugs():
            folder = self.parts_dir / slug
            paths = sorted([*folder.glob("*/*.npz"), *folder.glob("*/on-*/*.npz")])
            for path in paths:
                if ".partial-" in path.name:
                    continue
                key = PartKey.from_path(slug, path.relative_to(folder))
                if key.is_default or not default_only:
                    yield key


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.partial-{os.getpid()}")
    with _staged(staging, path):
        staging.write_text(text)
        staging.replace(path)


@contextmanager
def _staged(staging: Path, path: Path) -> Iterator[None]:
    """Remove the staging file of a write to `path` that failed (a full disk leaves no half
    file); a refusal by the system names `path` (a failed flush names no file)."""
    try:
        yield
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


@dataclass
class RunResults:
    """A run's results as tables: `items` (one row per part x evaluated item) and `summary`
    (one row per part), plus the run's `config.json`."""

    run_dir: Path
    config: dict[str, Any]
    items: Any
    """pandas DataFrame: task, dataset, measure, method, family, layer, train_on, seed,
    n_train, noise, test_task (the task whose item was scored), item_id, role, stratum,
    answer_index, prediction, prediction_text, correct, probs."""
    summary: Any
    """pandas DataFrame: task, method, family, layer, train_on, seed, n_train, noise,
    test_task, n_test, accuracy (hard test set), validation_accuracy, auroc (ROC-AUC of the
    test items' per-choice probabilities, `choice_probs.choice_auroc`), ece (expected
    calibration error of the test items' predictions, `choice_probs.expected_calibration_error`;
    the report's table gives it with an interval over seeds), seconds; for probes the
    chosen setting (`l2=0.01 epochs=100`) and whether its probabilities collapsed
    to near uniform."""
    study: Any = None
    """pandas DataFrame: a study's table, when `load_run` was given a study folder."""

    def probe(self, task: str, method: str, train_on: str, seed: int):
        """The fitted probe of a part, rebuilt (`.predict(ProbeData)` gives `ChoiceProbs`)."""
        from truthprobe.probes import scorer_from_arrays

        store = RunStore(self.run_dir)
        slug = _slug_of(store, task)
        part = store.read(PartKey(slug, method, train_on, seed))
        if part.probe_arrays is None:
            raise RunStoreError(f"{task} {method}: not a probe, so no weights are stored")
        return scorer_from_arrays(part.meta["family"], part.probe_arrays)


def _slug_of(store: RunStore, task: str) -> str:
    for slug in store.task_slugs():
        if store.task(slug)["task"] in (task, slug):
            return slug
    raise RunStoreError(f"{store.run_dir}: no task {task!r}; stored: {store.task_slugs()}")


def weights_name(model: dict) -> str:
    """How a table names the weights behind a row: model, quantization (where there is one)
    and dtype, e.g. `default bfloat16` or `default 8bit bfloat16`."""
    quantization = model.get("quantization", "none")
    parts = [model["name"], quantization if quantization != "none" else "", model["dtype"]]
    return " ".join(p for p in parts if p)


def load_run(run_dir: str | Path) -> RunResults:
    """Read a run directory (or a study folder inside one) into per-item and summary pandas
    DataFrames; every part, a study's included (`n_train`, `noise`, `test_task` say which).

    Raises:
        RunStoreError: when `run_dir` is not a truthprobe run directory.
    """
    import pandas as pd

    study = None
    if (Path(run_dir) / "study.json").is_file():  # a study folder inside its run directory
        csv = next(Path(run_dir).glob("*.csv"), None)
        study = pd.read_csv(csv) if csv is not None else None
        run_dir = Path(run_dir).parent.parent
    store = RunStore(run_dir)
    config_path = store.run_dir / "config.json"
    if not config_path.is_file():
        raise RunStoreError(f"{store.run_dir}: not a run directory (no config.json)")
    config = read_json(config_path)
    item_frames, summary_rows = [], []
    tables = {slug: store.task(slug) for slug in store.task_slugs()}
    for slug, task in tables.items():
        for key in store.keys(slug):
            tested = tables.get(key.test.split("~")[0] or slug)
            if tested is None:
                raise RunStoreError(f"{store.path(key)}: scores task {key.test!r}, not stored")
            table = tested["items"]
            ids, strata, roles = (
                np.array(table[k], dtype=object) for k in ("id", "stratum", "role")
            )
            answers = np.array(table["answer_index"])
            n_choices = np.array(table.get("n_choices") or [0] * len(answers))
            part = store.read(key)
            meta, arrays = part.meta, part.arrays
            rows = arrays["item"]
            correct = arrays["correct"].astype(bool)
            test = roles[rows] == "test"
            validation = roles[rows] == "validation"
            probs = arrays.get("probs")
            texts = meta.get("prediction_text")
            item_frames.append(
                pd.DataFrame(
                    {
                        "task": task["task"],
                        "dataset": task["dataset"],
                        "measure": task["measure"],
                        "method": key.method,
                        "family": meta["family"],
                        "layer": meta["layer"],
                        "train_on": key.train_on,
                        "seed": key.seed,
                        "n_train": meta["n_train"],
                        "noise": key.noise,
                        "test_task": tested["task"],
                        "item_id": ids[rows],
                        "role": roles[rows],
                        "stratum": strata[rows],
                        "answer_index": answers[rows],
                        "prediction": arrays["prediction"].astype(np.int64),
                        "prediction_text": texts if texts is not None else [None] * len(rows),
                        "correct": correct,
                        "probs": list(probs) if probs is not None else [None] * len(rows),
                    }
                )
            )
            summary_rows.append(
                {
                    "task": task["task"],
                    "method": key.method,
                    "family": meta["family"],
                    "layer": meta["layer"],
                    "train_on": key.train_on,
                    "seed": key.seed,
                    "n_train": meta["n_train"],
                    "noise": key.noise,
                    "test_task": tested["task"],
                    "n_test": int(test.sum()),
                    "accuracy": float(correct[test].mean()) if test.any() else float("nan"),
                    "validation_accuracy": (
                        float(correct[validation].mean()) if validation.any() else float("nan")
                    ),
                    "auroc": (
                        choice_auroc(probs[test], n_choices[rows][test], answers[rows][test])
                        if probs is not None and test.any() and n_choices.any()
                        else float("nan")
                    ),
                    "ece": (
                        expected_calibration_error(
                            prediction_confidence(probs[test]), correct[test]
                        )
                        if probs is not None and test.any()
                        else float("nan")
                    ),
                    "seconds": meta["seconds"],
                    "weights": weights_name(meta.get("model") or config["model_fingerprint"]),
                    "setting": (meta.get("info") or {}).get("setting"),
                    "collapsed": (meta.get("info") or {}).get("collapsed"),
                }
            )
    items = pd.concat(item_frames, ignore_index=True) if item_frames else pd.DataFrame()
    return RunResults(store.run_dir, config, items, pd.DataFrame(summary_rows), study)
