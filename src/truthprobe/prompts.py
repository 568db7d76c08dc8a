"""Prompt templates: a shared question prefix plus one continuation per answer choice.

As in Hase et al., a choice is scored (and its hidden state read) as a continuation of the
question prompt, so the prefix is the same for every choice and is computed once. Templates are
plain data with a stable hash that caches record.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict, dataclass

from truthprobe.data import Question
from truthprobe.errors import TruthprobeError


@dataclass(frozen=True)
class PromptTemplate:
    """A zero-shot multiple-choice prompt.

    The prefix is `question_format` + (one `choice_format` line per choice if `list_choices`)
    + `answer_format`; each choice's continuation is `continuation_format`.
    """

    name: str
    question_format: str = "Question: {question}"
    list_choices: bool = True
    choice_format: str = "\n{label}) {choice}"
    answer_format: str = "\nAnswer:"
    continuation_format: str = " {choice}"

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the template's fields: changes when the text does."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def prefix(self, record: Question) -> str:
        """The shared question prompt, ending where every choice continues."""
        text = self.question_format.format(question=record.question)
        if self.list_choices and record.choices:
            for label, choice in zip(string.ascii_uppercase, record.choices, strict=False):
                text += self.choice_format.format(label=label, choice=choice)
        return text + self.answer_format

    def question_span(self, record: Question) -> tuple[int, int]:
        """Character span of the question text inside `prefix(record)` (Min-K% scores it)."""
        before = self.question_format.split("{question}", 1)[0]
        start = len(before.replace("{{", "{").replace("}}", "}"))
        return start, start + len(record.question)

    def continuations(self, record: Question) -> list[str]:
        """One continuation per answer choice (the text whose tokens are scored)."""
        if not record.choices:
            raise ValueError(f"record {record.id!r} has no answer choices to render")
        return [self.continuation_format.format(choice=c) for c in record.choices]


#: Hase et al.'s prompt 0040: question, lettered choices, "Answer:", gold answer text.
MULTIPLE_CHOICE = PromptTemplate(name="mc")
#: Hase et al.'s prompt 0306 for yes/no questions: "Q: ...\nA: yes|no".
YES_NO = PromptTemplate(
    name="qa", question_format="Q: {question}", list_choices=False, answer_format="\nA:"
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (MULTIPLE_CHOICE, YES_NO)}


def default_template(dataset: str) -> PromptTemplate:
    """The paper's template for a dataset (yes/no style for StrategyQA, lettered otherwise)."""
    return YES_NO if dataset == "strategyqa" else MULTIPLE_CHOICE


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise TruthprobeError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
