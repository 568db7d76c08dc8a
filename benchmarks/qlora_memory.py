"""QLoRA training's memory and speed: 0.5.0's scorer against today's, and 8-bit weights.

    python benchmarks/qlora_memory.py [--dataset arc] [--items 32] [--updates 2]

Each variant trains LoRA adapters (the paper's settings, `--updates` optimiser updates of
`--items` items) in a fresh process and reports its peak RSS and seconds per update:
(p) 0.5.0's scores (one right-padded sequence per choice, full-vocabulary head) on the model
in the dtype `auto` picks; (t) today's (one packed pass per micro-batch, each prompt once, the
head's gradient made in its forward sweep) on the same weights; (q) today's on
LLM.int8 weights (bitsandbytes), as 0.5.0's CPU default trained. The same training items and
seed for all three; the losses printed should be close for (p) and (t) (the same objective).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(variant: str, dataset: str, n_items: int, updates: int) -> None:
    from truthprobe.baselines import qlora
    from truthprobe.data import load_dataset
    from truthprobe.models import load_model
    from truthprobe.prompts import MULTIPLE_CHOICE

    if variant == "p":
        sys.path.insert(0, str(Path(__file__).parent))
        from previous_path import choice_log_likelihoods_050

        qlora.choice_log_likelihoods = choice_log_likelihoods_050
    loaded = load_model("default", quantization="8bit" if variant == "q" else "none")
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    records = [r for r in load_dataset(dataset).records if r.choices][:n_items]
    config = qlora.QLoRAConfig(max_updates=updates)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as adapters:
        trained = qlora.train_adapter(
            loaded, records, MULTIPLE_CHOICE, adapters, config, progress=False
        )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(loaded=loaded_rss, peak=peak, seconds=seconds / updates,
                          losses=trained.losses, dtype=loaded.fingerprint.dtype)))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="arc")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dataset, args.items, args.updates)
        return
    labels = {
        "p": "(p) 0.5.0 scores, per-choice sequences",
        "t": "(t) today: packed, head gradient in one sweep",
        "q": "(q) today on LLM.int8 weights",
    }
    print(f"QLoRA on {args.items} {args.dataset} items, {args.updates} updates, micro-batch 1")
    for variant, label in labels.items():
        command = [sys.executable, __file__, "--child", variant, "--dataset", args.dataset,
                   "--items", str(args.items), "--updates", str(args.updates)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{label}: peak RSS {r['peak'] / 2**20:.2f} GiB (model loaded: "
            f"{r['loaded'] / 2**20:.2f} GiB), {r['seconds']:.1f} s per update, "
            f"losses {', '.join(f'{x:.3f}' for x in r['losses'])} ({r['dtype']})"
        )


if __name__ == "__main__":
    main()
