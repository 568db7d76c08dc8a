"""Hub converters, tested on rows in each hub dataset's own format rebuilt from the real data.

The hub is unreachable here, so each local record is turned back into the row its hub dataset
holds (`allenai/ai2_arc`, `cais/mmlu`, `ChilleD/StrategyQA`, `openai/gsm8k`) and converted; the
result must equal the local record exactly, for every record.
"""

from __future__ import annotations

import json

from truthprobe.data import hub
from truthprobe.data.hub import (
    ARC_HUB_ID,
    GSM8K_HUB_ID,
    MMLU_HUB_ID,
    MMLU_STEM5_SUBJECTS,
    STRATEGYQA_HUB_ID,
    arc_row_to_record,
    gsm8k_row_to_record,
    mmlu_row_to_record,
    strategyqa_row_to_record,
)


def arc_row(record) -> dict:
    labels = record.meta["labels"]
    return {
        "id": record.id,
        "question": record.question,
        "choices": {"text": list(record.choices), "label": labels},
        "answerKey": labels[record.answer_index],
    }


def mmlu_row(record) -> dict:
    return {
        "question": record.question,
        "subject": record.meta["subject"],
        "choices": list(record.choices),
        "answer": record.answer_index,
    }


def strategyqa_row(record) -> dict:
    meta = record.meta
    return {
        "qid": record.id,
        "term": meta["term"],
        "description": meta["description"],
        "question": record.question,
        "answer": bool(record.answer_index),
        "facts": meta["facts"],
        "decomposition": meta["decomposition"],
    }


def gsm8k_row(record) -> dict:
    return {"question": record.question, "answer": record.meta["solution"]}


def test_arc_rows_and_annotation_join(load, data_dir):
    annotations = json.loads((data_dir / "arc" / "annotations.json").read_text())
    for record in load("arc").records:
        row = arc_row(record)
        converted = arc_row_to_record(row, record.meta["subset"], record.split, annotations)
        assert converted == record.to_dict()


def test_mmlu_rows(load):
    for record in load("mmlu").records:
        subject, split, index = record.id.split("/")
        assert mmlu_row_to_record(mmlu_row(record), subject, split, int(index)) == record.to_dict()
    assert {r.meta["subject"] for r in load("mmlu").records} == set(MMLU_STEM5_SUBJECTS)


def test_strategyqa_rows(load):
    for record in load("strategyqa").records:
        assert strategyqa_row_to_record(strategyqa_row(record), record.split) == record.to_dict()


def test_strategyqa_row_without_decomposition_and_string_facts():
    row = {"qid": "x", "question": "Is it?", "answer": False, "facts": "One fact."}
    record = strategyqa_row_to_record(row, "train")
    assert record["answer"] == "no" and record["meta"]["facts"] == ["One fact."]
    assert record["meta"]["num_steps"] is None


def test_gsm8k_rows(load):
    for record in load("gsm8k").records:
        _, split, index = record.id.split("/")
        assert gsm8k_row_to_record(gsm8k_row(record), split, int(index)) == record.to_dict()


def hub_from_local(load):
    """A stand-in for `datasets.load_dataset(hub_id, config, split=...)` serving each hub
    dataset's rows rebuilt from the local records, in the hub's order."""
    rows: dict[tuple, list] = {}
    for record in load("arc").records:
        config = {"easy": "ARC-Easy", "challenge": "ARC-Challenge"}[record.meta["subset"]]
        rows.setdefault((ARC_HUB_ID, config, record.split), []).append(arc_row(record))
    for record in load("mmlu").records:
        key = (MMLU_HUB_ID, record.meta["subject"], record.split)
        rows.setdefault(key, []).append(mmlu_row(record))
    for record in load("strategyqa").records:
        rows.setdefault((STRATEGYQA_HUB_ID, None, record.split), []).append(strategyqa_row(record))
    for record in load("gsm8k").records:
        rows.setdefault((GSM8K_HUB_ID, "main", record.split), []).append(gsm8k_row(record))
    return lambda hub_id, config, split: rows[(hub_id, config, split)]


def test_fetch_builds_the_local_layout_from_the_hub(load, data_dir, tmp_path, monkeypatch, capsys):
    """`truthprobe data fetch --to DIR` writes every file of the layout; loading from DIR gives
    the records of the shared copy exactly (same content hash, so the same caches serve both),
    and DIR then works by --data-dir alone."""
    from truthprobe.cli import main
    from truthprobe.data import DATASET_NAMES, load_dataset
    from truthprobe.data.local import LOCAL_FILES

    monkeypatch.setattr(hub, "_hub_rows", hub_from_local(load))
    to = tmp_path / "data"
    annotations = data_dir / "arc" / "annotations.json"
    assert main(["data", "fetch", "--to", str(to), "--annotations", str(annotations)]) == 0
    out = capsys.readouterr().out
    assert "arc: 7787 records" in out and f"--data-dir {to}" in out
    for name in DATASET_NAMES:
        fetched = load_dataset(name, source="local", data_dir=to)
        assert fetched.content_hash == load(name).content_hash, name
        for relative in LOCAL_FILES[name]:
            mine, theirs = (
                [json.loads(line) for line in (root / relative).read_text().split("\n") if line]
                for root in (to, data_dir)
            )  # "\n" alone: the shared files hold raw U+2028 inside strings
            assert mine == theirs, relative
    assert json.loads((to / "arc" / "annotations.json").read_text()) == json.loads(
        annotations.read_text()
    )
    mark = json.loads((to / "FETCHED.json").read_text())
    assert mark["gsm8k"]["records"] == 8792 and not list(to.rglob("*.partial"))
    monkeypatch.delenv("TRUTHPROBE_DATA_DIR")
    assert main(["data", "summary", "--dataset", "mmlu", "--measure", "level",
                 "--data-dir", str(to)]) == 0  # fmt: skip
    assert "mmlu: 1630 records from local:" in capsys.readouterr().out
