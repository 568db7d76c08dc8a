"""Hugging Face `datasets` interop: any table of questions in, the shared schema out, and back.

`records_from_hf` maps a user's columns onto the schema and validates every row exactly as a
JSONL line is validated (`parse_record`), so a bad row is an error naming the table, split, row
and field. `records_to_hf` writes records as a `datasets.Dataset` with the schema's columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from truthprobe.data.records import (
    MAX_CHOICES,
    DataError,
    Question,
    check_unique_ids,
    parse_record,
)


def _splits(table: Any, split: str) -> list[tuple[str, Iterable[Mapping[str, Any]]]]:
    """(split name, rows) pairs: a `DatasetDict`'s own splits, else one split named `split`."""
    if isinstance(table, Mapping):
        return [(str(name), rows) for name, rows in table.items()]
    return [(split, table)]


def _answer_index(answer: Any, texts: list, labels: list | None, fail) -> int:
    """An answer given as an index, a choice's text, or (labelled choices) a label."""
    if isinstance(answer, bool):
        raise fail(f"{answer!r} is neither a choice index nor a choice")
    if isinstance(answer, int):
        return answer  # range checked by parse_record
    if isinstance(answer, str):
        if labels is not None and answer in labels:
            return labels.index(answer)
        if answer in texts:
            return texts.index(answer)
        if answer.strip().lstrip("-").isdigit():
            return int(answer)
    raise fail(f"{answer!r} is neither a choice index nor one of the choices {texts}")


def records_from_hf(
    table: Any,
    *,
    name: str,
    question: str = "question",
    choices: str | None = "choices",
    answer: str = "answer",
    meta: Sequence[str] | str = (),
    id: str | None = None,
    split: str = "test",
    split_column: str | None = None,
    max_choices: int = MAX_CHOICES,
) -> tuple[Question, ...]:
    """Validated `Question`s from a `datasets.Dataset`, `DatasetDict` or any rows of mappings.

    Args:
        name: the records' `dataset` (a built-in name such as `arc` keeps its measures and
            templates, if the columns carry its meta fields).
        question, choices, answer: the columns of the question text, the answer choices (a
            list of strings, or `{"text": [...], "label": [...]}` as on ARC; None: free-form)
            and the answer (a choice index, a choice's text, or a choice's label).
        meta: columns copied into `meta` under their names, or one column holding a mapping.
        id: the column of unique ids (default: `<name>/<split>/<row>`).
        split: the split of every row of a `Dataset` (a `DatasetDict` names its own).
        split_column: a column holding each row's split instead.

    Raises:
        DataError: naming the table's name, split, row and field of the first bad row.
    """
    records: list[Question] = []
    wheres: list[str] = []
    for split_name, rows in _splits(table, split):
        for i, row in enumerate(rows):
            where = f"{name}:{split_name}:{i}"

            def fail(problem: str, column: str = answer, where: str = where) -> DataError:
                return DataError(f"{where}: column {column!r}: {problem}")

            wanted = [question, answer, *([choices] if choices else []), *([id] if id else [])]
            wanted += [meta] if isinstance(meta, str) else list(meta)
            wanted += [split_column] if split_column else []
            missing = [c for c in wanted if c not in row]
            if missing:
                raise DataError(
                    f"{where}: no column {missing[0]!r}; the table has {', '.join(row)}"
                )
            texts: Any = None
            index: Any = None
            gold = row[answer]
            if choices:
                texts, labels = row[choices], None
                if isinstance(texts, Mapping):
                    labels = list(texts.get("label") or [])
                    texts = texts.get("text")
                texts = list(texts) if isinstance(texts, list | tuple) else texts
                if isinstance(texts, list):
                    index = _answer_index(gold, texts, labels, fail)
                    in_range = isinstance(index, int) and 0 <= index < len(texts)
                    gold = texts[index] if in_range else str(gold)
            if isinstance(meta, str):
                fields = row[meta]
                if not isinstance(fields, Mapping):
                    raise fail(f"expected a mapping, got {type(fields).__name__}", meta)
                extra = dict(fields)
            else:
                extra = {column: row[column] for column in meta}
            obj = {
                "id": str(row[id]) if id else f"{name}/{split_name}/{i}",
                "dataset": name,
                "split": str(row[split_column]) if split_column else split_name,
                "question": row[question],
                "choices": texts,
                "answer_index": index,
                "answer": gold if isinstance(gold, str) else str(gold),
                "meta": extra,
            }
            records.append(parse_record(obj, where, None, max_choices))
            wheres.append(where)
    check_unique_ids(records, wheres)
    return tuple(records)


def records_to_hf(records: Sequence[Question]):
    """A `datasets.Dataset` with the schema's columns (`meta` as one mapping column)."""
    import datasets

    return datasets.Dataset.from_list([r.to_dict() for r in records])
