"""Baselines speed: ICL scoring and chain-of-thought generation, today's path against 0.5.0's.

    python benchmarks/baselines_bench.py [--items 60] [--k 10] [--dataset arc]
                                         [--cot-items 32] [--cot-k 8]

The same k demonstrations precede every test item of a (task, train_on, seed).
ICL scoring: (s) runs them once (`scoring.shared_context`) and scores every test item as a
continuation of them; (i) runs each item's whole prompt (demonstrations included) in the same
packed passes; (p) is 0.5.0's scorer (batches of 4 left-padded whole prompts, frozen in
`previous_path.py`). Prints items/s of each, the speed-ups, and the largest differences between
their log-likelihoods (the same sums, rounded differently).
CoT on GSM8k: (g) `scoring.generate_greedy` (demonstrations once, prompts decoded together,
joining as others stop); (o) 0.5.0's `generate_greedy` (transformers' `generate` on batches of 8
left-padded whole prompts, frozen in `previous_path.py`). Prints items/s of both, the speed-up
and how many completions are equal (in 16-bit they may part where two tokens nearly tie: a
batch's shape changes rounding); (d) is (g) with each prompt stopping once its answer line is
complete (`cot.answer_decided`, what `cot_generations` does), with how many extracted answers
equal (g)'s and (o)'s. Everything in the dtype `load_model`'s `auto` picks.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from previous_path import generate_greedy_050, score_continuations_050

from truthprobe import scoring
from truthprobe.baselines import cot
from truthprobe.baselines.icl import build_prompt
from truthprobe.data import load_dataset
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="arc")
    parser.add_argument("--items", type=int, default=60, help="test items")
    parser.add_argument("--k", type=int, default=10, help="demonstrations")
    parser.add_argument("--cot-items", type=int, default=32, help="GSM8k test items (0: skip)")
    parser.add_argument("--cot-k", type=int, default=8, help="CoT demonstrations")
    args = parser.parse_args()
    loaded = load_model("default")
    icl_scoring(loaded, args.dataset, args.items, args.k)
    if args.cot_items:
        cot_generation(loaded, args.cot_items, args.cot_k)


def icl_scoring(loaded, dataset: str, n_items: int, k: int) -> None:

    records = [r for r in load_dataset(dataset).records if r.choices]
    demos, tests = records[:k], records[k : k + n_items]
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
        f"ICL scoring, {dataset}, k = {k}, {len(items)} test items, {loaded.model.dtype}: prompts "
        f"of {np.mean([len(it.prefix) for it in items]):.0f} tokens on average, {shared} shared"
    )
    start = time.perf_counter()
    previous = score_continuations_050(loaded, items, n_choices)
    before = time.perf_counter() - start
    print(f"(p) 0.5.0, batches of 4 prompts: {len(items) / before:.2f} items/s ({before:.1f} s)")
    per_item, alone = timed("(i) per-item prompts, packed passes", False)
    once, together = timed("(s) demonstrations once", True)
    print(
        f"speed-up (s)/(p): {before / once:.1f}x, (s)/(i): {per_item / once:.1f}x; largest "
        f"log-likelihood difference (s)-(i) {np.abs(together - alone).max():.2e} nats, "
        f"(s)-(p) {np.abs(together - previous).max():.2e}"
    )


def cot_generation(loaded, n_items: int, k: int) -> None:
    records = load_dataset("gsm8k").records
    demos, tests = records[:k], records[k : k + n_items]
    budget = cot.MAX_NEW_TOKENS["gsm8k"]

    def count(text: str) -> int:
        return scoring.count_tokens(loaded, text)

    prompts = [cot.build_prompt(demos, t, count, 2048, budget).prefix for t in tests]
    print(
        f"CoT generation, gsm8k, k = {k}, {len(prompts)} test items, at most {budget} new "
        f"tokens: prompts of {np.mean([count(p) for p in prompts]):.0f} tokens on average"
    )
    scoring.generate_greedy(loaded, prompts[:2], 4, cot.STOP, progress=False)  # warm-up

    def timed(label: str, generate) -> tuple[float, list[str]]:
        start = time.perf_counter()
        texts = generate(loaded, prompts, budget, cot.STOP, progress=False)
        seconds = time.perf_counter() - start
        print(f"{label}: {len(prompts) / seconds:.2f} items/s ({seconds:.1f} s)")
        return seconds, texts

    before, old = timed("(o) 0.5.0, batches of 8 whole prompts", generate_greedy_050)
    now, new = timed("(g) demonstrations once, decoded together", scoring.generate_greedy)
    same = sum(a == b for a, b in zip(old, new, strict=True))
    print(f"speed-up (g)/(o): {before / now:.1f}x; equal completions {same} of {len(prompts)}")
    decided, short = timed(
        "(d) as (g), each stopping once its answer is decided",
        partial(scoring.generate_greedy, decided=cot.answer_decided),
    )
    answers = [[cot.extract_answer(text, True) for text in texts] for texts in (old, new, short)]
    print(
        f"speed-up (d)/(o): {before / decided:.1f}x; equal extracted answers (d)-(g) "
        f"{sum(a == b for a, b in zip(answers[2], answers[1], strict=True))} of {len(prompts)}, "
        f"(d)-(o) {sum(a == b for a, b in zip(answers[2], answers[0], strict=True))}"
    )


if __name__ == "__main__":
    main()
