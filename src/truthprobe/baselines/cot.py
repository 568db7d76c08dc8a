"""Chain-of-thought (CoT): worked demonstrations, greedy generation, answer matching.

As in Hase et al. (paper_methods.md §6.1-6.2) for GSM8k and StrategyQA:

- a demonstration is `Q: <question>\\nA: <reasoning> So the answer is <answer>`, where the
  reasoning is the gold solution's lines (GSM8k, calculator annotations `<<...>>` removed) or
  the joined gold facts (StrategyQA); the test query is `Q: <question>\\nA:`;
- the model continues greedily (at most 300 new tokens for GSM8k, 100 for StrategyQA);
- the prediction is what follows the first "the answer is" on the same line; a completion
  without that phrase is wrong. GSM8k compares the first number there with the gold number
  (commas, `$` and a trailing `.0` normalised, which the paper's exact string match did not
  do); StrategyQA compares the first word with yes / no.

The zero-shot GSM8k row uses a "math worksheet" instruction instead of demonstrations (the
paper's prompt 5305). Generation stops at a blank line, where a next demonstration would
begin: text after it can never change the extracted answer of an ICL completion, and stopping
there saves most of the decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from truthprobe.baselines.icl import (
    DEMO_SEPARATOR,
    ICLPrompt,
    assemble_prompt,
    check_no_leak,
    first_number,
    normalise_number,
)
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel
from truthprobe.scoring import count_tokens, generate_greedy, max_positions

TRIGGER = "the answer is"
#: The paper's generation budgets.
MAX_NEW_TOKENS = {"gsm8k": 300, "strategyqa": 100}
#: Zero-shot GSM8k instruction, after the paper's "math worksheet" prompt (5305).
WORKSHEET = (
    "Here is a math worksheet. Solve each problem step by step in this format:\n"
    "Q: <problem>\n"
    "A: Let's think step by step. 1. <first step> ... N. <last step> "
    "Therefore, the answer is <number>.\n"
    "Now you try!"
)
STOP = (DEMO_SEPARATOR,)

_CALCULATOR = re.compile(r"<<[^>]*>>")


def reasoning(record: Question) -> str:
    """The gold reasoning a CoT demonstration shows (and QLoRA+CoT trains on)."""
    meta = record.meta
    if "solution" in meta:  # GSM8k: the lines before "#### answer"
        lines = _CALCULATOR.sub("", meta["solution"]).split("####")[0].splitlines()
        return " ".join(line.strip() for line in lines if line.strip())
    if "facts" in meta:  # StrategyQA
        return " ".join(fact.strip() for fact in meta["facts"])
    raise TruthprobeError(
        f"record {record.id!r} has no gold reasoning for chain-of-thought "
        "(meta needs 'solution' or 'facts')"
    )


def gold_answer(record: Question) -> str:
    """The answer string a completion is compared with (numbers normalised, yes/no lower-case)."""
    return normalise_number(record.answer) if record.choices is None else record.answer.lower()


def query(record: Question) -> str:
    return f"Q: {record.question}\nA:"


def target(record: Question) -> str:
    """What follows the query in a demonstration: ` <reasoning> So the answer is <answer>`."""
    return f" {reasoning(record)} So the answer is {gold_answer(record)}"


def render_demonstration(record: Question) -> str:
    return query(record) + target(record)


def build_prompt(
    demonstrations: Sequence[Question],
    test: Question,
    count_tokens=None,
    max_tokens: int | None = None,
    max_new_tokens: int = 0,
    instruction: str | None = None,
) -> ICLPrompt:
    """Worked demonstrations, then the test query (after `instruction` and a newline, if any).

    With `count_tokens` and `max_tokens`, demonstrations are dropped from the end until the
    prompt plus `max_new_tokens` fits.
    """
    head = f"{instruction}\n" if instruction else ""
    fits = None
    if count_tokens is not None and max_tokens is not None:

        def fits(prefix: str) -> bool:
            return count_tokens(head + prefix) + max_new_tokens <= max_tokens

    prompt = assemble_prompt(
        demonstrations, test, render_demonstration, query(test), fits, max_tokens
    )
    return ICLPrompt(head + prompt.prefix, prompt.demonstration_ids, prompt.dropped)


def answer_decided(completion: str) -> bool:
    """True once `extract_answer` can no longer change as the completion grows: the first
    trigger phrase is there and its line has ended (what follows is never read)."""
    at = completion.lower().find(TRIGGER)
    return at >= 0 and "\n" in completion[at + len(TRIGGER) :]


def extract_answer(completion: str, free_form: bool) -> str | None:
    """The answer on the line after the trigger phrase (None without it), paper §6.1.

    GSM8k: its first number, normalised; StrategyQA: its first word, lower-cased.
    """
    at = completion.lower().find(TRIGGER)
    if at < 0:
        return None
    line = completion[at + len(TRIGGER) :].split("\n", 1)[0]
    if free_form:
        return first_number(line)
    words = line.lower().strip(" .").split()
    return words[0].strip(".,;:!\"'") if words else None


@dataclass(frozen=True)
class Generations:
    """Completions of test items, their extracted answers and the gold answers."""

    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    completions: tuple[str, ...]
    predicted: tuple[str | None, ...]
    gold: tuple[str, ...]

    def correct(self) -> np.ndarray:
        """Per-item 0/1 correctness: the extracted answer equals the gold one."""
        return np.array(
            [p is not None and p == g for p, g in zip(self.predicted, self.gold, strict=True)],
            dtype=np.float64,
        )

    def to_rows(self) -> list[dict]:
        """One JSON-ready row per item (what a run stores for inspection)."""
        return [
            dict(id=i, completion=c, predicted=p, gold=g, correct=bool(p is not None and p == g))
            for i, c, p, g in zip(
                self.ids, self.completions, self.predicted, self.gold, strict=True
            )
        ]


def cot_generations(
    loaded: LoadedModel,
    demonstrations: Sequence[Question],
    tests: Sequence[Question],
    max_new_tokens: int | None = None,
    instruction: str | None = None,
    max_tokens: int = 2048,
    batch_size: int = 0,
    progress: bool = True,
    share_prefix: bool = True,
    stop_when_decided: bool = True,
) -> Generations:
    """k-shot CoT completions of `tests` (the same demonstrations for every item), scored.

    k = 0 with `instruction=WORKSHEET` is the paper's zero-shot GSM8k baseline; an adapted
    (QLoRA+CoT) model is evaluated with k = 0 and no instruction. A completion ends at the
    demonstrations' separator, at `max_new_tokens`, or (`stop_when_decided`) once its answer
    line is complete (`answer_decided`): the extracted answer is the same as the paper's
    longer generations give, and the stored completion ends after that line.
    """
    check_no_leak(demonstrations, tests)
    if max_new_tokens is None:
        max_new_tokens = MAX_NEW_TOKENS.get(tests[0].dataset, 300) if tests else 300

    def count(text: str) -> int:
        return count_tokens(loaded, text)

    prompts = [
        build_prompt(demonstrations, t, count, max_tokens, max_new_tokens, instruction).prefix
        for t in tests
    ]
    limit = max_positions(loaded)
    for t, prompt in zip(tests, prompts, strict=True):
        if (n := count(prompt)) + max_new_tokens > limit:
            raise TruthprobeError(
                f"{t.where or 'record'} (id {t.id!r}): its chain-of-thought prompt is {n} tokens; "
                f"with {max_new_tokens} new ones that is more than the model's {limit} positions "
                "(shorten the question)"
            )
    completions = generate_greedy(
        loaded, prompts, max_new_tokens, STOP, batch_size, progress, share_prefix,
        decided=answer_decided if stop_when_decided else None,
    )  # fmt: skip
    return Generations(
        ids=tuple(t.id for t in tests),
        prompts=tuple(prompts),
        completions=tuple(completions),
        predicted=tuple(
            extract_answer(c, t.choices is None) for c, t in zip(completions, tests, strict=True)
        ),
        gold=tuple(gold_answer(t) for t in tests),
    )
