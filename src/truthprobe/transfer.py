"""Layer sweeps: train probes on easy / hard / all items at every layer, test on hard items.

`layer_sweep(SweepConfig(...))` extracts once (reusing a valid cache), fits every probe at every
layer for every (train_on, seed), scores the hard test set, and writes a run directory named
from a hash of the resolved config:

    runs/<hash>/config.json     resolved config, package version, model fingerprint, caches
    runs/<hash>/results.csv     one row per dataset x measure x layer x method x train_on x seed
    runs/<hash>/correct.npz     per-item correctness on the hard test set (for the bootstrap)

`truthprobe.report.write_report` then turns those into SGR tables and plots.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from truthprobe import __version__
from truthprobe.activations import ActivationCache, ExtractConfig, extract
from truthprobe.baselines import zero_shot_probs
from truthprobe.evaluate import TRAIN_ON, SplitConfig, make_split
from truthprobe.hardness import get_measure, stratify
from truthprobe.probes import PROBE_KINDS, ProbeData, make_probe


def run_hash(config, exclude: tuple[str, ...] = ()) -> str:
    """Hash of a run config's fields that change results (not output paths or progress bars).

    Run directories are named from it, so the same settings always land in the same place;
    `exclude` names further fields that do not change any stored result.
    """
    skip = ("runs_dir", "plots_dir", "cache_dir", "progress", *exclude)
    keep = {k: v for k, v in asdict(config).items() if k not in skip}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ProbeResult:
    """One row of the tidy results table (column names are stable API).

    `layer` is -1 and `train_on` / `seed` are "none" / -1 for methods without layers or training
    (zero-shot). `model` is the model fingerprint as JSON; `cache_file` the activation cache.
    """

    dataset: str
    measure: str
    layer: int
    method: str
    train_on: str
    seed: int
    n_train: int
    n_test: int
    accuracy: float
    """Accuracy on the hard test set."""
    validation_accuracy: float
    """Accuracy on the held-out easy validation items (used to choose layers)."""
    model: str
    cache_file: str
    package_version: str = __version__

    def to_dict(self) -> dict:
        return asdict(self)


RESULT_COLUMNS = tuple(f.name for f in fields(ProbeResult))


@dataclass(frozen=True)
class SweepConfig:
    """A layer sweep. `python experiments/layer_sweep.py --help` lists these as flags."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level")
    """dataset:measure pairs to sweep."""
    model: str = "default"
    """`default` (embedded Gemma 3 270M), a Hugging Face id, or a local path."""
    quantization: str = "none"
    dtype: str = "auto"
    device: str = "auto"
    layers: tuple[int, ...] | None = None
    """Hidden-state indices (0 = embeddings); None = every layer."""
    probes: tuple[str, ...] = ("mc_linear",)
    n_train: int = 160
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    test_fraction: float = 0.5
    validation_size: int = 100
    max_per_stratum: int | None = 500
    """Cap per easy/medium/hard stratum for extraction (None = every rated item)."""
    batch_size: int = 8
    n_boot: int = 10_000
    cache_dir: str = "activations"
    runs_dir: str = "runs"
    plots_dir: str = "plots"
    source: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for task in self.tasks:
            if ":" not in task:
                raise ValueError(f"task {task!r} must be dataset:measure, e.g. arc:grade")
        for kind in self.probes:
            if kind not in PROBE_KINDS:
                raise ValueError(f"unknown probe {kind!r}; valid: {', '.join(PROBE_KINDS)}")

    def run_hash(self) -> str:
        return run_hash(self)

    def split(self) -> SplitConfig:
        return SplitConfig(self.n_train, self.seeds, self.test_fraction, self.validation_size)


@dataclass
class SweepRun:
    """Where a sweep's outputs are and how long its parts took."""

    run_dir: Path
    extract_seconds: float = 0.0
    probe_seconds: float = 0.0
    caches: dict[str, str] = field(default_factory=dict)


def _task_key(dataset: str, measure: str) -> str:
    return f"{dataset}:{measure}"


def sweep_task(
    cache: ActivationCache, dataset: str, measure: str, config: SweepConfig
) -> tuple[list[ProbeResult], dict[str, np.ndarray]]:
    """All probe fits of one (dataset, measure) on a complete cache.

    Returns the tidy result rows and per-item correctness arrays keyed
    `dataset:measure|method|layer|train_on` (shape (n_test, n_seeds)); zero-shot arrays are
    keyed `...|zero_shot_raw|-1|none` and `...|zero_shot_chars|-1|none` (shape (n_test, 1)).
    """
    cache.require_complete()
    records = cache.records()
    get_measure(measure, dataset)
    strata = stratify(records, measure)
    split = make_split(strata, config.split())
    answers = cache.item("answer_index")
    mask = cache.item("choice_mask")
    ids = tuple(cache.ids)
    test_answers = answers[split.test]
    key = _task_key(dataset, measure)
    rows: list[ProbeResult] = []
    correct: dict[str, np.ndarray] = {}
    provenance = dict(model=str(cache.attrs["model"]), cache_file=str(cache.path))

    for norm in ("raw", "chars"):
        probs = zero_shot_probs(cache, split.test, norm)
        hits = probs.correct(test_answers)
        correct[f"{key}|zero_shot_{norm}|-1|none"] = hits[:, None]
        val = zero_shot_probs(cache, split.validation, norm).accuracy(answers[split.validation])
        rows.append(
            ProbeResult(
                dataset=dataset,
                measure=measure,
                layer=-1,
                method=f"zero_shot_{norm}",
                train_on="none",
                seed=-1,
                n_train=0,
                n_test=len(split.test),
                accuracy=float(hits.mean()),
                validation_accuracy=val,
                **provenance,
            )
        )

    layers = config.layers if config.layers is not None else cache.layers
    fits = len(layers) * len(config.probes) * len(TRAIN_ON) * len(config.seeds)
    with tqdm(total=fits, desc=f"probes {key}", unit="fit", disable=not config.progress) as bar:
        for layer in layers:
            data = ProbeData(ids, cache.answer_end(layer), mask, answers)
            test, validation = data.take(split.test), data.take(split.validation)
            for kind in config.probes:
                probe = make_probe(kind)
                for train_on in TRAIN_ON:
                    hits_by_seed = []
                    for seed in config.seeds:
                        fitted = probe.fit(data.take(split.train_rows(train_on, seed)), seed)
                        hits = fitted.predict(test).correct(test.answer_index)
                        val = fitted.predict(validation).accuracy(validation.answer_index)
                        hits_by_seed.append(hits)
                        rows.append(
                            ProbeResult(
                                dataset=dataset,
                                measure=measure,
                                layer=layer,
                                method=kind,
                                train_on=train_on,
                                seed=seed,
                                n_train=config.n_train,
                                n_test=len(split.test),
                                accuracy=float(hits.mean()),
                                validation_accuracy=val,
                                **provenance,
                            )
                        )
                        bar.update()
                    correct[f"{key}|{kind}|{layer}|{train_on}"] = np.stack(hits_by_seed, 1)
    return rows, correct


def layer_sweep(config: SweepConfig) -> SweepRun:
    """Run the sweep and write `runs/<hash>/`; returns where it went and the timings."""
    from truthprobe.models import load_model

    run_dir = Path(config.runs_dir) / f"layer_sweep-{config.run_hash()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    run = SweepRun(run_dir)
    loaded = None
    all_rows: list[ProbeResult] = []
    all_correct: dict[str, np.ndarray] = {}
    fingerprint = None
    dataset_hashes = {}
    for task in config.tasks:
        dataset, measure = task.split(":", 1)
        extract_config = ExtractConfig(
            dataset=dataset,
            model=config.model,
            quantization=config.quantization,
            dtype=config.dtype,
            device=config.device,
            measure=measure,
            max_per_stratum=config.max_per_stratum,
            batch_size=config.batch_size,
            cache_dir=config.cache_dir,
            source=config.source,
            progress=config.progress,
        )
        started = time.perf_counter()
        if loaded is None:
            loaded = load_model(config.model, config.quantization, config.dtype, config.device)
            fingerprint = loaded.fingerprint.to_dict()
        result = extract(extract_config, loaded=loaded)
        run.extract_seconds += time.perf_counter() - started
        run.caches[task] = str(result.path)
        started = time.perf_counter()
        with ActivationCache(result.path) as cache:
            dataset_hashes[task] = cache.attrs["dataset_hash"]
            rows, correct = sweep_task(cache, dataset, measure, config)
        run.probe_seconds += time.perf_counter() - started
        all_rows.extend(rows)
        all_correct.update(correct)

    with (run_dir / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(row.to_dict() for row in all_rows)
    (run_dir / "results.json").write_text(json.dumps([r.to_dict() for r in all_rows], indent=1))
    np.savez_compressed(run_dir / "correct.npz", **all_correct)
    (run_dir / "config.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "run_hash": config.run_hash(),
                "package_version": __version__,
                "model_fingerprint": fingerprint,
                "caches": run.caches,
                "dataset_hashes": dataset_hashes,
                "timing_seconds": {"extract": run.extract_seconds, "probes": run.probe_seconds},
            },
            indent=2,
        )
    )
    return run
