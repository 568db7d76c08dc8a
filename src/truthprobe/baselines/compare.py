"""Every method on the same splits: zero-shot, ICL, the best-layer linear probe and QLoRA.

For each dataset:measure task the harness builds one `EvalSplit` (the same hard test set, the
same training pools and seeds for every method), runs each method trained on easy / hard / all,
and writes per-item correctness in the sweep's format, so `truthprobe.report`-style SGR with
paired bootstrap intervals compares methods directly. The unsupervised term of every method's
SGR is zero-shot prompting, as in the paper.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from truthprobe import __version__
from truthprobe.activations import ActivationCache, ExtractConfig, extract
from truthprobe.baselines.icl import DEFAULT_K, icl_choice_probs
from truthprobe.baselines.qlora import QLoRAConfig, qlora_choice_probs, train_adapter
from truthprobe.baselines.zero_shot import zero_shot_probs
from truthprobe.evaluate import TRAIN_ON, SplitConfig, bootstrap_sgr, make_split
from truthprobe.hardness import stratify
from truthprobe.models import load_model
from truthprobe.probes import ProbeData, make_probe
from truthprobe.prompts import default_template

METHODS = ("icl", "probe", "qlora")


@dataclass(frozen=True)
class BaselinesConfig:
    """Settings of `experiments/baselines.py` (defaults sized for a 2-core CPU)."""

    tasks: tuple[str, ...] = ("arc:grade", "mmlu:level", "strategyqa:steps")
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

        return run_hash(self)


def run_baselines(config: BaselinesConfig) -> Path:
    """Run every method on every task; write correctness, a table and timings; return the run."""
    run_dir = Path(config.runs_dir) / f"baselines-{config.run_hash()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(config.model, dtype=config.dtype, device=config.device)
    correct: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    caches: dict[str, str] = {}
    for task in config.tasks:
        dataset, measure = task.split(":", 1)
        started = time.perf_counter()
        result = extract(
            ExtractConfig(
                dataset=dataset,
                measure=measure,
                max_per_stratum=config.max_per_stratum,
                cache_dir=config.cache_dir,
                progress=config.progress,
            ),
            loaded=loaded,
        )
        caches[task] = str(result.path)
        timings[f"{task} extract"] = time.perf_counter() - started
        with ActivationCache(result.path) as cache:
            records = cache.records()
            strata = stratify(records, measure)
            split = make_split(
                strata,
                SplitConfig(
                    n_train=config.probe_n_train,
                    seeds=config.seeds,
                    validation_size=config.validation_size,
                    max_test=config.max_test,
                ),
            )
            answers = cache.item("answer_index")
            test_answers = answers[split.test]
            tests = [records[i] for i in split.test]
            template = default_template(dataset)
            zero = zero_shot_probs(cache, split.test).correct(test_answers)
            correct[f"{task}|zero_shot|-1|none"] = zero[:, None]
            if "probe" in config.methods:
                started = time.perf_counter()
                correct.update(_best_layer_probe(cache, split, task))
                timings[f"{task} probe"] = time.perf_counter() - started
        for method in ("icl", "qlora"):
            if method not in config.methods:
                continue
            started = time.perf_counter()
            for train_on in TRAIN_ON:
                hits = []
                for seed in config.seeds:
                    if method == "icl":
                        k = config.icl_k or DEFAULT_K.get(dataset, 10)
                        demos = [records[i] for i in split.train_rows(train_on, seed, n=k)]
                        probs = icl_choice_probs(loaded, template, demos, tests)
                    else:
                        model = load_model(
                            config.model, config.qlora_quantization, config.dtype, config.device
                        )
                        train = [
                            records[i]
                            for i in split.train_rows(train_on, seed, n=config.qlora_n_train)
                        ]
                        train_adapter(
                            model,
                            train,
                            template,
                            run_dir / "adapters",
                            QLoRAConfig(max_updates=config.qlora_max_updates),
                            seed=seed,
                            progress=config.progress,
                        )
                        probs = qlora_choice_probs(model, template, tests)
                    hits.append(probs.correct(test_answers))
                correct[f"{task}|{method}|-1|{train_on}"] = np.stack(hits, 1)
            timings[f"{task} {method}"] = time.perf_counter() - started
    np.savez_compressed(run_dir / "correct.npz", **correct)
    (run_dir / "config.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "run_hash": config.run_hash(),
                "package_version": __version__,
                "model_fingerprint": loaded.fingerprint.to_dict(),
                "caches": caches,
                "timing_seconds": timings,
            },
            indent=2,
        )
    )
    return run_dir


def _best_layer_probe(cache: ActivationCache, split, task: str) -> dict[str, np.ndarray]:
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
    out = {}
    for train_on in TRAIN_ON:
        hits = [
            probe.fit(data.take(split.train_rows(train_on, seed)), seed)
            .predict(test)
            .correct(test.answer_index)
            for seed in split.config.seeds
        ]
        out[f"{task}|probe@{best[1]}|-1|{train_on}"] = np.stack(hits, 1)
    return out


def baselines_table(run_dir: str | Path) -> str:
    """Method x {unsupervised, easy, hard, all} accuracy and SGR [95% CI]; writes table.csv."""
    import warnings

    from truthprobe.plots import plot_sgr_bars

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    correct = dict(np.load(run_dir / "correct.npz"))
    rows = []
    for task in meta["config"]["tasks"]:
        unsup = correct[f"{task}|zero_shot|-1|none"]
        methods = sorted(
            {
                k.split("|")[1]
                for k in correct
                if k.startswith(task + "|") and k.split("|")[3] == "easy"
            }
        )
        for method in methods:
            trained = {t: correct[f"{task}|{method}|-1|{t}"] for t in TRAIN_ON}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sgr = bootstrap_sgr(
                    unsup, trained["easy"], trained["hard"], meta["config"]["n_boot"]
                )
            rows.append(
                dict(
                    task=task,
                    method=method,
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
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in meta["timing_seconds"].items())
    lines.append(f"wall time: {timing}")
    return "\n".join(lines)
