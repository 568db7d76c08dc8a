"""In-context learning: k demonstrations drawn from the training pool, then each test item.

Multiple-choice tasks score the choices (`icl`); datasets in `--cot` and free-form ones reason
first with worked demonstrations and greedy generation (`icl+cot`). The prompt mechanics are in
`truthprobe.baselines.icl` and `truthprobe.baselines.cot`.
"""

from __future__ import annotations

import numpy as np

from truthprobe.baselines.icl import DEFAULT_K
from truthprobe.methods.base import Method, MethodContext, MethodOutput, register_method


class ICL(Method):
    def __init__(self, k: int, cot: bool, max_tokens: int, max_new_tokens: int) -> None:
        self.k, self.cot, self.max_tokens, self.max_new_tokens = k, cot, max_tokens, max_new_tokens
        self.label = self.family = "icl+cot" if cot else "icl"

    def n_train(self, n_train: int) -> int:
        return self.k

    def settings(self) -> dict:
        return {
            "k": self.k,
            "cot": self.cot,
            "max_tokens": self.max_tokens,
            "max_new_tokens": self.max_new_tokens,
        }

    def run(
        self,
        ctx: MethodContext,
        train: np.ndarray | None,
        seed: int,
        labels: np.ndarray | None = None,
    ) -> MethodOutput:
        from truthprobe.baselines import cot
        from truthprobe.baselines.icl import icl_choice_probs

        assert train is not None
        records = ctx.task.records
        demos = [records[i] for i in train]
        tests = [records[i] for i in ctx.test]
        if self.cot:
            generations = cot.cot_generations(
                ctx.models.base,
                demos,
                tests,
                self.max_new_tokens or None,
                max_tokens=self.max_tokens,
                progress=ctx.progress,
            )
            return MethodOutput.from_generations(ctx.test, generations, [t.choices for t in tests])
        assert ctx.template is not None  # the harness sets it for multiple-choice tasks
        probs = icl_choice_probs(
            ctx.models.base,
            ctx.template,
            demos,
            tests,
            max_tokens=self.max_tokens,
            progress=ctx.progress,
        )
        return MethodOutput.from_choice_probs(ctx.test, probs, ctx.task.answers[ctx.test])


def uses_cot(task, settings) -> bool:
    return task.free_form or task.pool[0].dataset in settings.cot.cot


def build(task, settings, layers) -> list[Method]:
    k = settings.icl.k or DEFAULT_K.get(task.pool[0].dataset, 10)
    return [
        ICL(k, uses_cot(task, settings), settings.icl.icl_max_tokens, settings.cot.max_new_tokens)
    ]


register_method("icl", build)
