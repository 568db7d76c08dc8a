"""A row's values do not depend on which questions share its packed pass (the real model).

`scoring.forward_batch` packs questions without padding and runs attention per question, so
the matrix products are the only place neighbours meet; where their rows do not depend on how
many rows they have (MKL on x86 at 16 rows and more; the LM head's products are padded to
`HEAD_ROWS`), a row is bit-identical alone and in any pass. The tolerance below is what the
tests accept on machines whose kernels differ; the extraction records the difference it
measured in each cache (`pass_check`).
"""

from __future__ import annotations

import numpy as np
import pytest

from truthprobe.data import load_dataset
from truthprobe.models import load_model
from truthprobe.prompts import MULTIPLE_CHOICE
from truthprobe.scoring import encode, forward_batch

pytestmark = pytest.mark.real_model
#: Largest accepted difference between a row alone and in a pass, relative to the row's scale.
TOLERANCE = {"float32": 1e-5, "bfloat16": 2**-7}


def _differences(loaded, items, alone_count: int) -> list[float]:
    """Relative difference of each of the first `alone_count` items, alone against inside
    passes of 8 and 32 with different neighbours and places."""
    layers = list(range(loaded.n_layers + 1))
    alone = [forward_batch(loaded, [it], layers, 5) for it in items[:alone_count]]
    order = list(range(len(items)))
    passes = [order[:8], order[2:10][::-1], order[:32], order[::-1][: len(items)]]
    worst = []
    for members in passes:
        out = forward_batch(loaded, [items[i] for i in members], layers, 5)
        for place, i in enumerate(members):
            if i >= alone_count:
                continue
            ref = alone[i]
            for got, want in (
                (out.answer_end[:, place], ref.answer_end[:, 0]),
                (out.question_end[:, place], ref.question_end[:, 0]),
                (out.logprob[place], ref.logprob[0]),
            ):
                worst.append(float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
    return worst


@pytest.fixture(scope="module")
def arc_items(gemma_fp32, data_dir):
    records = load_dataset("arc").records[:32]
    return [encode(gemma_fp32.tokenizer, MULTIPLE_CHOICE, r) for r in records]


def test_a_row_alone_equals_the_row_in_any_pass_float32(gemma_fp32, arc_items):
    worst = _differences(gemma_fp32, arc_items, 10)
    assert max(worst) <= TOLERANCE["float32"], max(worst)


def test_a_row_alone_equals_the_row_in_any_pass_bfloat16(arc_items, data_dir):
    """In bfloat16 (emulated, hence slow, on CPUs without it), where 0.5's padded batches moved
    a row by up to a few percent."""
    half = load_model(dtype="bfloat16")
    items = arc_items[:12]
    worst = _differences(half, items, 3)
    assert max(worst) <= TOLERANCE["bfloat16"], max(worst)
