"""In-context learning (ICL): k demonstrations from one stratum, then score the test choices.

As in Hase et al.: demonstrations are the n_train = k items drawn from the requested stratum
(the same draw for every test item of a seed), rendered with the zero-shot template and their
gold answer text, separated by blank lines; the test question follows and each choice is scored
by its summed log-likelihood as a continuation (`raw`, lm-evaluation-harness `acc`) or divided by
its length in characters (`chars`, `acc_norm`). k = 0 is the zero-shot baseline. A prompt that
would exceed the context drops demonstrations from the end, never the test question, and says so.

Scoring goes through the scoring engine (`truthprobe.scoring.score_continuations`): the
demonstrations every test item shares run once and their keys and values are kept; each test
item's own question and choices continue them in packed passes (log-likelihoods equal to those
of each item's whole prompt within float rounding, `tests/test_icl.py`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel
from truthprobe.prompts import PromptTemplate, choice_chars
from truthprobe.scoring import count_tokens, encode_texts, score_continuations

log = logging.getLogger(__name__)

#: The paper's k per dataset (n_train for ICL).
DEFAULT_K = {"arc": 10, "mmlu": 10, "strategyqa": 8, "gsm8k": 8}
DEMO_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ICLPrompt:
    """A rendered k-shot prompt for one test item."""

    prefix: str
    """Demonstrations + test question, ending where each choice continues."""
    demonstration_ids: tuple[str, ...]
    """Ids of the demonstrations actually used (after any truncation)."""
    dropped: int = 0
    """Demonstrations dropped to fit the context."""


def render_demonstration(template: PromptTemplate, record: Question) -> str:
    """A solved example: the zero-shot prompt followed by its gold answer's continuation."""
    if record.answer_index is None or not record.choices:
        raise TruthprobeError(f"demonstration {record.id!r} has no answer choices")
    return template.prefix(record) + template.continuations(record)[record.answer_index]


def build_prompt(
    template: PromptTemplate,
    demonstrations: Sequence[Question],
    test: Question,
    count_tokens=None,
    max_tokens: int | None = None,
) -> ICLPrompt:
    """Demonstrations (in the given order), a blank line, then the test question.

    Args:
        count_tokens: text -> token count; with `max_tokens`, demonstrations are dropped from the
            end until the prompt plus the longest choice fits.

    Raises:
        TruthprobeError: if a demonstration is the test item itself.
    """
    longest = max(template.continuations(test), key=len)
    fits = None
    if count_tokens is not None and max_tokens is not None:

        def fits(prefix: str) -> bool:
            return count_tokens(prefix + longest) <= max_tokens

    return assemble_prompt(
        demonstrations,
        test,
        lambda d: render_demonstration(template, d),
        template.prefix(test),
        fits,
        max_tokens,
    )


def assemble_prompt(
    demonstrations: Sequence[Question],
    test: Question,
    render: Callable[[Question], str],
    query: str,
    fits: Callable[[str], bool] | None = None,
    budget: int | None = None,
) -> ICLPrompt:
    """`render(d)` per demonstration, blank-line separated, then `query`; one truncation rule.

    Demonstrations are dropped from the end while `fits(prompt)` is False, never the query; a
    drop is logged. Shared by multiple-choice ICL and chain-of-thought ICL.

    Raises:
        TruthprobeError: if a demonstration is the test item itself.
    """
    if any(d.id == test.id for d in demonstrations):
        raise TruthprobeError(f"test item {test.id!r} is among its own demonstrations")
    rendered = [render(d) for d in demonstrations]
    while True:
        prefix = DEMO_SEPARATOR.join([*rendered, query])
        if fits is None or not rendered or fits(prefix):
            break
        rendered.pop()
    kept = len(rendered)
    dropped = len(demonstrations) - kept
    if dropped:
        log.warning(
            "ICL prompt for %s: dropped %d of %d demonstrations to fit %s tokens",
            test.id,
            dropped,
            len(demonstrations),
            budget,
        )
    return ICLPrompt(prefix, tuple(d.id for d in demonstrations[:kept]), dropped)


def check_no_leak(demonstrations: Sequence[Question], tests: Sequence[Question]) -> None:
    """Refuse demonstrations (or training items) that are test items."""
    test_ids = {t.id for t in tests}
    leaked = [d.id for d in demonstrations if d.id in test_ids]
    if leaked:
        raise TruthprobeError(f"demonstrations include test items: {leaked[:5]}")


def icl_choice_probs(
    loaded: LoadedModel,
    template: PromptTemplate,
    demonstrations: Sequence[Question],
    tests: Sequence[Question],
    normalization: str = "raw",
    max_tokens: int = 2048,
    batch_size: int = 0,
    progress: bool = True,
) -> ChoiceProbs:
    """k-shot choice probabilities of `tests` with the same demonstrations for every item."""
    check_no_leak(demonstrations, tests)
    prompts = [
        build_prompt(template, demonstrations, t, lambda x: count_tokens(loaded, x), max_tokens)
        for t in tests
    ]
    items = [
        encode_texts(
            loaded.tokenizer,
            prompt.prefix,
            template.continuations(test),
            test.id,
            chars=choice_chars(test),
        )
        for prompt, test in zip(prompts, tests, strict=True)
    ]
    n_choices = max(t.n_choices for t in tests)
    logprob, chars = score_continuations(loaded, items, n_choices, batch_size, progress)
    if normalization == "chars":
        logprob = logprob / np.maximum(chars, 1)
    mask = np.zeros(logprob.shape, bool)
    for i, t in enumerate(tests):
        mask[i, : t.n_choices] = True
    return ChoiceProbs.from_scores([t.id for t in tests], logprob, mask)


_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def extract_final_number(text: str, trigger: str = "the answer is") -> str | None:
    """The final numeric answer of a (chain-of-thought) completion, normalised.

    Takes the first number after the trigger phrase when present, otherwise the last number in
    the text; strips `$` and thousands separators and a trailing `.0`. None when there is none.
    (CoT scoring, `cot.extract_answer`, requires the trigger, as the paper does.)
    """
    at = text.lower().find(trigger)
    if at >= 0:
        return first_number(text[at + len(trigger) :])
    found = _NUMBER.findall(text)
    return normalise_number(found[-1]) if found else None


def first_number(text: str) -> str | None:
    """The first number in `text`, normalised (None if there is none)."""
    found = _NUMBER.findall(text)
    return normalise_number(found[0]) if found else None


def normalise_number(text: str) -> str:
    """`$1,080.00` -> `1080`; `-3.50` -> `-3.5`: the form in which answers are compared."""
    cleaned = text.replace("$", "").replace(",", "").rstrip(".")
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".")
    return cleaned
