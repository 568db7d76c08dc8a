"""Warm-cache sweep speed: the validated grid against one fit per part, in the same run.

    python benchmarks/sweep_bench.py [--tasks arc:grade] [--max-per-stratum 500]
        [--baseline PATH]   # a checkout of an earlier truthprobe, e.g. `git worktree add`

1. Probe fits per second on the warm cache of the first task, every layer x easy/hard/all x 5
   seeds: the default grid fitted as one batched program per layer (`fit_many`), against the
   paper's single setting fitted one draw at a time (`MultipleChoiceLinearProbe.fit` in a
   Python loop, as 0.2.0 fitted every part).
2. The whole default sweep (validated grid and paper preset, every layer and mid+last) into a
   fresh run directory, against the sweep 0.2.0 ran (paper preset only, no mid+last), both from
   the same warm cache: probe time (fits, predictions, stored parts), wall time, and the report.
3. With --baseline, first that checkout's own sweep benchmark on the same cache (its code, in a
   subprocess), and the default sweep's probe time as a ratio to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from truthprobe.activations import ActivationCache
from truthprobe.configs import CacheConfig, DataConfig, OutputConfig
from truthprobe.evaluate import TRAIN_ON
from truthprobe.methods import ProbeSettings, TaskStates
from truthprobe.probes import fit_many, make_probe, preset_probes
from truthprobe.report import write_report
from truthprobe.sweep import SweepConfig, layer_sweep
from truthprobe.tasks import TaskSpec, load_task


def fit_rates(config: SweepConfig, cache_path: str) -> None:
    task = load_task(TaskSpec.parse(config.tasks[0]), config.data, config.split)
    with ActivationCache(cache_path) as cache:
        rows, layers = cache.rows_of(task.ids), cache.layers
    states = TaskStates(Path(cache_path), rows, task)
    draws = [
        (task.split.train_rows(t, s), s) for t in TRAIN_ON for s in task.split.config.seed_values
    ]
    grid, paper = preset_probes("mc_linear", "validated"), make_probe("mc_linear")
    batched = looped = 0.0
    for layer in layers:
        data = states.probe_data(layer)
        trains = [data.take(r) for r, _ in draws]
        started = time.perf_counter()
        fit_many(grid, trains, [s for _, s in draws])
        batched += time.perf_counter() - started
        started = time.perf_counter()
        for train, (_, seed) in zip(trains, draws, strict=True):
            paper.fit(train, seed)
        looped += time.perf_counter() - started
    n_batched, n_looped = len(layers) * len(draws) * len(grid), len(layers) * len(draws)
    print(
        f"fits on {config.tasks[0]} ({len(layers)} layers x {len(draws)} draws): grid of "
        f"{len(grid)} batched per layer {n_batched} fits in {batched:.1f} s = "
        f"{n_batched / batched:.0f} fits/s; paper setting one fit at a time {n_looped} fits in "
        f"{looped:.1f} s = {n_looped / looped:.0f} fits/s; fits/s ratio "
        f"{(n_batched / batched) / (n_looped / looped):.1f}; the whole grid takes "
        f"{batched / looped:.2f}x the time of the single setting"
    )


def timed_sweep(config: SweepConfig, runs_dir: str):
    config = dataclasses.replace(
        config, output=dataclasses.replace(config.output, runs_dir=runs_dir)
    )
    started = time.perf_counter()
    run = layer_sweep(config)
    wall = time.perf_counter() - started
    started = time.perf_counter()
    write_report(run.run_dir)
    return run, wall, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["arc:grade"])
    parser.add_argument("--max-per-stratum", type=int, default=500)
    parser.add_argument("--cache-dir", default="activations")
    parser.add_argument("--baseline", help="checkout of an earlier version to time first")
    args = parser.parse_args()
    baseline_s = run_baseline(args) if args.baseline else None

    with tempfile.TemporaryDirectory() as tmp:
        config = SweepConfig(
            tasks=tuple(args.tasks),
            data=DataConfig(max_per_stratum=args.max_per_stratum),
            cache=CacheConfig(cache_dir=args.cache_dir),
            output=OutputConfig(runs_dir=f"{tmp}/warm", plots_dir=tmp, progress=False),
        )
        warm = layer_sweep(config)  # fills the cache if needed (and warms imports)
        fit_rates(config, warm.caches[config.tasks[0]])
        old = dataclasses.replace(
            config, probe=ProbeSettings(probe_preset=("paper",), mid_last=False)
        )
        results = {
            "default sweep (validated + paper, mid+last)": timed_sweep(config, f"{tmp}/new"),
            "paper preset only, no mid+last (0.2.0's configuration)": timed_sweep(
                old, f"{tmp}/old"
            ),
        }
        extract_s = 0.0
        for path in set(warm.caches.values()):
            with ActivationCache(path) as cache:
                extract_s += float(cache.attrs["extract_seconds"])
        print(f"extraction recorded in the cache(s): {extract_s:.1f} s")
        for name, (run, wall, report_s) in results.items():
            print(
                f"{name}: probe time {run.method_seconds:.1f} s for {run.computed} parts "
                f"({wall:.1f} s wall: model load {run.model_seconds:.1f} s, cache check "
                f"{run.extract_seconds:.1f} s); report {report_s:.1f} s; "
                f"{run.method_seconds / extract_s:.3f} of the extraction time"
            )
        (new, *_), (base, *_) = results.values()
        print(
            f"default / paper-only sweep probe time: {new.method_seconds / base.method_seconds:.2f}"
        )
        if baseline_s is not None:
            ratio = new.method_seconds / baseline_s
            print(f"default sweep / baseline's sweep probe time: {ratio:.2f}")


def run_baseline(args) -> float:
    """The baseline checkout's sweep benchmark on this cache; its probe time in seconds."""
    root = Path(args.baseline).resolve()
    command = [sys.executable, str(root / "benchmarks" / "sweep_bench.py"), "--tasks", *args.tasks]
    command += ["--max-per-stratum", str(args.max_per_stratum)]
    command += ["--cache-dir", str(Path(args.cache_dir).resolve())]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("sweep from warm cache"))
    print(f"baseline {root.name}: {line}")
    return float(re.search(r"cache: ([0-9.]+) s", line).group(1))


if __name__ == "__main__":
    main()
