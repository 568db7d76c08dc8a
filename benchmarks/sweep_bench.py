"""Warm-cache sweep speed, as a ratio to the extraction that filled the cache.

    python benchmarks/sweep_bench.py [--tasks arc:grade] [--max-per-stratum 500]

Fills the cache the default sweep needs (if it is not warm already), then runs the whole layer
sweep (every layer x easy/hard/all x 5 seeds x the multiple-choice linear probe) into a fresh
run directory, so every part is computed and stored from the warm cache. Prints the probe time
(fits, predictions and the stored parts), the report time (bootstrap, tables, plots) and their
ratio to the cache's recorded extraction time.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from truthprobe.activations import ActivationCache
from truthprobe.configs import CacheConfig, DataConfig, OutputConfig
from truthprobe.report import write_report
from truthprobe.transfer import SweepConfig, layer_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["arc:grade"])
    parser.add_argument("--max-per-stratum", type=int, default=500)
    parser.add_argument("--cache-dir", default="activations")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = SweepConfig(
            tasks=tuple(args.tasks),
            data=DataConfig(max_per_stratum=args.max_per_stratum),
            cache=CacheConfig(cache_dir=args.cache_dir),
            output=OutputConfig(runs_dir=f"{tmp}/warm", plots_dir=tmp, progress=False),
        )
        layer_sweep(config)  # fills the cache if needed (and warms imports)
        fresh = dataclasses.replace(
            config, output=dataclasses.replace(config.output, runs_dir=f"{tmp}/fresh")
        )
        started = time.perf_counter()
        run = layer_sweep(fresh)
        wall = time.perf_counter() - started
        started = time.perf_counter()
        write_report(run.run_dir)
        report_s = time.perf_counter() - started
        extract_s = 0.0
        for path in set(run.caches.values()):
            with ActivationCache(path) as cache:
                extract_s += float(cache.attrs["extract_seconds"])
                print(f"cache {path}: {cache.rows_done} of {cache.n_items} rows extracted")
    print(f"extraction recorded in the cache(s): {extract_s:.1f} s")
    print(
        f"sweep from warm cache: {run.method_seconds:.1f} s for {run.computed} parts "
        f"({wall:.1f} s wall: model load {run.model_seconds:.1f} s, cache check "
        f"{run.extract_seconds:.1f} s, rows extracted {sum(run.rows_extracted.values())})"
    )
    print(f"report (bootstrap {config.output.n_boot} resamples, tables, plots): {report_s:.1f} s")
    print(f"sweep / extraction time: {run.method_seconds / extract_s:.3f}")


if __name__ == "__main__":
    main()
