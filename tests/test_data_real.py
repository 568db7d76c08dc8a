"""Every real dataset loads, with the record counts of shared/data/README.md."""

from __future__ import annotations

from collections import Counter

import pytest

from truthprobe.data import load_dataset
from truthprobe.hardness import group_by_stratum, stratify


def _count(records, key):
    return Counter(key(r) for r in records)


def test_arc_counts_per_subset_and_split(load):
    arc = load("arc")
    assert len(arc) == 7787
    counts = _count(arc.records, lambda r: (r.meta["subset"], r.split))
    assert counts == {
        ("easy", "train"): 2251,
        ("easy", "validation"): 570,
        ("easy", "test"): 2376,
        ("challenge", "train"): 1119,
        ("challenge", "validation"): 299,
        ("challenge", "test"): 1172,
    }
    assert _count(arc.records, lambda r: r.n_choices) == {4: 7750, 3: 22, 5: 15}


def test_arc_annotations(load):
    records = load("arc").records
    annotated = [r for r in records if r.meta["bloom"] is not None]
    assert len(annotated) == 5120
    grades = _count([r for r in records if r.meta["grade"] is not None], lambda r: r.meta["grade"])
    assert grades == {3: 194, 4: 277, 5: 963, 6: 263, 7: 792, 8: 2032}
    assert sum(1 for r in annotated if r.meta["grade"] is None) == 599
    assert _count(annotated, lambda r: r.meta["bloom"]) == {
        "Remembering": 1180,
        "Understanding": 1417,
        "Applying": 1453,
        "Analyzing": 836,
        "Evaluating": 234,
    }
    assert _count(annotated, lambda r: r.meta["difficulty"]) == {
        "Low": 1118,
        "Medium": 3324,
        "High": 678,
    }
    assert _count(annotated, lambda r: r.meta["depth_of_knowledge"]) == {
        "I": 2593,
        "II": 2289,
        "III": 238,
    }


def test_mmlu_counts_per_level_and_subject(load):
    mmlu = load("mmlu")
    test = [r for r in mmlu.records if r.split == "test"]
    assert _count(test, lambda r: r.meta["level"]) == {"high_school": 1034, "college": 546}
    assert _count(test, lambda r: r.meta["subject"]) == {
        "high_school_biology": 310,
        "high_school_chemistry": 203,
        "high_school_computer_science": 100,
        "high_school_mathematics": 270,
        "high_school_physics": 151,
        "college_biology": 144,
        "college_chemistry": 100,
        "college_computer_science": 100,
        "college_mathematics": 100,
        "college_physics": 102,
    }
    dev = [r for r in mmlu.records if r.split == "dev"]
    assert _count(dev, lambda r: r.meta["level"]) == {"high_school": 25, "college": 25}


def test_strategyqa_counts(load):
    records = load("strategyqa").records
    assert _count(records, lambda r: r.split) == {"train": 1656, "test": 229}
    yes_rate = sum(r.answer_index for r in records) / len(records)
    assert round(100 * yes_rate, 1) == 40.8
    assert _count(records, lambda r: len(r.meta["decomposition"])) == {
        1: 16,
        2: 542,
        3: 988,
        4: 271,
        5: 68,
    }


def test_gsm8k_counts_and_answers(load):
    records = load("gsm8k").records
    assert _count(records, lambda r: r.split) == {"train": 7473, "test": 1319}
    assert all(r.choices is None and r.answer_index is None for r in records)
    assert all(r.meta["solution"].rstrip().endswith(r.answer) for r in records)


@pytest.mark.parametrize(
    ("name", "measure", "split", "expected"),
    [
        ("arc", "grade", None, (1434, 1055, 2032)),
        ("arc", "bloom", None, (1180 + 1417, 1453, 836 + 234)),
        ("arc", "difficulty", None, (1118, 3324, 678)),
        ("arc", "depth_of_knowledge", None, (2593, 2289, 238)),
        ("mmlu", "level", "test", (1034, 0, 546)),
        ("strategyqa", "steps", None, (558, 988, 339)),
        ("gsm8k", "steps", "train", (5769, 1374, 330)),
        ("gsm8k", "steps", "test", (994, 262, 63)),
    ],
)
def test_stratum_counts_match_readme(load, name, measure, split, expected):
    records = [r for r in load(name).records if split is None or r.split == split]
    groups = group_by_stratum(records, stratify(records, measure))
    assert (len(groups["easy"]), len(groups["medium"]), len(groups["hard"])) == expected


def test_gsm8k_steps_agree_with_recorded_line_counts(load):
    """Our step count (capped at 10) equals the file's uncapped `num_steps`, capped."""
    from truthprobe.hardness import reasoning_steps

    for r in load("gsm8k").records:
        assert reasoning_steps(r) == min(10, r.meta["num_steps"])


def test_content_hash_is_stable_and_sensitive(load, data_dir):
    import dataclasses

    from truthprobe.data import content_hash

    arc = load("arc")
    fresh = load_dataset("arc", source="local", data_dir=data_dir)  # parsed again from disk
    assert fresh.records[0] is not arc.records[0]
    assert fresh.content_hash == arc.content_hash
    one = list(arc.records)
    one[5] = dataclasses.replace(one[5], meta={**one[5].meta, "grade": 99})
    assert content_hash(one) != arc.content_hash  # one field of one record
    assert content_hash(arc.records[::-1]) != arc.content_hash  # order (rows follow it)
    assert arc.select(limit=100).content_hash != arc.content_hash
