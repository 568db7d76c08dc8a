"""QLoRA: LoRA adapters on a (bitsandbytes-quantised) model, trained with a multiple-choice loss.

As in Hase et al. (paper_methods.md §6.4): LoRA rank 16, alpha 32, dropout 0.1 on the attention
query and value projections; learning rate 1e-4 with linear decay to 10%, weight decay 1e-5,
gradient clipping 1.0; an effective batch of min(n_train, 50) items by accumulation; 3 epochs,
raised so there are at least 10 optimiser updates (150 for chain-of-thought). The loss scores
each choice by its summed log-likelihood as a continuation of the zero-shot prompt, softmaxes
across the question's choices and takes cross-entropy with the gold choice; evaluation uses the
same scorer (`forward_batch`), so an adapted model's `ChoiceProbs` come through the same path
as zero-shot ones (`truthprobe.scoring`).

With `objective="cot"` (StrategyQA, GSM8k: QLoRA+CoT) the loss is the language-model loss of
the gold reasoning and answer instead: input `Q: <question>\nA:`, target
` <reasoning> So the answer is <answer>` + EOS, the summed token NLL averaged over sequences;
the adapted model is then evaluated by greedy generation (`truthprobe.baselines.cot`).

Adapters are saved under a directory named from a hash of (model fingerprint, config, training
ids), and a re-run with the same inputs loads them instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from truthprobe.choice_probs import ChoiceProbs
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel
from truthprobe.prompts import PromptTemplate
from truthprobe.scoring import EncodedItem, choice_log_likelihoods, encode, packs

#: The paper's least number of optimiser updates per objective (`minimum_gradient_updates`:
#: 10, and 10 x 15 for chain-of-thought, paper_methods.md §6.4).
MIN_UPDATES = {"mc": 10, "cot": 150}


@dataclass(frozen=True)
class QLoRAConfig:
    """Adapter and optimisation settings (defaults: the paper's)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 1e-4
    weight_decay: float = 1e-5
    final_lr_fraction: float = 0.1
    max_grad_norm: float = 1.0
    epochs: int = 3
    min_updates: int | None = None
    """Epochs are raised until there are at least this many optimiser updates (None: the
    paper's, `MIN_UPDATES` of the objective: 10, or 150 for chain-of-thought)."""
    effective_batch: int = 50
    """Items per optimiser update (capped at n_train), reached by gradient accumulation."""
    pass_tokens: int = 512
    """Tokens per forward/backward pass: an update's items are packed into passes of at most
    this many (an item longer runs alone), each item attending to itself only, so the loss is
    the one of one item per pass. On a 2-core CPU, GSM8k CoT training: see docs/baselines.md."""
    micro_batch: int = 0
    """At most this many items per pass (0: as many as `pass_tokens` holds; the paper's 70b
    runs took one four-choice item)."""
    max_updates: int | None = None
    """Stop after this many updates (small CPU runs); None trains the full schedule."""
    objective: Literal["mc", "cot"] = "mc"
    """`mc`: cross-entropy over the choices; `cot`: LM loss on the gold reasoning + answer."""

    def schedule(self, n_train: int) -> tuple[int, int]:
        """(items per update, total updates)."""
        per_update = min(n_train, self.effective_batch)
        per_epoch = math.ceil(n_train / per_update)
        least = MIN_UPDATES[self.objective] if self.min_updates is None else self.min_updates
        epochs = max(self.epochs, math.ceil(least / per_epoch))
        total = per_epoch * epochs
        return per_update, total if self.max_updates is None else min(total, self.max_updates)


@dataclass
class QLoRAResult:
    """A trained (or reloaded) adapter and its training curve."""

    adapter_dir: Path
    losses: list[float] = field(default_factory=list)
    reused: bool = False


def adapter_key(
    loaded: LoadedModel,
    config: QLoRAConfig,
    train: Sequence[Question],
    seed: int,
    template: PromptTemplate | None,
) -> str:
    """Hash of everything that determines the trained adapter."""
    payload = json.dumps(
        {
            "model": loaded.fingerprint.to_dict(),
            "config": asdict(config),
            "train": [q.id for q in train],
            "seed": seed,
            "template": template.hash if template is not None else "cot",
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _training_items(
    loaded: LoadedModel,
    train: Sequence[Question],
    template: PromptTemplate | None,
    objective: str,
) -> list[EncodedItem]:
    """MC: the prompt and every choice; CoT: the query and one target (reasoning, answer, EOS)."""
    if objective == "mc":
        return [encode(loaded.tokenizer, template, q) for q in train]
    if objective != "cot":
        raise TruthprobeError(f"unknown QLoRA objective {objective!r}; use mc or cot")
    from truthprobe.baselines import cot

    tokenizer = loaded.tokenizer
    items = []
    for q in train:
        text = cot.target(q)
        ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        items.append(EncodedItem(tokenizer(cot.query(q)).input_ids, [ids], [len(text)], q.id))
    return items


def remove_adapter(loaded: LoadedModel) -> None:
    """Strip LoRA layers from `loaded.model` (no merge): the base model is back, unchanged."""
    from peft import PeftModel

    if isinstance(loaded.model, PeftModel):
        loaded.model = loaded.model.unload()


def train_adapter(
    loaded: LoadedModel,
    train: Sequence[Question],
    template: PromptTemplate | None,
    adapters_dir: str | Path,
    config: QLoRAConfig = QLoRAConfig(),
    seed: int = 0,
    progress: bool = True,
) -> QLoRAResult:
    """Attach LoRA adapters to `loaded.model` in place and train them (or load saved ones).

    `template` is the multiple-choice prompt (unused, and may be None, for the CoT objective).
    `remove_adapter` restores the base model afterwards, so one loaded model serves many runs.
    """
    if config.objective == "mc" and template is None:
        raise TruthprobeError("the multiple-choice QLoRA objective needs a prompt template")
    from peft import LoraConfig, PeftModel, get_peft_model

    if loaded.fingerprint.quantization == "4bit" and loaded.device.type == "cpu":
        # Measured with bitsandbytes 0.50: its CPU 4-bit matmul has no autograd kernel, and
        # training through it silently diverges (MC loss 2.76 -> 15.3 in 6 updates).
        raise TruthprobeError(
            "QLoRA on a 4-bit model needs a GPU: bitsandbytes' CPU 4-bit kernels cannot be "
            "trained through. On CPU use --quantization 8bit (the paper's setting) or none."
        )
    adapter_dir = Path(adapters_dir) / adapter_key(loaded, config, train, seed, template)
    if (adapter_dir / "adapter_config.json").is_file():
        loaded.model = PeftModel.from_pretrained(loaded.model, adapter_dir)
        loaded.model.eval()
        losses = json.loads((adapter_dir / "losses.json").read_text())
        return QLoRAResult(adapter_dir, losses, reused=True)

    torch.manual_seed(seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(loaded.model, lora)
    loaded.model = model
    model.train()
    items = _training_items(loaded, train, template, config.objective)
    answers = [q.answer_index for q in train]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and "bias" not in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}], lr=config.lr
    )
    per_update, total = config.schedule(len(items))
    scheduler = torch.optim.lr_scheduler.LinearLR(
        optimizer, 1.0, config.final_lr_fraction, total_iters=max(1, total - 1)
    )
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses: list[float] = []
    for _ in tqdm(range(total), desc="qlora", unit="update", disable=not progress):
        if len(order) < per_update:
            order += rng.permutation(len(items)).tolist()
        batch, order = order[:per_update], order[per_update:]
        optimizer.zero_grad()
        total_loss = 0.0
        for group in packs([items[i] for i in batch], config.pass_tokens, config.micro_batch):
            rows = [batch[i] for i in group]
            scores = choice_log_likelihoods(loaded, [items[i] for i in rows])
            if config.objective == "cot":  # summed NLL of the one target sequence
                loss = -sum(s[0] for s in scores) / len(batch)
            else:
                loss = sum(
                    torch.nn.functional.cross_entropy(
                        s[None], torch.tensor([answers[i]], device=s.device)
                    )
                    for s, i in zip(scores, rows, strict=True)
                ) / len(batch)
            loss.backward()
            total_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], config.max_grad_norm
        )
        optimizer.step()
        scheduler.step()
        losses.append(total_loss)
    model.eval()
    staging = adapter_dir.with_name(adapter_dir.name + ".partial")
    model.save_pretrained(staging)
    (staging / "losses.json").write_text(json.dumps(losses))
    staging.rename(adapter_dir)
    return QLoRAResult(adapter_dir, losses)


def qlora_choice_probs(
    loaded: LoadedModel, template: PromptTemplate, tests: Sequence[Question], batch_size: int = 0
) -> ChoiceProbs:
    """Choice probabilities of the (adapted) model: zero-shot scoring, i.e. ICL with k = 0."""
    from truthprobe.baselines.icl import icl_choice_probs

    return icl_choice_probs(loaded, template, [], tests, batch_size=batch_size)
