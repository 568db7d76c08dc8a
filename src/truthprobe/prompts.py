"""Prompt templates: a shared question prefix plus one continuation per answer choice.

As in Hase et al., a choice is scored (and its hidden state read) as a continuation of the
question prompt, so the prefix is the same for every choice and is computed once. Templates are
plain data with a stable hash that caches record. Built in: the paper's two (`mc`, `qa`) and
lm-evaluation-harness's multiple-choice style (`lmeval`); any other comes from a JSON file of
the `PromptTemplate` fields (`load_template_file`).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.names import is_safe_name


class TemplateError(TruthprobeError, ValueError):
    """A template that cannot render (unknown name, bad file, a field a record lacks)."""


#: Fields added after caches existed: part of a template's identity only when set, so the
#: built-in templates (and every cache made with them) keep their hash.
_LATER_FIELDS = {"description": "", "strip_question": False}


@dataclass(frozen=True)
class PromptTemplate:
    """A zero-shot multiple-choice prompt.

    The prefix is `description` + `question_format` + (one `choice_format` line per choice if
    `list_choices`) + `answer_format`; each choice's continuation is `continuation_format`.
    """

    name: str
    question_format: str = "Question: {question}"
    list_choices: bool = True
    choice_format: str = "\n{label}) {choice}"
    answer_format: str = "\nAnswer:"
    continuation_format: str = " {choice}"
    description: str = ""
    """Text before the question; `{field}` is the record's `meta.field`, underscores shown as
    spaces (lm-eval's MMLU: "The following are questions (with answers) about {subject}.")."""
    strip_question: bool = False
    """Strip whitespace around the question text (lm-eval's MMLU does, its ARC does not)."""

    def identity(self) -> dict:
        values = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if values[name] == default:
                del values[name]
        return values

    @property
    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the template's fields: changes when the text does."""
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def reference(self) -> dict[str, str]:
        """What results record of the template: its name and hash (the text is in the cache)."""
        return {"name": self.name, "hash": self.hash}

    def to_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True)

    def _description(self, record: Question) -> str:
        if not self.description:
            return ""
        names = {name for _, name, _, _ in string.Formatter().parse(self.description) if name}
        missing = sorted(n for n in names if not isinstance(record.meta.get(n), str | int | float))
        if missing:
            raise TemplateError(
                f"record {record.id!r}: template {self.name!r} describes it with "
                f"meta.{missing[0]}, which the record does not have"
            )
        return self.description.format(**{n: str(record.meta[n]).replace("_", " ") for n in names})

    def _question(self, record: Question) -> str:
        return record.question.strip() if self.strip_question else record.question

    def prefix(self, record: Question) -> str:
        """The shared question prompt, ending where every choice continues."""
        text = self._description(record) + self.question_format.format(
            question=self._question(record)
        )
        if self.list_choices and record.choices:
            for label, choice in zip(string.ascii_uppercase, record.choices, strict=False):
                text += self.choice_format.format(label=label, choice=choice)
        return text + self.answer_format

    def question_span(self, record: Question) -> tuple[int, int]:
        """Character span of the question text inside `prefix(record)` (Min-K% scores it)."""
        before = self.question_format.split("{question}", 1)[0]
        start = len(self._description(record)) + len(before.replace("{{", "{").replace("}}", "}"))
        return start, start + len(self._question(record))

    def continuations(self, record: Question) -> list[str]:
        """One continuation per answer choice (the text whose tokens are scored)."""
        if not record.choices:
            raise ValueError(f"record {record.id!r} has no answer choices to render")
        return [self.continuation_format.format(choice=c) for c in record.choices]


def choice_chars(record: Question) -> list[int]:
    """Each choice's length in characters, without the separator before it: the divisor of
    lm-evaluation-harness's `acc_norm` (`len(choice)`, not `len(" " + choice)`)."""
    return [len(c) for c in record.choices or ()]


#: Hase et al.'s prompt 0040: question, lettered choices, "Answer:", gold answer text.
MULTIPLE_CHOICE = PromptTemplate(name="mc")
#: Hase et al.'s prompt 0306 for yes/no questions: "Q: ...\nA: yes|no".
YES_NO = PromptTemplate(
    name="qa", question_format="Q: {question}", list_choices=False, answer_format="\nA:"
)
#: lm-evaluation-harness's ARC (`arc_easy`, `arc_challenge`): "Question: ...\nAnswer:" and each
#: choice's text after a space, no listed choices.
LMEVAL = PromptTemplate(name="lmeval", list_choices=False)
#: lm-evaluation-harness's MMLU continuation tasks (`mmlu_*_continuation`): the same after the
#: subject's description, question stripped.
LMEVAL_MMLU = PromptTemplate(
    name="lmeval-mmlu",
    list_choices=False,
    description="The following are questions (with answers) about {subject}.\n\n",
    strip_question=True,
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (MULTIPLE_CHOICE, YES_NO, LMEVAL)}
#: A named template's form for one dataset, where lm-eval renders that dataset differently.
_DATASET_FORMS: dict[tuple[str, str], PromptTemplate] = {("lmeval", "mmlu"): LMEVAL_MMLU}


def default_template(dataset: str) -> PromptTemplate:
    """The paper's template for a dataset (yes/no style for StrategyQA, lettered otherwise)."""
    return YES_NO if dataset == "strategyqa" else MULTIPLE_CHOICE


def get_template(name: str, dataset: str | None = None) -> PromptTemplate:
    """A built-in template by name, in its form for `dataset` (lm-eval's MMLU has a preamble)."""
    if name not in TEMPLATES:
        raise TemplateError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}")
    return _DATASET_FORMS.get((name, dataset or ""), TEMPLATES[name])


#: The format fields each template field may use.
_FORMAT_FIELDS = {
    "question_format": {"question"},
    "choice_format": {"label", "choice"},
    "answer_format": set(),
    "continuation_format": {"choice"},
}


def template_from_dict(values: dict, where: str) -> PromptTemplate:
    """A `PromptTemplate` from plain values, checked field by field (`where` names the source)."""
    if not isinstance(values, dict):
        raise TemplateError(f"{where}: a template is a JSON object of PromptTemplate fields")
    known = {f.name: f for f in fields(PromptTemplate)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TemplateError(
            f"{where}: unknown field {unknown[0]!r}; a template has {', '.join(known)}"
        )
    for name, value in values.items():
        wanted = bool if name in ("list_choices", "strip_question") else str
        if not isinstance(value, wanted):
            raise TemplateError(
                f"{where}: field {name!r} must be a {'boolean' if wanted is bool else 'string'}, "
                f"got {value!r}"
            )
    for name, allowed in _FORMAT_FIELDS.items():
        text = values.get(name)
        if text is None:
            continue
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as err:
            raise TemplateError(f"{where}: field {name!r}: {err} in {text!r}") from None
        bad = sorted(used - allowed)
        if bad:
            can = ", ".join("{" + a + "}" for a in sorted(allowed)) or "no {fields}"
            raise TemplateError(f"{where}: field {name!r} uses {{{bad[0]}}}; it may use {can}")
    try:  # the description names meta fields, any of them; it must at least parse
        list(string.Formatter().parse(values.get("description", "")))
    except ValueError as err:
        text = values.get("description")
        raise TemplateError(f"{where}: field 'description': {err} in {text!r}") from None
    if "{question}" not in values.get("question_format", "{question}"):
        raise TemplateError(f"{where}: field 'question_format' must contain {{question}}")
    if "{choice}" not in values.get("continuation_format", "{choice}"):
        raise TemplateError(f"{where}: field 'continuation_format' must contain {{choice}}")
    if "name" not in values or not str(values["name"]).strip():
        raise TemplateError(f"{where}: field 'name' is missing (it names the template's caches)")
    if not is_safe_name(values["name"]):
        raise TemplateError(
            f"{where}: field 'name' {values['name']!r} names cache files: use letters, digits, "
            "'.', '_' and '-' only (no '/', no '..')"
        )
    return PromptTemplate(**values)


def load_template_file(path: str | Path) -> PromptTemplate:
    """A template from a JSON file with the `PromptTemplate` fields (`name` required)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise TemplateError(f"template file {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TemplateError(f"template file {path}: not readable JSON ({err})") from None
    return template_from_dict(values, f"template file {path}")


def resolve_template(
    name: str | None, records: Sequence[Question], template_file: str | Path | None = None
) -> PromptTemplate:
    """The template a run uses for `records`: a file's, a named one, or the paper's default."""
    if template_file is not None:
        return load_template_file(template_file)
    dataset = records[0].dataset if records else None
    if name is None:
        return default_template(dataset or "")
    return get_template(name, dataset)
