"""Extraction speed: the packed path against 0.5.0's path and the paper's, on the same items.

    python benchmarks/extract_bench.py [--items 64] [--naive-items 16]

(a) naive: one full forward per (question, choice) in fp32 with `output_hidden_states=True` and
    the full LM head over every position, as the paper's code does;
(p) 0.5.0's path (`benchmarks/previous_path.py`, frozen): left-padded prefixes with a KV cache
    repeated per choice, Min-K% scores in every pass (what its `truthprobe extract` ran), at
    its default batch size 1 and at 8;
(b) truthprobe now: `forward_batch`, questions packed without padding into passes of the
    default token budget (`scoring.pass_tokens`), no Min-K% scores, bf16 where the CPU has it,
    else float32;
(c) the machine's roofline: a plain bf16 and fp32 2048x2048 matmul;
(d) the question-score pass alone (prefixes only, the LM head over every question token),
    which runs only when a min_k task asks: its cost against (b).
Reports items/s, tokens/s, speed-ups, the fraction of the matmul roofline of the dtype (b)
computes in that its necessary FLOPs reach (on a CPU without native bf16, bf16 is emulated and
(b) runs in float32), and peak RSS. Ratios, not absolute times, are what to compare.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from truthprobe.data import load_dataset
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import encode, forward_batch, forward_per_sequence, packs, pass_tokens

sys.path.insert(0, str(Path(__file__).parent))
from previous_path import forward_batch_050  # noqa: E402


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def required_flops(loaded, items) -> float:
    """FLOPs (b) cannot avoid: body matmuls on every real token, the head on every scored one."""
    params = sum(p.numel() for p in loaded.model.get_decoder().parameters())
    embed = loaded.model.get_input_embeddings().weight.numel()
    body_tokens = sum(len(it.prefix) + sum(len(c) for c in it.choices) for it in items)
    head_rows = sum(len(c) for it in items for c in it.choices)
    return 2 * (params - embed) * body_tokens + 2 * embed * head_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64, help="ARC items for (p), (b), (d)")
    parser.add_argument("--naive-items", type=int, default=16, help="of those, items for (a)")
    args = parser.parse_args()

    records = [r for r in load_dataset("arc").records if r.meta.get("grade")][: args.items]
    layers = list(range(19))
    torch.set_num_threads(torch.get_num_threads())

    bf16 = matmul_gflops(torch.bfloat16)
    fp32 = matmul_gflops(torch.float32)
    print(
        f"(c) roofline: bf16 matmul {bf16:.0f} GFLOP/s, fp32 {fp32:.0f} GFLOP/s "
        f"(bf16/fp32 {bf16 / fp32:.1f}x)"
    )

    naive_model = load_model("default", dtype="float32")
    naive_items = [
        encode(naive_model.tokenizer, MULTIPLE_CHOICE, r) for r in records[: args.naive_items]
    ]
    start = time.perf_counter()
    forward_per_sequence(naive_model, naive_items, layers, 5)
    naive_s = time.perf_counter() - start
    naive_tokens = sum(
        len(it.choices) * len(it.prefix) + sum(map(len, it.choices)) for it in naive_items
    )
    naive_rate = len(naive_items) / naive_s
    print(
        f"(a) naive fp32, full head: {naive_rate:.2f} items/s, "
        f"{naive_tokens / naive_s:.0f} tokens/s ({len(naive_items)} items)"
    )
    del naive_model

    fast_model = load_model("default", dtype="auto")
    dtype = fast_model.fingerprint.dtype  # the roofline of what (b) computes in: on a CPU
    roof = bf16 if dtype == "bfloat16" else fp32  # without native bf16, bf16 is emulated
    items = [encode(fast_model.tokenizer, MULTIPLE_CHOICE, r) for r in records]
    items.sort(key=lambda it: -it.n_tokens)
    flops = required_flops(fast_model, items)
    tokens = sum(it.n_tokens for it in items)

    def timed(label: str, run) -> float:
        run(items[:2])  # warm-up
        start = time.perf_counter()
        run(items)
        seconds = time.perf_counter() - start
        print(
            f"{label}: {len(items) / seconds:.2f} items/s, {tokens / seconds:.0f} tokens/s, "
            f"{flops / seconds / 1e9 / roof:.0%} of the {dtype} matmul roofline"
        )
        return seconds

    def previous(size: int):
        def run(chosen):
            for lo in range(0, len(chosen), size):
                forward_batch_050(fast_model, chosen[lo : lo + size], layers, 5, True)

        return run

    def packed(chosen):
        for group in packs(chosen, pass_tokens(fast_model)):
            forward_batch(fast_model, [chosen[i] for i in group], layers, 5)

    old_1 = timed("(p) 0.5.0, batch 1, with Min-K% (its default)", previous(1))
    old_8 = timed("(p) 0.5.0, batch 8, with Min-K%", previous(8))
    new = timed(f"(b) packed, {pass_tokens(fast_model)} tokens per pass", packed)
    print(
        f"speed-up (b)/(p batch 1): {old_1 / new:.1f}x; (b)/(p batch 8): {old_8 / new:.1f}x; "
        f"(b)/(a): {len(items) / new / naive_rate:.1f}x"
    )
    print(f"(b) necessary work {flops / 1e9:.0f} GFLOP at {flops / new / 1e9:.0f} GFLOP/s")

    def scores(chosen):
        for group in packs(chosen, pass_tokens(fast_model)):
            forward_batch(fast_model, [chosen[i] for i in group], [], 5, True, choices=False)

    start = time.perf_counter()
    scores(items)
    scored_s = time.perf_counter() - start
    head_rows = sum(it.n_question_tokens for it in items)
    print(
        f"(d) question-score pass alone ({head_rows} question tokens through the LM head): "
        f"{len(items) / scored_s:.2f} items/s, (d)/(b) time {scored_s / new:.2f}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS (whole benchmark process): {peak:.2f} GiB")


if __name__ == "__main__":
    main()
