"""Extraction speed: truthprobe's KV-cached path vs the paper-style naive path, same items.

    python benchmarks/extract_bench.py [--items 32] [--naive-items 16]

(a) naive: one full forward per (question, choice) in fp32 with `output_hidden_states=True` and
    the full LM head over every position, as the paper's code does;
(b) truthprobe: `forward_batch` (prefix once per question, head only at continuation tokens,
    length-sorted batches, bf16 where the CPU has it, else float32);
(c) the machine's roofline: a plain bf16 and fp32 2048x2048 matmul;
(d) (b) plus the Min-K% scores of each question (the LM head over every question token), which
    is what `truthprobe extract` runs: its cost against (b).
Reports items/s, tokens/s, the speed-up (b)/(a), the fraction of the matmul roofline of the
dtype (b) computes in that its necessary FLOPs reach (on a CPU without native bf16, bf16 is
emulated and (b) runs in float32), (d)/(b), and peak RSS. Ratios, not absolute times, are what
to compare.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from truthprobe.data import load_dataset
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import encode, forward_batch, forward_per_sequence


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
    parser.add_argument("--items", type=int, default=32, help="ARC items for (b)")
    parser.add_argument("--naive-items", type=int, default=16, help="of those, items for (a)")
    parser.add_argument("--batch-size", type=int, default=8)
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
    items = [encode(fast_model.tokenizer, MULTIPLE_CHOICE, r) for r in records]
    items.sort(key=lambda it: -it.n_tokens)
    forward_batch(fast_model, items[: args.batch_size], layers, 5)  # warm-up
    start = time.perf_counter()
    for lo in range(0, len(items), args.batch_size):
        forward_batch(fast_model, items[lo : lo + args.batch_size], layers, 5)
    fast_s = time.perf_counter() - start
    fast_rate = len(items) / fast_s
    fast_tokens = sum(it.n_tokens for it in items)
    flops = required_flops(fast_model, items)
    print(
        f"(b) truthprobe {fast_model.fingerprint.dtype}: {fast_rate:.2f} items/s, "
        f"{fast_tokens / fast_s:.0f} tokens/s ({len(items)} items)"
    )
    print(f"speed-up (b)/(a): {fast_rate / naive_rate:.1f}x")
    dtype = fast_model.fingerprint.dtype  # the roofline of what (b) computes in: on a CPU
    roof = bf16 if dtype == "bfloat16" else fp32  # without native bf16, bf16 is emulated
    print(
        f"(b) necessary work {flops / 1e9:.0f} GFLOP at {flops / fast_s / 1e9:.0f} GFLOP/s = "
        f"{flops / fast_s / 1e9 / roof:.0%} of the {dtype} matmul roofline"
    )
    start = time.perf_counter()
    for lo in range(0, len(items), args.batch_size):
        forward_batch(fast_model, items[lo : lo + args.batch_size], layers, 5, question_scores=True)
    scored_s = time.perf_counter() - start
    head_rows = sum(it.n_question_tokens for it in items)
    print(
        f"(d) with Min-K% scores ({head_rows} question tokens through the LM head): "
        f"{len(items) / scored_s:.2f} items/s, (d)/(b) time {scored_s / fast_s:.2f}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS (whole benchmark process): {peak:.2f} GiB")


if __name__ == "__main__":
    main()
