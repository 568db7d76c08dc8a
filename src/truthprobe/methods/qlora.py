"""QLoRA: LoRA adapters trained on the training rows, on the run's model or a quantised copy.

Multiple-choice tasks train the paper's choice loss and score the choices (`qlora`); datasets in
`--cot` and free-form ones train the language-model loss of the gold reasoning and answer and
are evaluated by greedy generation (`qlora+cot`). By default the adapters train on the run's
own model (its `--quantization`), so QLoRA's SGR shares its zero-shot floor's weights;
`--qlora-quantization` picks other weights, which its parts' fingerprints and the table name.
One model serves every part: each adapter is removed after its evaluation. Adapters are saved
under the run's `adapters/` by a hash of what determines them and reloaded on a re-run. The
mechanics are in `truthprobe.baselines.qlora`.
"""

from __future__ import annotations

import numpy as np

from truthprobe.methods.base import Method, MethodContext, MethodOutput, register_method
from truthprobe.methods.icl import uses_cot


class QLoRA(Method):
    def __init__(self, settings, cot: bool, max_new_tokens: int) -> None:
        self.qlora, self.cot, self.max_new_tokens = settings, cot, max_new_tokens
        self.label = self.family = "qlora+cot" if cot else "qlora"
        chosen = settings.qlora_quantization
        self.quantization = None if chosen == "model" else chosen

    def n_train(self, n_train: int) -> int:
        return self.qlora.qlora_n_train

    def settings(self) -> dict:
        return {
            "n_train": self.qlora.qlora_n_train,
            "max_updates": self.qlora.qlora_max_updates,
            "cot": self.cot,
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
        from truthprobe.baselines.qlora import (
            QLoRAConfig,
            qlora_choice_probs,
            remove_adapter,
            train_adapter,
        )

        assert train is not None
        loaded = ctx.models.quantized(self.quantization)
        records = ctx.task.records
        training = [records[i] for i in train]
        tests = [records[i] for i in ctx.test]
        template = None if self.cot else ctx.template
        config = QLoRAConfig(
            max_updates=self.qlora.qlora_max_updates or None,
            objective="cot" if self.cot else "mc",
        )
        try:
            trained = train_adapter(
                loaded,
                training,
                template,
                ctx.run_dir / "adapters",
                config,
                seed=seed,
                progress=ctx.progress,
            )
            info = {"losses": trained.losses, "adapter": trained.adapter_dir.name}
            if self.cot:
                generations = cot.cot_generations(
                    loaded, [], tests, self.max_new_tokens or None, progress=ctx.progress
                )
                out = MethodOutput.from_generations(
                    ctx.test, generations, [t.choices for t in tests]
                )
                out.info = info
                return out
            probs = qlora_choice_probs(loaded, template, tests)
            return MethodOutput.from_choice_probs(
                ctx.test, probs, ctx.task.answers[ctx.test], info=info
            )
        finally:
            remove_adapter(loaded)


def build(task, settings, layers) -> list[Method]:
    return [QLoRA(settings.qlora, uses_cot(task, settings), settings.cot.max_new_tokens)]


register_method("qlora", build)
