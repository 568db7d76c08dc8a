"""Baselines speed: ICL scoring with the demonstrations run once against per-item prompts.

    python benchmarks/baselines_bench.py [--items 60] [--k 10] [--dataset arc]

The same k demonstrations precede every test item of a (task, train_on, seed). (s) runs them
once (`scoring.shared_context`) and scores every test item as a continuation of them; (i) runs
each item's whole prompt (demonstrations included), as truthprobe did before, in the same
packed passes. Both in the dtype `--dtype auto` picks. Prints items/s of both, the speed-up,
and the largest difference between their log-likelihoods (the same sums, rounded differently).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from truthprobe import scoring
from truthprobe.baselines.icl import build_prompt
from truthprobe.data import load_dataset
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="arc")
    parser.add_argument("--items", type=int, default=60, help="test items")
    parser.add_argument("--k", type=int, default=10, help="demonstrations")
    args = parser.parse_args()

    records = [r for r in load_dataset(args.dataset).records if r.choices]
    demos, tests = records[: args.k], records[args.k : args.k + args.items]
    loaded = load_model("default")
    items = [
        scoring.encode_texts(
            loaded.tokenizer,
            build_prompt(MULTIPLE_CHOICE, demos, t).prefix,
            MULTIPLE_CHOICE.continuations(t),
            t.id,
        )
        for t in tests
    ]
    n_choices = max(t.n_choices for t in tests)
    shared = scoring.common_prefix(items)
    scoring.score_continuations(loaded, items[:2], n_choices, progress=False)  # warm-up

    def timed(label: str, share_prefix: bool) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        logprob, _ = scoring.score_continuations(
            loaded, items, n_choices, progress=False, share_prefix=share_prefix
        )
        seconds = time.perf_counter() - start
        print(f"{label}: {len(items) / seconds:.2f} items/s ({seconds:.1f} s)")
        return seconds, logprob

    print(
        f"{args.dataset}, k = {args.k}, {len(items)} test items, {loaded.model.dtype}: prompts "
        f"of {np.mean([len(it.prefix) for it in items]):.0f} tokens on average, {shared} shared"
    )
    per_item, alone = timed("(i) per-item prompts", False)
    once, together = timed("(s) demonstrations once", True)
    print(
        f"speed-up (s)/(i): {per_item / once:.1f}x; largest log-likelihood difference "
        f"{np.abs(together - alone).max():.2e} nats"
    )


if __name__ == "__main__":
    main()
