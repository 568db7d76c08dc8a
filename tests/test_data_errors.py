"""Every class of bad input is reported with file, line and field, and nothing half-loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from truthprobe.data import DATA_DIR_ENV, DataError, load_dataset

GOOD = {
    "id": "q1",
    "dataset": "custom",
    "split": "test",
    "question": "2 + 2?",
    "choices": ["3", "4"],
    "answer_index": 1,
    "answer": "4",
    "meta": {},
}


def write(tmp_path: Path, *lines: str | dict) -> Path:
    path = tmp_path / "user.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def bad(**changes):
    record = {**GOOD, "id": "q2", **changes}
    return {k: v for k, v in record.items() if v is not ...}


def test_good_file_loads(tmp_path):
    dataset = load_dataset(write(tmp_path, GOOD, bad()))
    assert [r.id for r in dataset.records] == ["q1", "q2"]


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ('{"id": "q2", "question": ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (bad(answer=...), "missing field(s) 'answer'"),
        (bad(choices=[]), "field 'choices': needs at least 2 choices"),
        (bad(choices=["3", ""]), "field 'choices': choice 1 is empty"),
        (bad(choices=["3", 4]), "field 'choices': choice 1 is int, not a string"),
        (bad(choices="3, 4"), "field 'choices': expected a list"),
        (bad(answer_index=2), "field 'answer_index': 2 is out of range for 2 choices"),
        (bad(answer_index=-1), "field 'answer_index': -1 is out of range"),
        (bad(answer_index="1"), "field 'answer_index': expected an integer"),
        (bad(choices=None), "field 'answer_index': must be null"),
        (bad(question=""), "field 'question': must not be empty"),
        (bad(meta=[]), "field 'meta': expected an object"),
        (
            bad(choices=[str(i) for i in range(30)], answer_index=0),
            "field 'choices': 30 choices, more than the 26 that can be scored",
        ),
        (bad(id="q1"), "field 'id': duplicate id 'q1' (first at"),
    ],
)
def test_bad_record_names_file_line_and_field(tmp_path, record, needle):
    path = write(tmp_path, GOOD, record)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    message = str(err.value)
    assert f"{path}:2" in message
    assert needle in message


def test_choice_limit_follows_the_caller(tmp_path):
    path = write(tmp_path, bad(choices=["a", "b", "c", "d", "e"], answer_index=0))
    with pytest.raises(DataError, match=r"5 choices, more than the 4 that can be scored"):
        load_dataset(path, max_choices=4)


def test_all_problems_reported_together(tmp_path):
    path = write(tmp_path, "nope", bad(answer_index=9), GOOD)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert f"{path}:1" in str(err.value) and f"{path}:2" in str(err.value)


def test_duplicate_ids_across_files_name_both_places(tmp_path):
    for sub in ("arc", "mmlu", "strategyqa", "gsm8k"):
        (tmp_path / sub).mkdir()
    record = {**GOOD, "dataset": "mmlu"}
    (tmp_path / "mmlu" / "stem5-dev.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "mmlu" / "stem5-test.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset("mmlu", source="local", data_dir=tmp_path)
    assert "stem5-test.jsonl:1" in str(err.value) and "stem5-dev.jsonl:1" in str(err.value)


def test_missing_data_dir_says_how_to_set_it(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing fetched there
    with pytest.raises(DataError) as err:
        load_dataset("arc", source="local")
    assert f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR" in str(err.value)


def test_a_fetched_folder_is_found_without_settings(monkeypatch, tmp_path, data_dir):
    """What `truthprobe data fetch` wrote to its default folder is the data directory when
    neither --data-dir nor TRUTHPROBE_DATA_DIR names one, once its FETCHED.json mark is there."""
    from truthprobe.data.local import FETCHED_MARK, default_data_dir

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    fetched = default_data_dir()
    fetched.mkdir(parents=True)
    (fetched / "mmlu").symlink_to(data_dir / "mmlu")
    with pytest.raises(DataError, match="no local data directory"):
        load_dataset("mmlu", source="local")  # no mark: an interrupted fetch is not used
    (fetched / FETCHED_MARK).write_text("{}")
    loaded = load_dataset("mmlu")
    assert loaded.source == f"local:{fetched}" and len(loaded) == 1630


def test_nonexistent_data_dir_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere \(from TRUTHPROBE_DATA_DIR\) does not exist"):
        load_dataset("arc", source="local")


def test_missing_dataset_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"arc/easy-train.jsonl: missing file"):
        load_dataset("arc", source="local", data_dir=tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown dataset 'arcc'"):
        load_dataset("arcc")


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="offline, use local data: pass --data-dir DIR or set"):
        load_dataset("gsm8k", source="hub")
