"""The `Question` record and its validation.

Every dataset source (local JSONL, Hugging Face hub, a user's own file) ends up as a tuple of
`Question` records in one schema, so nothing downstream knows where the data came from. All
validation happens here, before anything else runs: a malformed record is reported with its
file, line and field, and a dataset is either loaded whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from truthprobe.errors import TruthprobeError

log = logging.getLogger(__name__)

#: Choice labels are letters in multiple-choice prompts (A, B, ...), so a model cannot be asked
#: to score more choices than there are letters. Loaders accept a smaller limit (the activation
#: cache's choice axis, for example).
MAX_CHOICES = 26

REQUIRED_FIELDS: tuple[str, ...] = (
    "id",
    "dataset",
    "split",
    "question",
    "choices",
    "answer_index",
    "answer",
    "meta",
)


class DataError(TruthprobeError, ValueError):
    """A dataset could not be loaded; the message names file, line and field of each problem."""


@dataclass(frozen=True)
class Question:
    """One question with its answer choices, in the schema of `shared/data/README.md`.

    `choices` is None for free-form answers (GSM8k); `answer` is then the final number.
    `meta` holds dataset-specific fields, including the hardness annotations.
    """

    id: str
    dataset: str
    split: str
    question: str
    choices: tuple[str, ...] | None
    answer_index: int | None
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)
    where: str = field(default="", compare=False, hash=False, repr=False)
    """Where the record was read (`file:line`), for error messages; not part of the schema."""

    @property
    def n_choices(self) -> int:
        """Number of answer choices (0 for free-form questions)."""
        return 0 if self.choices is None else len(self.choices)

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict in the shared schema."""
        return {
            "id": self.id,
            "dataset": self.dataset,
            "split": self.split,
            "question": self.question,
            "choices": None if self.choices is None else list(self.choices),
            "answer_index": self.answer_index,
            "answer": self.answer,
            "meta": dict(self.meta),
        }


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else source


def parse_record(
    obj: Any, source: str = "<record>", line: int | None = None, max_choices: int = MAX_CHOICES
) -> Question:
    """Validate one decoded JSON object and build a `Question`.

    Raises:
        DataError: naming `source`, `line` and the offending field.
    """
    where = _where(source, line)
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in obj]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)}")

    def fail(name: str, problem: str) -> DataError:
        record_id = obj.get("id")
        rid = f" (id {record_id!r})" if isinstance(record_id, str) else ""
        return DataError(f"{where}{rid}: field '{name}': {problem}")

    for name in ("id", "dataset", "split", "question", "answer"):
        value = obj[name]
        if not isinstance(value, str):
            raise fail(name, f"expected a string, got {type(value).__name__}")
        if name in ("id", "dataset", "question") and not value.strip():
            raise fail(name, "must not be empty")
        if name in ("id", "dataset", "split") and any(ord(c) < 32 for c in value):
            raise fail(name, "contains a control character (a NUL, a tab, a line break)")
    if not isinstance(obj["meta"], dict):
        raise fail("meta", f"expected an object, got {type(obj['meta']).__name__}")
    for name in REQUIRED_FIELDS:
        problem = _not_text(obj[name])
        if problem:
            raise fail(name, problem)

    choices, answer_index = obj["choices"], obj["answer_index"]
    if choices is None:
        if answer_index is not None:
            raise fail("answer_index", "must be null when 'choices' is null")
        parsed_choices = None
    else:
        if not isinstance(choices, list):
            kind = type(choices).__name__
            raise fail("choices", f"expected a list of strings or null, got {kind}")
        if len(choices) < 2:
            raise fail("choices", f"needs at least 2 choices, got {len(choices)}")
        if len(choices) > max_choices:
            raise fail(
                "choices",
                f"{len(choices)} choices, more than the {max_choices} that can be scored",
            )
        for i, choice in enumerate(choices):
            if not isinstance(choice, str):
                raise fail("choices", f"choice {i} is {type(choice).__name__}, not a string")
            if not choice.strip():
                raise fail("choices", f"choice {i} is empty")
        if isinstance(answer_index, bool) or not isinstance(answer_index, int):
            raise fail("answer_index", f"expected an integer, got {type(answer_index).__name__}")
        if not 0 <= answer_index < len(choices):
            raise fail("answer_index", f"{answer_index} is out of range for {len(choices)} choices")
        gold = choices[answer_index]
        if obj["answer"] != gold:
            raise fail(
                "answer",
                f"{obj['answer']!r} is not the choice at answer_index {answer_index} ({gold!r})",
            )
        parsed_choices = tuple(choices)

    return Question(
        id=obj["id"],
        dataset=obj["dataset"],
        split=obj["split"],
        question=obj["question"],
        choices=parsed_choices,
        answer_index=answer_index,
        answer=obj["answer"],
        meta=obj["meta"],
        where=where,
    )


def _not_text(value: Any) -> str | None:
    """Why `value` (a string, or a list / object of them) cannot be stored as UTF-8, or None.

    JSON can spell an unpaired UTF-16 surrogate (`"\\ud800"`), which no UTF-8 file can hold.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            bad = value[err.start]
            return f"contains {ascii(bad)}, an unpaired surrogate that is not valid Unicode text"
        return None
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    else:
        return None
    return next((p for p in map(_not_text, items) if p), None)


def repeated_choices(records: Iterable[Question]) -> list[str]:
    """Records that list a (wrong) choice twice: harmless to scoring, worth knowing."""
    found = []
    for record in records:
        if record.choices and len(set(record.choices)) < len(record.choices):
            first = {}
            for i, choice in enumerate(record.choices):
                if choice in first:
                    found.append(f"{record.where or record.id}: choices {first[choice]} and {i}")
                    break
                first[choice] = i
    return found


def read_jsonl(path: str | Path, max_choices: int = MAX_CHOICES) -> list[Question]:
    """Read and validate every line of a JSONL file in the shared schema.

    All problems in the file are collected (up to 20) and raised together, so a user fixes a file
    in one pass; nothing is returned unless every record is valid and every id unique.
    """
    located = read_jsonl_located(path, max_choices)
    records = [record for record, _ in located]
    check_unique_ids(records, [where for _, where in located])
    return records


def read_jsonl_located(
    path: str | Path, max_choices: int = MAX_CHOICES
) -> list[tuple[Question, str]]:
    """Like `read_jsonl`, but pairs each record with its `file:line` and skips the id check.

    Loaders that join several files use the locations to report duplicates across files.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records: list[tuple[Question, str]] = []
    problems: list[str] = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark: an ordinary file, accepted
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(
                    f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}); save the file as UTF-8"
                )
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                problems.append(f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno})")
                continue
            except RecursionError:
                problems.append(f"{path}:{line_no}: invalid JSON (nested deeper than can be read)")
                continue
            except ValueError as err:  # a number of more digits than Python converts
                problems.append(f"{path}:{line_no}: invalid JSON ({str(err).split(';')[0]})")
                continue
            try:
                record = parse_record(obj, str(path), line_no, max_choices)
                records.append((record, f"{path}:{line_no}"))
            except DataError as err:
                problems.append(str(err))
    if not records and not problems:
        problems.append(f"{path}: file holds no records")
    _raise_if(problems)
    return records


def gold_repeated(record: Question) -> str | None:
    """Why `record`'s answer is ambiguous (its correct choice's text appears again among the
    choices, a known flaw of some MMLU records), or None."""
    if record.choices is None or record.answer_index is None:
        return None
    gold = record.choices[record.answer_index]
    again = [i for i, c in enumerate(record.choices) if c == gold and i != record.answer_index]
    if not again:
        return None
    return (
        f"{record.where or 'record'} (id {record.id!r}): field 'choices': the correct choice "
        f"{gold!r} (index {record.answer_index}) appears again at index {again[0]}, so the "
        "answer is ambiguous"
    )


def leave_out_ambiguous(
    name: str, records: Sequence[Question], strict: bool = False
) -> tuple[tuple[Question, ...], tuple[str, ...]]:
    """`records` without those whose correct choice appears twice, and the ids left out.

    A real dataset (MMLU has such records) should not be refused for one flawed record: each is
    left out with one warning naming them and the count. lm-evaluation-harness instead scores
    such a record and counts a tie wrong; leaving it out keeps accuracy about answerable items.

    Raises:
        DataError: `strict` and any record is ambiguous (naming the first and the count).
    """
    flawed = [(r, why) for r in records if (why := gold_repeated(r))]
    if not flawed:
        return tuple(records), ()
    if strict:
        more = f" ({len(flawed)} such records)" if len(flawed) > 1 else ""
        raise DataError(f"{flawed[0][1]}{more}; without --strict such records are left out")
    log.warning(
        "%s: left out %d record(s) whose correct choice appears twice among the choices (the "
        "answer is ambiguous): %s%s; pass --strict to refuse the dataset instead",
        name, len(flawed), ", ".join(f"{r.where or r.id} (id {r.id!r})" for r, _ in flawed[:3]),
        " ..." if len(flawed) > 3 else "",
    )  # fmt: skip
    left_out = {id(r) for r, _ in flawed}
    return tuple(r for r in records if id(r) not in left_out), tuple(r.id for r, _ in flawed)


def check_unique_ids(records: Iterable[Question], sources: Sequence[str] | None = None) -> None:
    """Raise `DataError` if two records share an id (ids key the cache and results tables)."""
    seen: dict[str, int] = {}
    problems = []
    for i, record in enumerate(records):
        if record.id in seen:
            here = sources[i] if sources else f"record {i}"
            first = sources[seen[record.id]] if sources else f"record {seen[record.id]}"
            problems.append(f"{here}: field 'id': duplicate id {record.id!r} (first at {first})")
        else:
            seen[record.id] = i
    _raise_if(problems)


def content_hash(records: Iterable[Question]) -> str:
    """A stable SHA-256 of the records' content, recorded with every cache and result."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _raise_if(problems: list[str], limit: int = 20) -> None:
    if not problems:
        return
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more problem(s)" if len(problems) > limit else ""
    # One line per problem; the CLI prints the first after "error: ", the rest indented.
    raise DataError("\n  ".join(shown) + more)
