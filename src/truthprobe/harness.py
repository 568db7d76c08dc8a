"""The one harness: every method, on every task, over train_on x seed, one stored part each.

`run(config)` resolves the tasks from the data alone (before any model is loaded), fills each
multiple-choice task's rows into its dataset's activation cache, builds the methods the config
names (`truthprobe.methods`), and runs each (method, train_on, seed) not yet stored. Each part is
written atomically the moment it finishes (`truthprobe.runstore`), with a fingerprint of the
code, model, data, split and method settings that made it: an interrupted run resumes where it
stopped, and a part made by other code or data is recomputed, never silently reused.

The layer sweep (`truthprobe.sweep`) and the baselines comparison
(`truthprobe.comparison`) are two configurations of this; `truthprobe.report` renders
both from the stored parts alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from truthprobe.configs import (
    PROBE_KINDS,
    CacheConfig,
    DataConfig,
    ModelConfig,
    ModelsConfig,
    OutputConfig,
    PromptConfig,
    check_tasks,
    is_pooled,
    settings_hash,
)
from truthprobe.data import Dataset
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import TRAIN_ON, SplitConfig, noisy_labels
from truthprobe.hardness import get_measure
from truthprobe.locks import Lock
from truthprobe.memory import release_memory
from truthprobe.methods import (
    Method,
    MethodContext,
    MethodOutput,
    MethodSettings,
    Models,
    TaskStates,
    build_methods,
)
from truthprobe.pooled import POOLED_METHODS, PooledSpec, PooledStates, PooledTask, pooled_cache
from truthprobe.prompts import PromptTemplate
from truthprobe.runstore import PartKey, RunStore, RunStoreError, read_json, write_json
from truthprobe.tasks import Task, TaskSpec, load_task

if TYPE_CHECKING:
    from truthprobe.models import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """The ingredients every run shares, declared once: which tasks, which model, how items are
    split, and where data, prompts, caches and outputs come from and go. `sweep`, `baselines`,
    `directions` and every study are this plus their own fields, so the same flags mean the same
    thing everywhere, and with the same values they share one run directory."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level", "strategyqa:steps")
    """dataset:measure pairs, e.g. --tasks arc:grade mmlu:level (a .jsonl
    file in the schema works as dataset; a:m+b:n pools tasks into one
    training task). By default StrategyQA beside ARC and MMLU: on the
    embedded model only its probes clear zero-shot beyond the noise.
    """
    model: ModelsConfig = ModelsConfig()
    """One model, or several: each is run on its own (own caches and run directory), then
    they are compared (a `ModelConfig` is taken as that one model)."""
    split: SplitConfig = SplitConfig()
    data: DataConfig = DataConfig()
    prompt: PromptConfig = PromptConfig()
    cache: CacheConfig = CacheConfig()
    output: OutputConfig = OutputConfig()

    def __post_init__(self) -> None:
        if isinstance(self.model, ModelConfig):  # one model, as a library caller writes it
            object.__setattr__(self, "model", ModelsConfig.one(self.model))
        check_tasks(self.tasks)

    def per_model(self) -> list[Any]:
        """This config once per model, each with that model alone (what one run takes)."""
        return [replace(self, model=ModelsConfig.one(m)) for m in self.model.each()]

    def ingredients(self) -> dict[str, Any]:
        """The shared fields by name (to build another command's config from this one's)."""
        return {f.name: getattr(self, f.name) for f in fields(RunConfig)}

    def with_methods(
        self, kind: str, methods: tuple[str, ...], settings: MethodSettings
    ) -> HarnessConfig:
        """The harness run of these ingredients with `methods` under `settings` (one model:
        `per_model` splits several)."""
        self.model.single  # noqa: B018 - refuses several models, naming the flag
        return HarnessConfig(kind=kind, methods=methods, settings=settings, **self.ingredients())


@dataclass(frozen=True, kw_only=True)
class HarnessConfig(RunConfig):
    """Everything a run needs: the ingredients, and which methods with which settings."""

    kind: str
    """Names the run directory (`layer_sweep`, `baselines`)."""
    methods: tuple[str, ...]
    """Registered method names (`zero_shot`, `probe`, `icl`, `qlora`)."""
    settings: MethodSettings = MethodSettings()

    def run_hash(self) -> str:
        """Hash of the settings that change results; the run directory is named from it.

        What only chooses *what* runs (tasks, methods, probe kinds, layers) or where output
        goes is left out, so runs with more tasks or methods add parts to the same directory.
        The cache's batch size is left out too: a row does not depend on its pass.
        """
        values = asdict(self)
        values["model"] = asdict(self.model.single)  # as runs named before --model took several
        for name in ("tasks", "methods", "output"):
            values.pop(name)
        values["data"].pop("strict")  # refuses or not; what it keeps is in the data's hash
        values["settings"]["probe"] = {}
        return settings_hash(values)

    def run_dir(self) -> Path:
        return Path(self.output.runs_dir) / f"{self.kind}-{self.run_hash()}"


@dataclass
class RunSummary:
    """Where a run went, what it computed and how long its parts took."""

    run_dir: Path
    computed: int = 0
    reused: int = 0
    stale: int = 0
    """Stored parts made by other code or data, recomputed."""
    rows_extracted: dict[str, int] = field(default_factory=dict)
    correlations: dict[str, list[dict]] = field(default_factory=dict)
    """Per model-rated task: Spearman correlation of its measure with each human measure."""
    rows_repaired: int = 0
    """Damaged cache rows found by verification and extracted again."""
    caches: dict[str, str] = field(default_factory=dict)
    extract_seconds: float = 0.0
    method_seconds: float = 0.0
    model_seconds: float = 0.0

    def describe(self) -> str:
        extracted = ", ".join(f"{t} {n}" for t, n in self.rows_extracted.items()) or "none"
        stale = f" ({self.stale} made by other code or data, recomputed)" if self.stale else ""
        if self.rows_repaired:
            extracted += f" ({self.rows_repaired} damaged, extracted again)"
        return (
            f"parts: {self.computed} computed, {self.reused} reused{stale}; rows extracted: "
            f"{extracted}; time: model loading {self.model_seconds:.1f} s, extraction "
            f"{self.extract_seconds:.1f} s, methods {self.method_seconds:.1f} s; run "
            f"directory {self.run_dir}"
        )


def _prepare_cache(
    task: Task,
    template: PromptTemplate,
    models: Models,
    config: HarnessConfig,
    summary: RunSummary,
    verified: dict[str, set[int]],
):
    """Fill the task's rows into its dataset's cache; its states, layers and identity.

    `verified` holds, per cache file, the rows this run has verified already, so several
    measures of one dataset read and check its cache once.
    """
    from truthprobe.activations import fill_rows, open_cache
    from truthprobe.activations.cache import FORMAT

    loaded = models.identity
    started = time.perf_counter()
    with open_cache(task.dataset.name, task.pool, loaded, template, None, config.cache) as cache:
        rows = cache.rows_of(task.ids)
        filled = fill_rows(
            cache,
            task.pool,
            rows,
            loaded,
            template,
            progress=config.output.progress,
            max_prompt_tokens=config.cache.max_prompt_tokens,
            verified=verified.setdefault(str(cache.path), set()),
            batch_size=config.cache.batch_size,
            weights=lambda: models.base,
        )
        identity = {"key": cache.key, "format": FORMAT, "path": str(cache.path)}
        try:  # how a moved run folder finds its cache again (`activations.locate_cache`)
            identity["relative"] = str(cache.path.resolve().relative_to(
                Path(config.cache.cache_dir).resolve()))  # fmt: skip
        except ValueError:
            pass
        layers = cache.layers
    summary.extract_seconds += time.perf_counter() - started
    summary.rows_extracted[task.name] = filled.rows_extracted
    summary.rows_repaired += sum(len(d.rows) for d in filled.damaged)
    summary.caches[task.name] = identity["path"]
    return TaskStates(Path(identity["path"]), rows, task), layers, identity


def fill_dataset(
    dataset: Dataset,
    models: Models,
    cache_config: CacheConfig,
    progress: bool = True,
    verified: dict[str, set[int]] | None = None,
    prompt: PromptConfig | None = None,
    question_scores: bool = False,
) -> tuple[Path, tuple[int, ...], int]:
    """Fill every choice record of `dataset` into its activation cache (only missing rows are
    extracted): model-rated measures and the transfer studies read whole datasets.

    `verified`: per cache file, the rows this run has verified already (as
    `_prepare_cache`); `prompt`: the template (default: the paper's); `question_scores`: also
    every row's Min-K% scores. Returns the cache's path, its layers and the number of rows
    extracted.
    """
    from truthprobe.activations import fill_rows, open_cache
    from truthprobe.tasks import choice_records

    pool = choice_records(dataset)
    if not pool:
        raise TruthprobeError(f"{dataset.name}: has no answer choices, so no hidden states")
    loaded = models.identity
    template = (prompt or PromptConfig()).resolve(pool)
    with open_cache(dataset.name, pool, loaded, template, None, cache_config) as cache:
        filled = fill_rows(
            cache, pool, None, loaded, template, progress=progress,
            max_prompt_tokens=cache_config.max_prompt_tokens,
            verified=(verified if verified is not None else {}).setdefault(str(cache.path), set()),
            batch_size=cache_config.batch_size, question_scores=question_scores,
            weights=lambda: models.base,
        )  # fmt: skip
        return cache.path, cache.layers, filled.rows_extracted


def _model_rated_task(
    spec: TaskSpec,
    datasets: dict[str, Dataset],
    models: Models,
    config: HarnessConfig,
    summary: RunSummary,
    verified: dict[str, set[int]],
) -> Task:
    """A task under a model-based measure: the dataset's whole cache is filled, the measure's
    per-item scores are read from beside it (or computed there), then the task is resolved."""
    from truthprobe.activations import ActivationCache
    from truthprobe.mdl import model_scores, rank_correlations
    from truthprobe.min_k import MEASURE_SCORES
    from truthprobe.tasks import choice_records

    dataset = datasets[spec.dataset]
    if not choice_records(dataset):
        raise TruthprobeError(f"{spec.name}: model-based hardness needs answer choices")
    started = time.perf_counter()
    path, _, extracted = fill_dataset(
        dataset, models, config.cache, config.output.progress, verified, config.prompt,
        question_scores=spec.measure in MEASURE_SCORES,
    )  # fmt: skip
    with ActivationCache(path) as cache:
        scores = model_scores(cache, spec.measure)
    summary.extract_seconds += time.perf_counter() - started
    summary.rows_extracted[f"{spec.name} (rating)"] = extracted
    summary.correlations[spec.name] = rank_correlations(
        choice_records(dataset), spec.measure, scores
    )
    return load_task(spec, config.data, config.split, dataset, scores)


@dataclass(frozen=True)
class Draw:
    """One part's training draw: the pool, the seed, how many items and how noisy their labels.

    `n_train` 0 is the split's setting; a draw of the split's size is stored as that, so a study
    asking for it gets the sweep's part.
    """

    train_on: str
    seed: int
    n_train: int = 0
    noise: float = 0.0


def part_key(
    slug: str, label: str, draw: Draw, n_default: int, scored: str = "", scored_set: str = ""
) -> PartKey:
    """How a draw is stored, the one naming rule (the harness writes, study views read): the
    split's n_train (`n_default`) is stored as the default, and what was scored as "" (the
    task's own test and validation items), `<task>` or `<task>~<set>` (`scored`: the scored
    task's folder name, "" = the training task's own)."""
    n = 0 if draw.n_train == n_default else draw.n_train
    if scored_set:
        scored = f"{scored or slug}~{scored_set}"
    elif scored == slug:
        scored = ""
    return PartKey(slug, label, draw.train_on, draw.seed, n, draw.noise, scored)


def part_fingerprint(
    task: Task,
    method: Method,
    n_train: int,
    model: dict[str, Any],
    cache: dict[str, Any] | None,
    split: SplitConfig,
    noise: float = 0.0,
    pool: np.ndarray | None = None,
) -> str:
    """Hash of the code, model, data, cache, split and method settings behind a part (and the
    rows of a study's own training pool, and its label noise, where it has them)."""
    from truthprobe.provenance import code_version
    from truthprobe.runstore import PART_FORMAT

    payload = {
        "code": code_version(),
        "part_format": PART_FORMAT,
        "model": model,
        "task": task.fingerprint,
        "cache": None if cache is None else {k: cache.get(k) for k in ("key", "format")},
        "split": asdict(split),
        "method": [method.label, method.settings()],
        "n_train": n_train,
    }
    if noise:
        payload["noise"] = noise
    if pool is not None:
        payload["pool"] = _rows_hash(pool)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _arrays(output: MethodOutput, train: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = {
        "item": output.rows.astype(np.int32),
        "correct": output.correct.astype(np.uint8),
        "prediction": output.prediction.astype(np.int16),
        "train": (np.zeros(0) if train is None else train).astype(np.int32),
    }
    if output.probs is not None:
        arrays["probs"] = output.probs.astype(np.float32)
    arrays.update(output.probe or {})
    return arrays


def _write_config(
    config: HarnessConfig,
    run_dir: Path,
    tasks: list[Task],
    templates: dict[str, PromptTemplate],
    models: Models,
) -> None:
    """`config.json`: this invocation's settings and provenance; earlier invocations kept."""
    from truthprobe import __version__
    from truthprobe.provenance import provenance

    path = run_dir / "config.json"
    previous = {}
    if path.is_file():
        try:
            previous = read_json(path)
        except RunStoreError as err:  # only the record of earlier invocations is lost
            damaged = path.with_name(f"config.json.damaged-{int(time.time())}")
            path.replace(damaged)
            log.warning(
                "%s; kept as %s, written again (earlier invocations not listed)", err, damaged
            )
    invocations = previous.get("invocations", [])
    here = provenance()
    invocations.append({"argv": here["argv"], "started": here["started"], "tasks": config.tasks})
    datasets = dict(previous.get("datasets", {}))
    for task in [leaf for t in tasks for leaf in _leaves(t)]:
        datasets[task.name] = {
            "dataset": task.dataset.name,
            "source": task.dataset.source,
            "content_sha256": task.dataset.content_hash,
            "items": len(task.items),
            "n_test": len(task.split.test),
            "excluded": list(task.dataset.excluded),
        }
        if task.name in templates:
            datasets[task.name]["template"] = templates[task.name].reference()
    meta = {
        "kind": config.kind,
        "run_hash": config.run_hash(),
        "config": asdict(config),
        "package_version": __version__,
        "model_fingerprint": models.identity.fingerprint.to_dict(),
        "model_size": model_size(models.identity),
        "provenance": here,
        "datasets": datasets,
        "hardness_specs": {k: asdict(v) for k, v in config.data.field_specs().items()},
        "invocations": invocations,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, meta)


def model_size(loaded: LoadedModel) -> dict[str, int]:
    """What the model-size comparison plots against (`truthprobe.model_sizes`)."""
    from truthprobe.models import parameter_count, weight_bytes

    return {
        "parameters": parameter_count(loaded),
        "n_layers": loaded.n_layers,
        "d_model": loaded.d_model,
        "weight_bytes": weight_bytes(loaded),
    }


def run(config: HarnessConfig) -> RunSummary:
    """Run every method of `config` on every task, resuming stored parts.

    Raises:
        TruthprobeError: bad data, a split that cannot be made, a method that fails (the
            message names task, method, train_on and seed); nothing half-written is left.
    """
    with Harness(config) as harness:
        harness.run_all()
        return harness.summary


class Harness:
    """One open run: its tasks resolved from the data, its directory locked, its caches filled
    and its methods built; parts are computed on request and stored as they finish.

    `run` computes every method's sweep parts; a study opens a `Harness`, runs the same, then
    asks for the further parts its cells need (`run_parts`, `run_transfers`). Used as a context
    manager: the lock is held until exit, and a first attempt that fails before computing any
    part leaves no folder behind.
    """

    def __init__(self, config: HarnessConfig) -> None:
        self.config = config
        self.datasets: dict[str, Dataset] = {}  # several measures of one dataset read it once
        self.pending: list[Task | TaskSpec] = []  # model-rated tasks wait for the model
        for text in config.tasks:
            if is_pooled(text):
                self.pending.append(self._pooled(text))
                continue
            spec = TaskSpec.parse(text)
            dataset = self._dataset(spec.dataset)
            if get_measure(spec.measure).needs_model:
                self.pending.append(spec)
                continue
            self.pending.append(load_task(spec, config.data, config.split, dataset))
        self.run_dir = config.run_dir()
        self.store = RunStore(self.run_dir)
        self.summary = RunSummary(self.run_dir)
        self.tasks: dict[str, Task] = {}
        self.tasks_by_slug: dict[str, Task] = {}
        self.contexts: dict[str, MethodContext] = {}
        self.methods: dict[str, dict[str, Method]] = {}
        self.caches: dict[str, dict[str, Any] | None] = {}
        self._lock: Lock | None = None
        self._made: list[Path] = []
        self._opened = False

    def _pooled(self, text: str) -> PooledTask:
        """A pooled training task, its components resolved from their data (before any
        model)."""
        config, spec = self.config, PooledSpec.parse(text)
        other = [m for m in self.config.methods if m not in POOLED_METHODS]
        if other:
            raise TruthprobeError(
                f"{spec.name}: a pooled task runs {' and '.join(POOLED_METHODS)} only (they read "
                f"the activation cache), not {', '.join(other)}"
            )
        components = [
            load_task(part, config.data, config.split, self._dataset(part.dataset))
            for part in spec.parts
        ]
        return PooledTask.of(spec, components)

    def _dataset(self, name: str) -> Dataset:
        """A dataset, read once however many tasks name it."""
        if name not in self.datasets:
            self.datasets[name] = self.config.data.load(name)
        return self.datasets[name]

    def __enter__(self) -> Harness:
        run_dir = self.run_dir
        self._made = [p for p in (run_dir.parent, run_dir) if not p.exists()]
        self._lock = Lock(run_dir / ".lock").acquire(
            f"run directory {run_dir}", "wait for it to finish, or pass another --runs-dir"
        )
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is not None and self._made and self.summary.computed == 0:
                shutil.rmtree(self._made[0], ignore_errors=True)  # no empty folder after a failure
        finally:
            assert self._lock is not None
            self._lock.release()

    # -- caches ----------------------------------------------------------------------------

    def cache_requests(self) -> dict[str, Any]:
        """The caches this run fills, by dataset (as `--tasks` names it), one per dataset with
        choices: its tasks' items together (every record for model-rated hardness, and where
        `--shards` fills whole caches)."""
        from truthprobe.activations.planning import CacheRequest
        from truthprobe.min_k import MEASURE_SCORES
        from truthprobe.tasks import choice_records

        wanted: dict[str, set[str] | None] = {}
        scores: dict[str, bool] = {}
        for task in [c for t in self.pending for c in _leaves(t)]:
            spec = task.spec if isinstance(task, Task) else task
            if isinstance(task, Task) and task.free_form:
                continue
            ids = wanted.get(spec.dataset, set())
            if isinstance(task, Task) and self.config.cache.shards == 1 and ids is not None:
                wanted[spec.dataset] = ids | {r.id for r in task.records}
            else:
                wanted[spec.dataset] = None
            if isinstance(task, TaskSpec):
                scores[spec.dataset] = scores.get(spec.dataset, False) or (
                    task.measure in MEASURE_SCORES
                )
        requests = {}
        for key, ids in wanted.items():
            dataset = self.datasets[key]
            pool = choice_records(dataset)
            if pool:  # (a model-rated measure of a dataset without refuses when it runs)
                requests[key] = CacheRequest(
                    dataset.name, pool, self.config.prompt.resolve(pool),
                    None if ids is None else tuple(sorted(ids)),
                    question_scores=scores.get(key, False),
                )  # fmt: skip
        return requests

    def dry_run(self, models: list[ModelConfig] | None = None) -> str:
        """What `--dry-run` prints: the plan of every cache this run fills for its model (or
        for each of `models`: a study's caches are the same for every model); nothing is
        loaded."""
        from truthprobe.activations.planning import dry_run

        requests = list(self.cache_requests().values())
        return dry_run(requests, models or [self.config.model.single], self.config.cache)

    def _fill_shards(self) -> None:
        """With `--shards N`: fill each cache this run reads in shards through the launcher and
        merge it, before the model is loaded here (a cache made in one process is used as it
        is). The run then reads the merged caches as any other."""
        from truthprobe.activations.extract_command import (
            ExtractConfig,
            extract_sharded,
            plan_request,
        )
        from truthprobe.activations.shards import merged_or_absent

        config = self.config
        for key, request in self.cache_requests().items():
            extract = ExtractConfig(
                dataset=key, model=config.model.single, cache=config.cache, prompt=config.prompt,
                data=replace(config.data, max_per_stratum=0),
                question_scores=request.question_scores, progress=False,
            )  # fmt: skip
            planned = plan_request(extract)
            if not merged_or_absent(planned.plan.path):
                log.info("%s: made in one process; used as it is", planned.plan.path)
                continue
            started = time.perf_counter()
            log.info("%s", extract_sharded(extract, planned))
            self.summary.extract_seconds += time.perf_counter() - started

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> Harness:
        """Load the model, fill each task's rows into its cache, write the run's config and
        task tables, and build the methods (once; later calls return at once)."""
        if self._opened:
            return self
        config, summary = self.config, self.summary
        if config.cache.shards > 1:
            self._fill_shards()
        self.models = models = Models(config.model.single)
        started = time.perf_counter()
        self.fingerprint = models.identity.fingerprint.to_dict()
        summary.model_seconds = time.perf_counter() - started
        if "probe" in config.methods and config.settings.probe.layers is not None:
            from truthprobe.activations.extraction import resolve_layers

            # before anything is extracted: a layer the model does not have is a setting error
            resolve_layers(config.settings.probe.layers, models.identity.n_layers)
        verified: dict[str, set[int]] = {}
        tasks = [
            t
            if isinstance(t, Task)
            else _model_rated_task(t, self.datasets, models, config, summary, verified)
            for t in self.pending
        ]
        # each task's prompt, resolved once (the cache key holds it, so parts need no more)
        leaves = [leaf for t in tasks for leaf in _leaves(t)]
        templates = {t.name: config.prompt.resolve(t.pool) for t in leaves if not t.free_form}
        _write_config(config, self.run_dir, tasks, templates, models)
        for task in tasks:
            states, layers, cache = None, (), None
            if isinstance(task, PooledTask):
                prepared = [
                    _prepare_cache(c, templates[c.name], models, config, summary, verified)
                    for c in task.components
                ]
                states = PooledStates([p[0] for p in prepared], task)
                layers = prepared[0][1]
                cache = pooled_cache([p[2] for p in prepared])
            elif not task.free_form:
                states, layers, cache = _prepare_cache(
                    task, templates[task.name], models, config, summary, verified
                )
            methods = build_methods(config.methods, task, config.settings, layers)
            self.store.write_task(
                task.spec.slug,
                {
                    "task": task.name,
                    "dataset": _dataset_name(task),
                    "measure": task.spec.measure,
                    "fingerprint": task.fingerprint,
                    "cache": cache,
                    "items": task.table(),
                    "pools": {k: int(len(v)) for k, v in task.split.pools.items()},
                    "hardness_correlations": summary.correlations.get(task.name, []),
                    **(
                        {"components": [c.name for c in task.components]}
                        if isinstance(task, PooledTask) else {}
                    ),
                },
            )  # fmt: skip
            self.tasks[task.name] = task
            self.tasks_by_slug[task.spec.slug] = task
            self.caches[task.name] = cache
            self.methods[task.name] = {m.label: m for m in methods}
            self.contexts[task.name] = MethodContext(
                task, models, states, self.run_dir, config.output.progress, templates.get(task.name)
            )
        self._opened = True
        return self

    # -- parts -----------------------------------------------------------------------------

    def run_all(self) -> None:
        """Every method's sweep parts on every task: train_on x seed at the split's n_train."""
        self.open()
        for name, methods in self.methods.items():
            draws = {
                label: _draws(m, self.tasks[name].split.config) for label, m in methods.items()
            }
            total = sum(len(d) for d in draws.values())
            progress = self.config.output.progress
            with tqdm(total=total, desc=name, unit="part", disable=not progress) as bar:
                for label, method_draws in draws.items():
                    self.run_parts(name, label, method_draws, bar)

    def key(
        self, task: str, label: str, draw: Draw, test: str = "", scored_set: str = ""
    ) -> PartKey:
        """The stored key of a draw (`part_key`)."""
        own = self.tasks[task]
        scored = self.tasks[test].spec.slug if test else ""
        return part_key(own.spec.slug, label, draw, own.split.config.n_train, scored, scored_set)

    def add_pool(self, task_name: str, name: str, rows: np.ndarray) -> None:
        """A study's own training pool of a task (rows of its items), beside easy / hard / all;
        its draws follow the one draw rule, and its rows enter the fingerprints of its parts."""
        _check_set_name(name)
        self.open()
        self.tasks[task_name].split.pools[name] = np.sort(np.asarray(rows, np.int64))

    def run_parts(
        self, task_name: str, label: str, draws: list[Draw], bar: tqdm | None = None
    ) -> list[PartKey]:
        """The parts of one method on one task for `draws`, computing those not stored (or
        made by other code or data); returns their keys."""
        self.open()
        method = self.methods[task_name].get(label)
        if method is None:
            raise TruthprobeError(
                f"{task_name}: no method {label!r} in this run; built: "
                f"{', '.join(self.methods[task_name])}"
            )
        ctx, task, store = self.contexts[task_name], self.tasks[task_name], self.store
        split = task.split
        keys = [self.key(task_name, label, d) for d in draws]
        sizes = [
            method.n_train(d.n_train or split.config.n_train) if method.supervised else 0
            for d in draws
        ]
        model = self.models.fingerprint(method.quantization)
        expected = [
            part_fingerprint(task, method, n, model, self.caches[task_name],
                             split.config, d.noise,
                             None if d.train_on in TRAIN_ON else split.pools.get(d.train_on))
            for d, n in zip(draws, sizes, strict=True)
        ]  # fmt: skip
        stored = [store.meta(k) for k in keys]
        missing = [
            i for i, (m, f) in enumerate(zip(stored, expected, strict=True))
            if m is None or m.get("fingerprint") != f
        ]  # fmt: skip
        trains = {
            i: split.train_rows(draws[i].train_on, draws[i].seed, sizes[i])
            for i in missing
            if method.supervised
        }
        if any(d.noise for d in draws) and not method.noisy_labels:
            raise TruthprobeError(f"{task.name} {label}: this method cannot train on noisy labels")
        labels = {i: self._noisy(task, trains[i], draws[i]) for i in trains if draws[i].noise}
        shared = 0.0  # seconds of work shared by the missing parts, spread over them
        if missing and method.supervised:
            began = time.perf_counter()
            try:
                method.prepare(
                    ctx, [(trains[i], draws[i].seed) for i in missing if i not in labels]
                )
            except TruthprobeError as err:
                raise TruthprobeError(f"{task.name} {method.label}: {err}") from err
            shared = (time.perf_counter() - began) / len(missing)
        for i, (draw, key) in enumerate(zip(draws, keys, strict=True)):
            if bar is not None:
                bar.update()
            if i not in missing:
                self.summary.reused += 1
                continue
            if stored[i] is not None:
                self.summary.stale += 1
                log.warning("%s: stored part was made by other code or data; recomputing", key)
            train = trains.get(i)
            began = time.perf_counter()
            try:
                output = method.run(ctx, train, draw.seed, labels.get(i))
            except TruthprobeError as err:
                raise TruthprobeError(
                    f"{task.name} {method.label} (train_on {draw.train_on}, seed {draw.seed}): "
                    f"{err}"
                ) from err
            seconds = time.perf_counter() - began + shared
            self._put(key, output, train, method, draw, sizes[i], expected[i], seconds, model)
            if seconds > 1:  # a long run's parts would otherwise ratchet its resident size up
                release_memory()
        return keys

    def _noisy(self, task: Task, train: np.ndarray, draw: Draw) -> np.ndarray:
        """The training labels of a noisy draw (the one noise rule, `noisy_labels`)."""
        if not self.contexts[task.name].states:
            raise TruthprobeError(f"{task.name}: label noise needs answer choices")
        n_choices = np.array([task.records[r].n_choices for r in train])
        return noisy_labels(task.answers[train], n_choices, draw.noise, draw.seed)[0]

    def run_transfers(
        self,
        task_name: str,
        label: str,
        draws: list[Draw],
        test_name: str,
        scored_set: str = "",
        rows: np.ndarray | None = None,
    ) -> list[PartKey]:
        """Probes of `task_name`'s parts scored on other items at the same layer (one model, so
        one space): another task's test and validation items, or the `rows` of a named scoring
        set of `test_name` (a hardness level's test items); one stored part per draw."""
        from truthprobe.probes import scorer_from_arrays

        reused = self.summary.reused
        sources = self.run_parts(task_name, label, draws)  # the probes that are scored
        self.summary.reused = reused  # counted where the sweep asked for them, not again here
        target, ctx = self.tasks[test_name], self.contexts[test_name]
        method = self.methods[task_name][label]
        if ctx.states is None or method.family.split("-")[0] not in PROBE_KINDS:
            raise TruthprobeError(f"{label} on {test_name}: only probes transfer between tasks")
        if scored_set:
            _check_set_name(scored_set)
            if rows is None:
                raise TruthprobeError(f"scoring set {scored_set!r} needs its rows")
        rows = ctx.evaluated if rows is None else np.sort(np.asarray(rows, np.int64))
        keys = []
        for draw, source in zip(draws, sources, strict=True):
            key = self.key(task_name, label, draw, test_name, scored_set)
            keys.append(key)
            origin_meta = self.store.meta(source) or {}
            cache = self.caches[test_name] or {}
            identity = [origin_meta.get("fingerprint"), target.fingerprint, cache.get("key")]
            if scored_set:
                identity.append(_rows_hash(rows))
            expected = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
            stored = self.store.meta(key)
            if stored is not None and stored.get("fingerprint") == expected:
                self.summary.reused += 1
                continue
            began = time.perf_counter()
            origin = self.store.read(source)  # its arrays, only when the part is computed
            assert origin.probe_arrays is not None
            scorer = scorer_from_arrays(origin.meta["family"], origin.probe_arrays)
            data = ctx.states.probe_data(method.layer).take(rows)
            output = MethodOutput.from_choice_probs(rows, scorer.predict(data), data.answer_index)
            seconds = time.perf_counter() - began
            self._put(key, output, origin.arrays["train"], method, draw,
                      int(origin.meta["n_train"]), expected, seconds, self.fingerprint,
                      target)  # fmt: skip
        return keys

    def _put(
        self, key: PartKey, output: MethodOutput, train: np.ndarray | None, method: Method,
        draw: Draw, n_train: int, fingerprint: str, seconds: float, model: dict[str, Any],
        scored: Task | None = None,
    ) -> None:  # fmt: skip
        self.summary.method_seconds += seconds
        self.summary.computed += 1
        self.store.put(
            key,
            _arrays(output, train),
            {
                "task": self.tasks_by_slug[key.task].name,
                "test_task": scored.name if scored else self.tasks_by_slug[key.task].name,
                "method": method.label,
                "family": method.family,
                "layer": method.layer,
                "train_on": draw.train_on,
                "seed": draw.seed,
                "n_train": n_train,
                "noise": draw.noise,
                "seconds": seconds,
                "settings": method.settings(),
                "fingerprint": fingerprint,
                "model": model,
                "info": output.info,
                "prediction_text": output.prediction_text,
                "generations": output.generations,
            },
        )


def _leaves(task: Task | TaskSpec) -> list[Task | TaskSpec]:
    """A pooled task's component tasks; any other task itself."""
    return list(task.components) if isinstance(task, PooledTask) else [task]


def _dataset_name(task: Task) -> str:
    if isinstance(task, PooledTask):
        return "+".join(c.dataset.name for c in task.components)
    return task.dataset.name


def _rows_hash(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]


#: A study's own pool or scoring set: a file-name-safe name that cannot be read as a key part.
SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9=._-]{0,63}")


def _check_set_name(name: str) -> None:
    if name in (*TRAIN_ON, "none") or not SET_NAME.fullmatch(name):
        raise TruthprobeError(
            f"{name!r} cannot name a pool or scoring set: letters, digits, '=', '.', '_', '-' "
            "only, not easy / hard / all / none"
        )


def _draws(method: Method, split: SplitConfig) -> list[Draw]:
    """The sweep parts of a method: one unsupervised part, or every stratum x seed."""
    if not method.supervised:
        return [Draw("none", 0)]
    return [Draw(t, s) for t in TRAIN_ON for s in split.seed_values]
