"""Sweep speed from a warm cache, as a ratio to the extraction that filled the cache.

    python benchmarks/sweep_bench.py [--task arc:grade] [--max-per-stratum 500]

Runs the full layer sweep (every layer x easy/hard/all x 5 seeds x the multiple-choice linear
probe) on a cache made by the default sweep (extracting it first if missing), and prints the
probe time, the bootstrap/report time, and their ratio to the cache's recorded extraction time.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from truthprobe.activations import ActivationCache
from truthprobe.report import write_report
from truthprobe.transfer import SweepConfig, layer_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arc:grade")
    parser.add_argument("--max-per-stratum", type=int, default=500)
    parser.add_argument("--cache-dir", default="activations")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = SweepConfig(
            tasks=(args.task,),
            max_per_stratum=args.max_per_stratum or None,
            cache_dir=args.cache_dir,
            runs_dir=tmp,
            plots_dir=tmp,
            progress=False,
        )
        layer_sweep(config)  # warms the cache (and imports) if needed
        run = layer_sweep(config)
        started = time.perf_counter()
        write_report(run.run_dir)
        report_s = time.perf_counter() - started
        with ActivationCache(run.caches[args.task]) as cache:
            extract_s = float(cache.attrs.get("extract_seconds", float("nan")))
            items, layers = cache.n_items, len(cache.layers)
    fits = layers * 3 * len(config.seeds)
    print(f"cache: {items} items x {layers} layers, extracted in {extract_s:.1f} s")
    print(
        f"sweep from warm cache: {run.probe_seconds:.1f} s for {fits} probe fits "
        f"({run.extract_seconds:.1f} s cache check)"
    )
    print(f"report (bootstrap {config.n_boot} resamples, tables, plots): {report_s:.1f} s")
    print(f"sweep / extraction time: {run.probe_seconds / extract_s:.3f}")


if __name__ == "__main__":
    main()
