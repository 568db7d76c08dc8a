"""Hugging Face `datasets` interop: `Dataset.from_hf` validates rows like JSONL lines, and
`to_hf` / `from_hf` round-trips the real datasets to the same content hash."""

from __future__ import annotations

import datasets
import pytest

from truthprobe.data import DataError, Dataset, load_dataset


@pytest.mark.parametrize("name", ["arc", "mmlu", "strategyqa", "gsm8k"])
def test_round_trip_keeps_every_record(name, load):
    original = load(name)
    table = original.to_hf()
    assert isinstance(table, datasets.Dataset) and table.num_rows == len(original)
    free_form = name == "gsm8k"
    again = Dataset.from_hf(
        table, name=name, id="id", split_column="split", meta="meta",
        choices=None if free_form else "choices",
        answer="answer" if free_form else "answer_index",
    )  # fmt: skip
    assert again.records == original.records
    assert again.content_hash == original.content_hash


def test_hub_style_rows_with_labels_and_a_dataset_dict(load, tmp_path):
    """ARC as the hub holds it (labelled choices, `answerKey`), one split per key; the result
    keeps ARC's measures, and written as JSONL it loads as the file it is."""
    arc = [r for r in load("arc").records if r.meta.get("grade")][:30]
    rows = {
        split: datasets.Dataset.from_list(
            [
                {
                    "id": r.id,
                    "question": r.question,
                    "choices": {"text": list(r.choices), "label": r.meta["labels"]},
                    "answerKey": r.meta["labels"][r.answer_index],
                    "grade": r.meta["grade"],
                }
                for r in arc
                if r.split == split
            ]
        )
        for split in sorted({r.split for r in arc})
    }
    made = Dataset.from_hf(
        datasets.DatasetDict(rows), name="arc", answer="answerKey", id="id", meta=["grade"]
    )
    by_id = {r.id: r for r in arc}
    assert len(made) == len(arc)
    for record in made.records:
        assert record.answer_index == by_id[record.id].answer_index
        assert record.answer == by_id[record.id].answer
        assert record.split == by_id[record.id].split
        assert record.meta == {"grade": by_id[record.id].meta["grade"]}
    path = made.to_jsonl(tmp_path / "mine.jsonl")
    assert load_dataset(path).records == made.records


def _rows(**change):
    base = {"q": "What is 2 + 2?", "opts": ["3", "4"], "gold": 1, "level": "easy"}
    return [base, {**base, "q": "What is 3 + 3?", "opts": ["6", "7"], "gold": 0, **change}]


@pytest.mark.parametrize(
    "change, columns, message",
    [
        ({}, {"meta": ["levle"]}, "mine:test:0: no column 'levle'; the table has q, opts"),
        ({"gold": "eight"}, {}, "mine:test:1: column 'gold': 'eight' is neither a choice index"),
        ({"gold": 5}, {}, "mine:test:1 (id 'mine/test/1'): field 'answer_index': 5 is out"),
        ({"q": "  "}, {}, "mine:test:1 (id 'mine/test/1'): field 'question': must not be empty"),
        ({"opts": ["6"]}, {}, "field 'choices': needs at least 2 choices"),
        ({"level": None}, {"meta": "level"}, "column 'level': expected a mapping"),
    ],
)
def test_bad_rows_name_table_split_row_and_field(change, columns, message):
    with pytest.raises(DataError) as err:
        Dataset.from_hf(
            _rows(**change), name="mine", question="q", choices="opts", answer="gold",
            **{"meta": ["level"], **columns},
        )  # fmt: skip
    assert message in str(err.value)


def test_duplicate_ids_are_refused():
    rows = [{**r, "key": "same"} for r in _rows()]
    with pytest.raises(DataError, match="mine:test:1: field 'id': duplicate id 'same'"):
        Dataset.from_hf(rows, name="mine", question="q", choices="opts", answer="gold", id="key")
