"""Every method on the same splits: zero-shot, ICL, the best-layer linear probe and QLoRA.

For each dataset:measure task the harness builds one `EvalSplit` (the same hard test set, the
same training pools and seeds for every method), runs each method trained on easy / hard / all,
and stores per-item correctness, so `bootstrap_sgr` compares methods with paired intervals.
As in the paper (§7.2): the unsupervised term is zero-shot prompting (multiple-choice scoring;
for GSM8k zero-shot chain-of-thought); ICL and QLoRA reason before answering on StrategyQA and
GSM8k (`+cot`); GSM8k, with free-form answers, has no probe.

Every finished (task, method, train_on, seed) part is written to the run directory at once, so
an interrupted run resumes where it stopped, and a run with more tasks or methods reuses what
an earlier one computed. The run directory is named from the settings that change results,
not from the task or method lists.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from truthprobe import __version__
from truthprobe.activations import ActivationCache, ExtractConfig, extract
from truthprobe.baselines import cot
from truthprobe.baselines.icl import DEFAULT_K, icl_choice_probs
from truthprobe.baselines.qlora import (
    QLoRAConfig,
    qlora_choice_probs,
    remove_adapter,
    train_adapter,
)
from truthprobe.baselines.zero_shot import zero_shot_probs
from truthprobe.data import Question, load_dataset
from truthprobe.errors import TruthprobeError
from truthprobe.evaluate import TRAIN_ON, EvalSplit, SplitConfig, bootstrap_sgr, make_split
from truthprobe.hardness import stratify
from truthprobe.models import LoadedModel, load_model
from truthprobe.probes import ProbeData, make_probe
from truthprobe.prompts import default_template

METHODS = ("icl", "probe", "qlora")
#: Settings that only choose what runs or where output goes; the run directory ignores them.
NOT_HASHED = ("tasks", "methods")


@dataclass(frozen=True)
class BaselinesConfig:
    """Settings of `experiments/baselines.py` (defaults sized for a 2-core CPU)."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level", "strategyqa:steps", "gsm8k:steps")
    methods: tuple[str, ...] = METHODS
    model: str = "default"
    dtype: str = "auto"
    device: str = "auto"
    seeds: tuple[int, ...] = (0,)
    max_per_stratum: int | None = 500
    max_test: int | None = 60
    """Hard test items per task (None: half the hard stratum, as the sweep)."""
    validation_size: int = 100
    probe_n_train: int = 160
    icl_k: int | None = None
    """Demonstrations; None = the paper's k per dataset (10 ARC/MMLU, 8 StrategyQA/GSM8k)."""
    cot_datasets: tuple[str, ...] = cot.COT_DATASETS
    """Datasets whose ICL and QLoRA use chain-of-thought (free-form datasets always do)."""
    max_new_tokens: int | None = None
    """Generation budget for CoT; None = the paper's (300 GSM8k, 100 StrategyQA)."""
    qlora_n_train: int = 32
    qlora_quantization: str = "8bit"
    """8bit (the paper's setting; trains on CPU) or 4bit NF4 (GPU only)."""
    qlora_max_updates: int | None = 4
    """None trains the paper's full schedule (at least 10 updates)."""
    n_boot: int = 10_000
    cache_dir: str = "activations"
    runs_dir: str = "runs"
    plots_dir: str = "plots"
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown method(s) {sorted(unknown)}; valid: {', '.join(METHODS)}")

    def run_hash(self) -> str:
        from truthprobe.transfer import run_hash

        return run_hash(self, exclude=NOT_HASHED)


class PartStore:
    """Finished parts of a run: one small `.npz` (correctness, seconds) per part, written
    atomically, plus the CoT completions as JSON lines for inspection."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, task: str, name: str) -> Path:
        return self.root / task.replace(":", "-") / f"{name}.npz"

    def get(self, task: str, name: str) -> tuple[np.ndarray, float] | None:
        path = self._path(task, name)
        if not path.is_file():
            return None
        with np.load(path) as data:
            return data["correct"], float(data["seconds"])

    def put(
        self,
        task: str,
        name: str,
        correct: np.ndarray,
        seconds: float,
        rows: list[dict] | None = None,
    ) -> None:
        path = self._path(task, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if rows is not None:
            path.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        staging = path.with_name(path.stem + ".partial.npz")
        np.savez(staging, correct=np.asarray(correct, np.float64), seconds=seconds)
        staging.replace(path)

    def compute(
        self, task: str, name: str, fn: Callable[[], tuple[np.ndarray, list[dict] | None]]
    ) -> tuple[np.ndarray, float]:
        """The stored part, or `fn()` timed and stored."""
        stored = self.get(task, name)
        if stored is not None:
            return stored
        started = time.perf_counter()
        correct, rows = fn()
        seconds = time.perf_counter() - started
        self.put(task, name, correct, seconds, rows)
        return np.asarray(correct, np.float64), seconds


@dataclass
class TaskData:
    """One task's records, split and (multiple-choice tasks) activation cache."""

    dataset: str
    measure: str
    records: list[Question]
    split: EvalSplit
    cache_path: Path | None
    data_hash: str
    extract_seconds: float = 0.0

    @property
    def tests(self) -> list[Question]:
        return [self.records[i] for i in self.split.test]

    @property
    def free_form(self) -> bool:
        return self.records[0].choices is None


@dataclass
class _Models:
    """The base model (always) and the quantised one for QLoRA (loaded on first use)."""

    config: BaselinesConfig
    base: LoadedModel = field(init=False)
    _quantized: LoadedModel | None = None

    def __post_init__(self) -> None:
        self.base = load_model(
            self.config.model, dtype=self.config.dtype, device=self.config.device
        )

    @property
    def quantized(self) -> LoadedModel:
        if self._quantized is None:
            c = self.config
            self._quantized = load_model(c.model, c.qlora_quantization, c.dtype, c.device)
        return self._quantized


def _task_data(task: str, config: BaselinesConfig, models: _Models) -> TaskData:
    """Records and split of a task: from its activation cache, or (free-form) from the dataset."""
    dataset, measure = task.split(":", 1)
    split_config = SplitConfig(
        n_train=config.probe_n_train,
        seeds=config.seeds,
        validation_size=config.validation_size,
        max_test=config.max_test,
    )
    loaded_data = load_dataset(dataset)
    if loaded_data.records and loaded_data.records[0].choices is None:
        records = list(loaded_data.records)
        strata = stratify(records, measure)
        return TaskData(
            dataset,
            measure,
            records,
            make_split(strata, split_config),
            None,
            loaded_data.content_hash,
        )
    result = extract(
        ExtractConfig(
            dataset=dataset,
            measure=measure,
            max_per_stratum=config.max_per_stratum,
            cache_dir=config.cache_dir,
            progress=config.progress,
        ),
        loaded=models.base,
    )
    with ActivationCache(result.path) as cache:
        records = list(cache.records())
    split = make_split(stratify(records, measure), split_config)
    return TaskData(
        dataset,
        measure,
        records,
        split,
        result.path,
        loaded_data.content_hash,
        result.seconds if result.rows_written else 0.0,
    )


def run_baselines(config: BaselinesConfig) -> Path:
    """Run every method on every task (resuming stored parts); return the run directory."""
    run_dir = Path(config.runs_dir) / f"baselines-{config.run_hash()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = PartStore(run_dir / "parts")
    models = _Models(config)
    tasks_meta: dict[str, dict] = {}
    for task in config.tasks:
        data = _task_data(task, config, models)
        tasks_meta[task] = {
            "cache": str(data.cache_path) if data.cache_path else None,
            "data_content_sha256": data.data_hash,
            "n_test": len(data.split.test),
        }
        if data.extract_seconds:
            parts.put(task, "extract", np.zeros(0), data.extract_seconds)
        _run_task(task, data, config, models, parts, run_dir)
    meta_path = run_dir / "config.json"
    meta_path.write_text(
        json.dumps(
            {
                "config": asdict(config),
                "run_hash": config.run_hash(),
                "package_version": __version__,
                "model_fingerprint": models.base.fingerprint.to_dict(),
                "tasks": tasks_meta,
            },
            indent=2,
        )
    )
    return run_dir


def _run_task(
    task: str,
    data: TaskData,
    config: BaselinesConfig,
    models: _Models,
    parts: PartStore,
    run_dir: Path,
) -> None:
    """Zero-shot, then each method x train_on x seed; every part stored as it finishes."""
    tests, records = data.tests, data.records
    use_cot = data.free_form or data.dataset in config.cot_datasets
    max_new = config.max_new_tokens
    progress = config.progress

    answers = np.array([t.answer_index if t.answer_index is not None else -1 for t in tests])
    if data.free_form:

        def unsupervised():
            gen = cot.cot_generations(
                models.base, [], tests, max_new, cot.WORKSHEET, progress=progress
            )
            return gen.correct(), gen.to_rows()

        parts.compute(task, "zero_shot+cot.none.0", unsupervised)
    else:
        with ActivationCache(data.cache_path) as cache:
            zero = zero_shot_probs(cache, data.split.test).correct(answers)
            parts.put(task, "zero_shot.none.0", zero, 0.0)
            if "probe" in config.methods:
                started = time.perf_counter()
                layer, hits = _best_layer_probe(cache, data.split, task)
                seconds = (time.perf_counter() - started) / len(hits)
                for (train_on, seed), correct in hits.items():
                    parts.put(task, f"probe@{layer}.{train_on}.{seed}", correct, seconds)
    template = default_template(data.dataset)
    for method in ("icl", "qlora"):
        if method not in config.methods:
            continue
        label = f"{method}+cot" if use_cot else method
        for train_on in TRAIN_ON:
            for seed in config.seeds:
                if method == "icl":
                    k = config.icl_k or DEFAULT_K.get(data.dataset, 10)
                    demos = [records[i] for i in data.split.train_rows(train_on, seed, n=k)]

                    def run(demos=demos):
                        if use_cot:
                            gen = cot.cot_generations(
                                models.base, demos, tests, max_new, progress=progress
                            )
                            return gen.correct(), gen.to_rows()
                        return icl_choice_probs(models.base, template, demos, tests).correct(
                            answers
                        ), None
                else:
                    n = config.qlora_n_train
                    train = [records[i] for i in data.split.train_rows(train_on, seed, n=n)]

                    def run(train=train, seed=seed):
                        return _qlora(
                            models.quantized,
                            train,
                            tests,
                            template,
                            use_cot,
                            answers,
                            config,
                            seed,
                            run_dir,
                        )

                parts.compute(task, f"{label}.{train_on}.{seed}", run)


def _qlora(
    loaded: LoadedModel,
    train: list[Question],
    tests: list[Question],
    template,
    use_cot: bool,
    answers: np.ndarray,
    config: BaselinesConfig,
    seed: int,
    run_dir: Path,
) -> tuple[np.ndarray, list[dict] | None]:
    """Train (or reload) an adapter on `train`, evaluate on `tests`, restore the base model."""
    qconfig = QLoRAConfig(
        max_updates=config.qlora_max_updates, objective="cot" if use_cot else "mc"
    )
    try:
        train_adapter(
            loaded,
            train,
            None if use_cot else template,
            run_dir / "adapters",
            qconfig,
            seed=seed,
            progress=config.progress,
        )
        if use_cot:
            gen = cot.cot_generations(
                loaded, [], tests, config.max_new_tokens, progress=config.progress
            )
            return gen.correct(), gen.to_rows()
        return qlora_choice_probs(loaded, template, tests).correct(answers), None
    finally:
        remove_adapter(loaded)


def _best_layer_probe(
    cache: ActivationCache, split: EvalSplit, task: str
) -> tuple[int, dict[tuple[str, int], np.ndarray]]:
    """MC linear probe at the layer where easy-trained probes do best on easy validation items."""
    probe = make_probe("mc_linear")
    ids, mask, answers = tuple(cache.ids), cache.item("choice_mask"), cache.item("answer_index")
    best: tuple[float, int] | None = None
    for layer in tqdm(cache.layers, desc=f"probe layers {task}", unit="layer"):
        data = ProbeData(ids, cache.answer_end(layer), mask, answers)
        validation = data.take(split.validation)
        score = np.mean(
            [
                probe.fit(data.take(split.train_rows("easy", seed)), seed)
                .predict(validation)
                .accuracy(validation.answer_index)
                for seed in split.config.seeds
            ]
        )
        if best is None or score > best[0]:
            best = (score, layer)
    assert best is not None
    data = ProbeData(ids, cache.answer_end(best[1]), mask, answers)
    test = data.take(split.test)
    hits = {
        (train_on, seed): probe.fit(data.take(split.train_rows(train_on, seed)), seed)
        .predict(test)
        .correct(test.answer_index)
        for train_on in TRAIN_ON
        for seed in split.config.seeds
    }
    return best[1], hits


def load_parts(run_dir: str | Path, task: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """{method|train_on: (test items, seeds) correctness} and seconds per method of a task."""
    folder = Path(run_dir) / "parts" / task.replace(":", "-")
    grouped: dict[str, dict[int, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for path in sorted(folder.glob("*.npz")):
        if path.name.endswith(".partial.npz"):
            continue
        with np.load(path) as stored:
            correct, spent = stored["correct"], float(stored["seconds"])
        if path.stem == "extract":
            seconds["extract"] = spent
            continue
        method, train_on, seed = path.stem.rsplit(".", 2)
        grouped.setdefault(f"{method}|{train_on}", {})[int(seed)] = correct
        base = method.split("@")[0]
        seconds[base] = seconds.get(base, 0.0) + spent
    correct = {k: np.stack([v[s] for s in sorted(v)], 1) for k, v in grouped.items()}
    return correct, seconds


def baselines_table(run_dir: str | Path) -> str:
    """Method x {unsupervised, easy, hard, all} accuracy and SGR [95% CI]; writes table.csv.

    Covers the tasks of the run's latest invocation and every method stored for them.
    """
    import warnings

    from truthprobe.plots import plot_sgr_bars

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    rows, timing = [], []
    for task in meta["config"]["tasks"]:
        correct, seconds = load_parts(run_dir, task)
        unsup_key = next(k for k in correct if k.startswith("zero_shot"))
        unsup = correct[unsup_key]
        methods = sorted({k.split("|")[0] for k in correct if k.endswith("|easy")})
        for method in methods:
            trained = {t: correct.get(f"{method}|{t}") for t in TRAIN_ON}
            if any(v is None for v in trained.values()):
                continue  # a part is missing (interrupted run): no row rather than a wrong one
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sgr = bootstrap_sgr(
                    unsup, trained["easy"], trained["hard"], meta["config"]["n_boot"]
                )
            rows.append(
                dict(
                    task=task,
                    method=method,
                    unsupervised_method=unsup_key.split("|")[0],
                    unsupervised=float(unsup.mean()),
                    easy=float(trained["easy"].mean()),
                    hard=float(trained["hard"].mean()),
                    all=float(trained["all"].mean()),
                    sgr=sgr.sgr.estimate,
                    sgr_low=sgr.sgr.low,
                    sgr_high=sgr.sgr.high,
                    n_test=sgr.n_test,
                    n_seeds=sgr.n_seeds,
                    denominator_includes_zero=sgr.warning is not None,
                )
            )
        timing.append(f"{task}: " + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(seconds.items())))
    if not rows:
        raise TruthprobeError(f"{run_dir}: no complete method results to tabulate")
    with (run_dir / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_sgr_bars(rows, Path(meta["config"]["plots_dir"]) / run_dir.name / "sgr-bars.png")
    lines = [
        f"{'task':<18} {'method':<10} {'unsup':>6} {'easy':>6} {'hard':>6} {'all':>6}  SGR [95% CI]"
    ]
    for r in rows:
        flag = "  (denominator CI includes 0)" if r["denominator_includes_zero"] else ""
        lines.append(
            f"{r['task']:<18} {r['method']:<10} {r['unsupervised']:>6.3f} "
            f"{r['easy']:>6.3f} {r['hard']:>6.3f} {r['all']:>6.3f}  {r['sgr']:.2f} "
            f"[{r['sgr_low']:.2f}, {r['sgr_high']:.2f}]{flag}"
        )
    lines.append("wall time (s, summed over parts): " + "; ".join(timing))
    return "\n".join(lines)
