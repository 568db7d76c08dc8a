"""Extract once, probe anything: one ARC extraction serves every ARC hardness measure.

    python benchmarks/cache_reuse_bench.py [--max-per-stratum 500] [--n-train 100] [--batch-size 8]

Runs `truthprobe extract --dataset arc` (every ARC record; reused if the cache is warm), then
one sweep over arc:grade, arc:bloom, arc:difficulty and arc:depth_of_knowledge into a fresh run
directory (100 training items per draw: depth of knowledge has only 238 hard items, 119 of
them in the training pool). Prints the rows each task extracted (the target is 0 for all
four), the cache files used (one), and the sweep's time as a ratio to the extraction it reused.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from truthprobe.activations import ActivationCache, ExtractConfig, extract
from truthprobe.configs import CacheConfig, DataConfig, OutputConfig
from truthprobe.evaluate import SplitConfig
from truthprobe.sweep import SweepConfig, layer_sweep

MEASURES = ("grade", "bloom", "difficulty", "depth_of_knowledge")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-per-stratum", type=int, default=500)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--cache-dir", default="activations")
    parser.add_argument("--batch-size", type=int, default=8, help="for a new cache (whole ARC)")
    args = parser.parse_args()
    cache = CacheConfig(cache_dir=args.cache_dir, batch_size=args.batch_size)

    extracted = extract(ExtractConfig(dataset="arc", cache=cache))
    print(extracted.describe())
    with tempfile.TemporaryDirectory() as tmp:
        config = SweepConfig(
            tasks=tuple(f"arc:{m}" for m in MEASURES),
            data=DataConfig(max_per_stratum=args.max_per_stratum),
            split=SplitConfig(n_train=args.n_train),
            cache=cache,
            output=OutputConfig(runs_dir=tmp, plots_dir=tmp, progress=False),
        )
        started = time.perf_counter()
        run = layer_sweep(config)
        wall = time.perf_counter() - started
    for task, rows in run.rows_extracted.items():
        print(f"{task:<24} rows extracted: {rows}")
    print(f"cache files used: {sorted(set(run.caches.values()))}")
    with ActivationCache(extracted.path) as done:
        extract_s = float(done.attrs["extract_seconds"])
    print(
        f"sweep over {len(MEASURES)} measures: {wall:.1f} s wall ({run.computed} parts); "
        f"the extraction it reused took {extract_s:.1f} s; ratio {wall / extract_s:.3f}"
    )


if __name__ == "__main__":
    main()
