"""Zero-shot scoring vs activation extraction: items/s on the same ARC items, same passes.

    python benchmarks/zero_shot_bench.py [--items N]   # default: all 5,120 annotated items

Zero-shot (ICL with k = 0) and extraction share `forward_batch`; scoring skips gathering the
hidden states of every layer, so the ratio shows what the hidden-state bookkeeping costs.
"""

from __future__ import annotations

import argparse
import time

from truthprobe.baselines.icl import icl_choice_probs
from truthprobe.data import load_dataset
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import encode, forward_batch, packs, pass_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=0, help="0 = every annotated ARC item")
    parser.add_argument("--batch-size", type=int, default=0, help="cap on items per pass")
    args = parser.parse_args()
    records = [r for r in load_dataset("arc").records if r.meta.get("bloom")]
    records = records[: args.items or None]
    loaded = load_model("default")
    icl_choice_probs(loaded, MULTIPLE_CHOICE, [], records[:8])  # warm-up

    start = time.perf_counter()
    icl_choice_probs(loaded, MULTIPLE_CHOICE, [], records, batch_size=args.batch_size)
    scoring = len(records) / (time.perf_counter() - start)

    items = sorted(
        (encode(loaded.tokenizer, MULTIPLE_CHOICE, r) for r in records), key=lambda it: -it.n_tokens
    )
    layers = list(range(loaded.n_layers + 1))
    start = time.perf_counter()
    for group in packs(items, pass_tokens(loaded), args.batch_size):
        forward_batch(loaded, [items[i] for i in group], layers, 5)
    extraction = len(items) / (time.perf_counter() - start)
    print(
        f"zero-shot scoring: {scoring:.2f} items/s; extraction (all 19 layers): "
        f"{extraction:.2f} items/s; ratio {scoring / extraction:.2f} ({len(records)} items, "
        f"{loaded.fingerprint.dtype})"
    )
    print(f"zero-shot scoring of these {len(records)} items: {len(records) / scoring / 60:.1f} min")


if __name__ == "__main__":
    main()
