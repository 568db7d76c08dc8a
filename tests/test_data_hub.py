"""Hub converters, tested on rows in each hub dataset's own format rebuilt from the real data.

The hub is unreachable here, so each local record is turned back into the row its hub dataset
holds (`allenai/ai2_arc`, `cais/mmlu`, `ChilleD/StrategyQA`, `openai/gsm8k`) and converted; the
result must equal the local record exactly, for every record.
"""

from __future__ import annotations

import json

from truthprobe.data.hub import (
    MMLU_STEM5_SUBJECTS,
    arc_row_to_record,
    gsm8k_row_to_record,
    mmlu_row_to_record,
    strategyqa_row_to_record,
)


def test_arc_rows_and_annotation_join(load, data_dir):
    annotations = json.loads((data_dir / "arc" / "annotations.json").read_text())
    for record in load("arc").records:
        labels = record.meta["labels"]
        row = {
            "id": record.id,
            "question": record.question,
            "choices": {"text": list(record.choices), "label": labels},
            "answerKey": labels[record.answer_index],
        }
        converted = arc_row_to_record(row, record.meta["subset"], record.split, annotations)
        assert converted == record.to_dict()


def test_mmlu_rows(load):
    for record in load("mmlu").records:
        subject, split, index = record.id.split("/")
        row = {
            "question": record.question,
            "subject": subject,
            "choices": list(record.choices),
            "answer": record.answer_index,
        }
        assert mmlu_row_to_record(row, subject, split, int(index)) == record.to_dict()
    assert {r.meta["subject"] for r in load("mmlu").records} == set(MMLU_STEM5_SUBJECTS)


def test_strategyqa_rows(load):
    for record in load("strategyqa").records:
        meta = record.meta
        row = {
            "qid": record.id,
            "term": meta["term"],
            "description": meta["description"],
            "question": record.question,
            "answer": bool(record.answer_index),
            "facts": meta["facts"],
            "decomposition": meta["decomposition"],
        }
        assert strategyqa_row_to_record(row, record.split) == record.to_dict()


def test_strategyqa_row_without_decomposition_and_string_facts():
    row = {"qid": "x", "question": "Is it?", "answer": False, "facts": "One fact."}
    record = strategyqa_row_to_record(row, "train")
    assert record["answer"] == "no" and record["meta"]["facts"] == ["One fact."]
    assert record["meta"]["num_steps"] is None


def test_gsm8k_rows(load):
    for record in load("gsm8k").records:
        _, split, index = record.id.split("/")
        row = {"question": record.question, "answer": record.meta["solution"]}
        assert gsm8k_row_to_record(row, split, int(index)) == record.to_dict()
