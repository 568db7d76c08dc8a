"""Zero-shot: the unsupervised floor of SGR, without any training.

Multiple-choice tasks score each choice by its summed log-likelihood as a continuation of the
prompt, read from the activation cache (`zero_shot`, lm-evaluation-harness's `acc`), or divided
by the choice's length in characters without the separator before it (`zero_shot_norm`,
lm-eval's `acc_norm`: `len(choice)`, not `len(" " + choice)`). Free-form tasks
(GSM8k) use zero-shot chain-of-thought after a "math worksheet" instruction (`zero_shot+cot`).
"""

from __future__ import annotations

import numpy as np

from truthprobe.choice_probs import Normalization, zero_shot_probs
from truthprobe.methods.base import Method, MethodContext, MethodOutput, register_method
from truthprobe.prompts import choice_chars


class ZeroShot(Method):
    supervised = False

    def __init__(self, normalization: Normalization) -> None:
        self.normalization = normalization
        self.label = self.family = "zero_shot" if normalization == "raw" else "zero_shot_norm"

    def settings(self) -> dict:
        return {"normalization": self.normalization}

    def run(
        self,
        ctx: MethodContext,
        train: np.ndarray | None,
        seed: int,
        labels: np.ndarray | None = None,
    ) -> MethodOutput:
        assert ctx.states is not None
        # every item of the task, not only test and validation: reading the cache is all it
        # costs, and a study's own sets (a hardness level's test items) need their floor too
        rows = np.arange(len(ctx.task.items))
        logprob, mask = ctx.states.scores("choice_logprob")
        # from the records, not the cache: caches before 0.5 counted the separator too
        chars = np.zeros(mask[rows].shape, np.int64)
        for j, i in enumerate(rows):
            lengths = choice_chars(ctx.task.records[i])
            chars[j, : len(lengths)] = lengths
        ids = [ctx.task.ids[i] for i in rows]
        probs = zero_shot_probs(ids, logprob[rows], chars, mask[rows], self.normalization)
        return MethodOutput.from_choice_probs(rows, probs, ctx.task.answers[rows])


class ZeroShotCoT(Method):
    """Zero-shot chain-of-thought after the worksheet instruction (free-form tasks)."""

    label = family = "zero_shot+cot"
    supervised = False

    def __init__(self, max_new_tokens: int) -> None:
        self.max_new_tokens = max_new_tokens

    def settings(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens}

    def run(
        self,
        ctx: MethodContext,
        train: np.ndarray | None,
        seed: int,
        labels: np.ndarray | None = None,
    ) -> MethodOutput:
        from truthprobe.baselines import cot

        tests = [ctx.task.records[i] for i in ctx.test]
        generations = cot.cot_generations(
            ctx.models.base,
            [],
            tests,
            self.max_new_tokens or None,
            cot.WORKSHEET,
            progress=ctx.progress,
        )
        return MethodOutput.from_generations(ctx.test, generations, [t.choices for t in tests])


def build(task, settings, layers) -> list[Method]:
    if task.free_form:
        return [ZeroShotCoT(settings.cot.max_new_tokens)]
    return [ZeroShot("raw"), ZeroShot("chars")]


register_method("zero_shot", build)
