"""Shards on one machine: `extract --shards N --launcher local` against one process, same items.

    python benchmarks/shard_bench.py [--items 1200] [--shards 2] [--model default]

Writes the first `--items` ARC records with choices to a file, then runs, each as the console
script in a fresh process, wall-clocked from outside: (o) `truthprobe extract` in one process,
(s) the same with `--shards N --launcher local` (N worker processes sharing the cores, each
loading the model once; then the merge), and (m) `truthprobe cache merge` of the finished shards
alone. Prints items/s of both, their ratio, the merge time, and whether the merged cache equals
the one-process cache array for array (every hidden state, score and row flag).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from truthprobe.configs import DataSource

SCRIPT = str(Path(sys.executable).with_name("truthprobe"))


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=os.environ)
    if done.returncode:
        raise SystemExit(f"truthprobe {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started, done.stdout.strip()


def arrays(path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda k, v: found.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1200)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    records = [r for r in DataSource().load("arc").records if r.choices][: args.items]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / f"arc{len(records)}.jsonl"
        data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
        base = ("extract", "--dataset", str(data), "--model", args.model, "--no-progress")
        timed("extract", "--dataset", str(data), "--model", args.model, "--dry-run")  # converts
        one_s, one = timed(*base, "--cache-dir", f"{tmp}/one")
        shard_s, sharded = timed(*base, "--cache-dir", f"{tmp}/two", "--shards", str(args.shards))
        (whole,) = Path(tmp, "one").rglob("*.h5")
        merged = Path(tmp, "two") / whole.relative_to(Path(tmp, "one"))
        merged.unlink()
        merge_s, _ = timed("cache", "merge", str(merged))
        a, b = arrays(whole), arrays(merged)
        equal = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    n = len(records)
    print(f"{n} ARC items, model {args.model}, {os.cpu_count()} CPU cores")
    print(f"(o) one process:            {n / one_s:6.2f} items/s ({one_s:.1f} s wall)  [{one}]")
    print(
        f"(s) {args.shards} shards, local workers: {n / shard_s:6.2f} items/s ({shard_s:.1f} s "
        f"wall, merge included)  [{sharded}]"
    )
    print(f"(m) cache merge alone:      {merge_s:.2f} s wall (a fresh process)")
    print(f"speed (s)/(o): {one_s / shard_s:.2f}x; merged equals one process: {equal}")


if __name__ == "__main__":
    main()
