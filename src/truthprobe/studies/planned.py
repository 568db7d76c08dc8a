"""A study as a plan over the one harness and a view over its run store.

A planned study opens the sweep's run (`truthprobe.harness.Harness` with the sweep's settings,
so its run directory is the sweep's), has every sweep part made or reused (zero-shot and the
validated probe at every layer: the layer choice reads them), then asks for the further parts
its cells need: more or fewer training items, noisy labels, a probe scored on another task.
A cell whose key equals a sweep part *is* that part, so the study and `truthprobe sweep` never
disagree on it, and an interrupted study resumes from the parts already stored.

The table is a view: `render` reads the run store alone (no model, no cache), so
`truthprobe report <study folder>` redraws a study anywhere the run folder is copied. A study
folder is `<run directory>/studies/<kind>-<hash>/`: `study.json` (the study's settings),
`<kind>.csv`, `summary.txt`; its figure goes to `<plots>/<run directory>/<kind>-<hash>.png`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from truthprobe.configs import (
    CacheConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    ModelsConfig,
    OutputConfig,
    PromptConfig,
    SlurmConfig,
    is_pooled,
)
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import SplitConfig
from truthprobe.harness import Draw, Harness, HarnessConfig, RunConfig, part_key
from truthprobe.methods.base import layer_name
from truthprobe.methods.settings import ProbeSettings
from truthprobe.results import (
    TaskResults,
    accuracy_cells,
    best_layer,
    chance_items,
    collect,
    floor,
    part_matrix,
    sgr_cells,
    test_rows,
)
from truthprobe.runstore import PartKey, RunStore, _write_atomic, read_json, write_json
from truthprobe.tasks import Task, TaskSpec

#: The probe every study trains: the sweep's validated multiple-choice linear probe.
FAMILY = "mc_linear"


def method_label(layer: int) -> str:
    """The stored method label of the studies' probe at `layer` (as `ProbeAtLayer` names it)."""
    return f"{FAMILY}@{layer_name(layer)}"


@dataclass(frozen=True)
class PlannedStudyConfig(RunConfig):
    """Settings every planned study shares; all but the study's own fields are the sweep's, so
    with the same flags a study and `truthprobe sweep` share one run directory."""

    kind: ClassVar[str] = ""
    layer: int | None = None
    """Report every probe at this hidden-state layer (-2: the middle and last layers
    concatenated); default: per training task, the layer whose easy-trained probes do best on
    its easy validation items (the sweep's rule)."""

    def __post_init__(self) -> None:
        from truthprobe.hardness import get_measure

        super().__post_init__()
        for text in self.tasks:
            if is_pooled(text):
                raise ConfigError(
                    f"--tasks {text}: the studies take single tasks (the transfer matrix pools "
                    "every dataset but one itself, --leave-one-out)"
                )
            if get_measure(TaskSpec.parse(text).measure).needs_model:
                raise ConfigError(f"--tasks {text}: the studies take human-rated measures only")

    def harness(self) -> HarnessConfig:
        """The sweep's harness (`SweepConfig.harness`) with the validated probe alone."""
        from truthprobe.sweep import SweepConfig

        probe = ProbeSettings(probes=(FAMILY,), probe_preset=("validated",))
        return SweepConfig(probe=probe, **self.ingredients()).harness()

    def own(self) -> dict[str, Any]:
        """The study's own settings (what the run directory's hash does not hold)."""
        shared = {f.name for f in fields(RunConfig)} - {"tasks"}
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in shared}
        return {**values, "n_boot": self.output.n_boot}

    def study_hash(self) -> str:
        payload = json.dumps({"kind": self.kind, **self.own()}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def run(self) -> int:
        """The plan over the harness, then the study's table and where its files went (per
        model, then their comparison, where --model names several)."""
        from truthprobe.model_sizes import run_each_model

        def one(config: PlannedStudyConfig) -> tuple[Path, Path]:
            print(run_planned(registered(self.kind), config))
            return config.harness().run_dir(), study_dir(config.harness().run_dir(), config)

        return run_each_model(self, one)


class View:
    """A run store read for a study's table: tasks, sweep results, chosen layers, cells."""

    def __init__(self, run_dir: Path, config: PlannedStudyConfig, plan: dict | None = None) -> None:
        self.store = RunStore(run_dir)
        self.plan: dict[str, Any] = plan or {}
        """What a plan defined from the data and its table needs (JSON, stored as `plan.json`):
        `sets` (per task, named sets of its items: a level's test items, a study's pool)."""
        self.config = config
        self.results: dict[str, TaskResults] = {t.name: t for t in collect(run_dir)}
        stored = {slug: self.store.task(slug) for slug in self.store.task_slugs()}
        self.tables = {table["task"]: table for table in stored.values()}
        self.slugs = {table["task"]: slug for slug, table in stored.items()}
        missing = [t for t in config.tasks if t not in self.tables]
        if missing:
            raise TruthprobeError(f"{run_dir}: task {missing[0]} not stored; run the study again")
        self.layers: dict[str, dict] = {}
        self._zero_shot: dict[str, np.ndarray] = {}

    @property
    def seeds(self) -> range:
        return self.config.split.seed_values

    @property
    def n_boot(self) -> int:
        return self.config.output.n_boot

    def layer(self, task: str) -> int:
        """The probe layer of a training task: `--layer`, or chosen on its easy validation
        items by the sweep's rule (`results.best_layer`) from its stored parts."""
        if task not in self.layers:
            family = self.results[task].families[FAMILY]
            if self.config.layer is not None:
                self.layers[task] = {"layer": self.config.layer, "chosen_on": "--layer"}
            else:
                validation = {
                    layer_name(layer): float(np.mean(list(by_seed.values())))
                    for (layer, on), by_seed in family.validation.items()
                    if on == "easy"
                }
                self.layers[task] = {
                    "layer": best_layer(family),
                    "chosen_on": "easy validation accuracy of easy-trained probes",
                    "validation_accuracy": validation,
                }
        return int(self.layers[task]["layer"])

    def label(self, task: str) -> str:
        """The method label of the task's probe at its layer (`mc_linear@9`)."""
        return method_label(self.layer(task))

    def family_layers(self, task: str) -> list[int]:
        return self.results[task].families[FAMILY].layers

    def test(self, task: str) -> np.ndarray:
        return test_rows(self.tables[task])

    def keys(
        self, task: str, layer: int, draws: list[Draw], test: str = "", scored_set: str = ""
    ) -> list[PartKey]:
        """Stored keys of draws, named as the harness names them (`harness.part_key`)."""
        n_default, scored = self.config.split.n_train, self.slugs[test] if test else ""
        return [
            part_key(self.slugs[task], method_label(layer), d, n_default, scored, scored_set)
            for d in draws
        ]

    def rows(self, task: str, scored_set: str = "") -> np.ndarray:
        """Rows (task items) of a scoring set: the hard test set, or a study's named set."""
        if not scored_set:
            return self.test(task)
        try:
            return np.asarray(self.plan["sets"][task][scored_set], np.int64)
        except KeyError:
            raise TruthprobeError(f"{task}: no scoring set {scored_set!r} stored") from None

    def correct(
        self, task: str, layer: int, draws: list[Draw], test: str = "", scored_set: str = ""
    ) -> np.ndarray:
        """(items, draws) correctness of the parts on what they scored: `test`'s (default:
        `task`'s) hard test set, or its named set."""
        rows = self.rows(test or task, scored_set)
        keys = self.keys(task, layer, draws, test, scored_set)
        return part_matrix(self.store, keys, rows)

    def zero_shot(self, task: str) -> np.ndarray:
        """The task's zero-shot correctness on every item (its part, read once per view)."""
        if task not in self._zero_shot:
            unsup_name = floor(self.results[task])
            if unsup_name is None:
                raise TruthprobeError(f"{task}: no zero-shot part stored")
            key = PartKey(self.slugs[task], unsup_name, "none", 0)
            every = np.arange(len(self.tables[task]["items"]["id"]))
            self._zero_shot[task] = part_matrix(self.store, [key], every)[:, 0]
        return self._zero_shot[task]

    def seeds_of(self, train_on: str, n_train: int = 0, noise: float = 0.0) -> list[Draw]:
        return [Draw(train_on, s, n_train, noise) for s in self.seeds]

    def cell(
        self,
        task: str,
        correct: np.ndarray,
        ceiling: np.ndarray | None = None,
        scored_set: str = "",
    ) -> dict:
        """One cell on `task`'s hard test set (or its named set): accuracy [CI] of `correct`
        ((items, seeds)), chance and zero-shot there, and given the ceiling (the supervised
        probe SGR divides by) its accuracy (`own`) and SGR with the no-gap rule
        (`results.sgr_cells`)."""
        rows = self.rows(task, scored_set)
        unsup = self.zero_shot(task)[rows]
        chance = chance_items(np.asarray(self.tables[task]["items"]["n_choices"])[rows])
        row = dict(
            **accuracy_cells(correct, self.n_boot),
            chance=float("nan") if chance is None else float(chance.mean()),
            zero_shot=float(unsup.mean()),
            n_train=self.config.split.n_train,
        )
        if ceiling is not None:
            row["own"] = float(ceiling.mean())
            row.update(sgr_cells(unsup, correct, ceiling, self.n_boot, chance))
        return row


@dataclass(frozen=True)
class PlannedStudy:
    """What a study is: its config type, the parts it asks for, its table and its figure."""

    kind: str
    config_type: type[PlannedStudyConfig]
    plan: Callable[[Harness, View], None]
    """Ask the harness for every part the cells need (the sweep's are made already); a plan
    that defines sets of its own from the data puts them in `view.plan` (`plan.json`)."""
    rows: Callable[[View], list[dict]]
    """The tidy table, from the store alone."""
    summary: Callable[[list[dict]], str]
    plot: Callable[[list[dict], Path, str], Path]


STUDIES: dict[str, PlannedStudy] = {}


def register(study: PlannedStudy) -> PlannedStudy:
    STUDIES[study.kind] = study
    return study


def registered(kind: str) -> PlannedStudy:
    """The study `kind` names; its module (`truthprobe.studies.<kind>`) registers it on import
    (imported by name here, so this module imports no study and no cycle forms)."""
    import importlib

    if kind not in STUDIES:
        if not kind.isidentifier():
            raise KeyError(kind)
        importlib.import_module(f"truthprobe.studies.{kind}")
    return STUDIES[kind]


def study_dir(run_dir: Path, config: PlannedStudyConfig) -> Path:
    return run_dir / "studies" / f"{config.kind}-{config.study_hash()}"


def run_planned(study: PlannedStudy, config: PlannedStudyConfig) -> str:
    """Make (or reuse) every part of the study, then write its table and figure; returns the
    printed report."""
    started = time.perf_counter()
    harness = Harness(config.harness())  # tasks resolved from the data, before any model
    for task in harness.pending:
        if isinstance(task, Task) and task.free_form:
            raise TruthprobeError(
                f"{task.name}: {task.dataset.name} has no answer choices, so no probes"
            )
    with harness:
        harness.run_all()  # the sweep's parts: zero-shot and the probe at every layer
        if config.layer is not None:  # known once the model is: its layers are the run's
            built = [m.layer for m in next(iter(harness.methods.values())).values()]
            if method_label(config.layer) not in next(iter(harness.methods.values())):
                probed = ", ".join(f"{layer_name(k)} ({k})" if k < 0 else str(k)
                                   for k in sorted({k for k in built if k != -1}))  # fmt: skip
                raise TruthprobeError(
                    f"--layer {config.layer}: not a probed layer of this model; layers: {probed}"
                )
        view = View(harness.run_dir, config)
        study.plan(harness, view)
        summary = harness.summary
    folder = study_dir(summary.run_dir, config)
    if view.plan:
        write_json(folder / "plan.json", view.plan, default=_jsonable)
    write_json(folder / "study.json", {"kind": study.kind, "config": asdict(config)}, default=str)
    text = render(folder)
    return (
        f"{text}\nparts: {summary.computed} computed, {summary.reused} reused; time: model "
        f"loading {summary.model_seconds:.1f} s, extraction {summary.extract_seconds:.1f} s, "
        f"total {time.perf_counter() - started:.1f} s"
    )


def _jsonable(value: Any) -> Any:
    """numpy arrays and numbers in a plan, as JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _config_from(kind: str, values: dict) -> PlannedStudyConfig:
    """Rebuild a study's config from its `study.json` (nested dataclasses, tuples)."""
    parts = {"model": ModelsConfig, "split": SplitConfig, "data": DataConfig,
             "prompt": PromptConfig, "cache": CacheConfig, "output": OutputConfig}  # fmt: skip
    if isinstance(values.get("model", {}).get("name"), str):  # written before several models
        parts["model"] = ModelConfig
    config_type = registered(kind).config_type
    types = {f.name: f for f in fields(config_type)}
    built: dict[str, Any] = {}
    for name, value in values.items():
        if name not in types:
            continue
        if name in parts:
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            if isinstance(value.get("slurm"), dict):
                value["slurm"] = SlurmConfig(**value["slurm"])
            value = parts[name](**value)
        elif isinstance(value, list):
            value = tuple(value)
        built[name] = value
    return config_type(**built)


def is_study_dir(path: str | Path) -> bool:
    return (Path(path) / "study.json").is_file()


def render(folder: str | Path, plots_dir: str | Path | None = None) -> str:
    """A study's table, CSV, summary and figure from the run store alone.

    Raises:
        TruthprobeError: not a study folder, or a part the table needs is missing.
    """
    import pandas as pd

    folder = Path(folder)
    meta_path = folder / "study.json"
    if not meta_path.is_file():
        raise TruthprobeError(f"{folder}: not a study folder (no study.json)")
    meta = read_json(meta_path)  # a damaged file is one line naming it
    try:
        study = registered(meta["kind"])
        config = _config_from(meta["kind"], meta["config"])
    except (ValueError, KeyError, TypeError, ImportError, ConfigError) as err:
        raise TruthprobeError(f"{meta_path}: not a readable study description ({err})") from None
    run_dir = folder.parent.parent
    plan = None
    if (folder / "plan.json").is_file():
        plan = read_json(folder / "plan.json")
    view = View(run_dir, config, plan)
    rows = study.rows(view)
    run_meta = read_json(run_dir / "config.json")
    model = run_meta["model_fingerprint"]["name"]
    csv_path = folder / f"{study.kind}.csv"
    staging = csv_path.with_suffix(".csv.partial")
    pd.DataFrame(rows).to_csv(staging, index=False)
    staging.replace(csv_path)
    plots = Path(plots_dir or config.output.plots_dir) / run_dir.name
    figure = study.plot(rows, plots / f"{folder.name}.png", model)
    layers = ", ".join(f"{t} {layer_name(v['layer'])}" for t, v in view.layers.items())
    how = "--layer" if config.layer is not None else "chosen on easy validation"
    text = (
        f"{study.kind} {config.study_hash()} (run {run_dir.name})  model {model}; n_train "
        f"{config.split.n_train}, seeds {config.split.seeds}; layers ({how}): {layers}\n\n"
        f"{study.summary(rows)}\n\ntable: {csv_path}; figure: {figure} (and .pdf)"
    )
    _write_atomic(folder / "summary.txt", text + "\n")
    _write_atomic(folder / "layers.json", json.dumps(view.layers, indent=2, default=str))
    return text
