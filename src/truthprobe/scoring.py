"""The scoring engine: every forward pass the package makes goes through this module.

- `encode` / `encode_texts`: a prompt prefix (with BOS) and each choice's continuation, tokenised
  separately, so the prefix tokens are identical for every choice and run once.
- `forward_batch`: the fast path. Several questions packed into one sequence without padding,
  each question's prefix once and every choice after it, attention per question (so a row's
  values do not depend on its neighbours in the pass). The LM head (262k vocabulary on Gemma 3:
  more work than the transformer body) runs only at the positions that predict continuation
  tokens. Returns hidden states at each choice's last token and at the prompt's last token, and
  each choice's summed log-likelihood; with `question_scores`, also every question token's
  log-probability and its Min-K%++ z-score (`truthprobe.min_k`).
- `packs`: items grouped into passes by a token budget (`pass_tokens` picks one per device).
- `score_continuations`: `forward_batch` over many items in length-sorted passes, scores only
  (zero-shot with k demonstrations: ICL, and evaluation of a QLoRA-adapted model); a prompt
  prefix every item shares (ICL's demonstrations) runs once (`shared_context`) and every item
  attends to its keys and values.
- `choice_log_likelihoods`: the same log-likelihoods, differentiable (QLoRA trains through it).
- `forward_per_sequence`: the reference path, one full forward per (question, choice) through a
  backend runner (transformers, nnsight, TransformerLens), to cross-check the fast path.
- `generate_greedy`: batched greedy generation for chain-of-thought.

Extraction, zero-shot, ICL, QLoRA and CoT import from here; this module imports nothing from
them.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from truthprobe.backends import SequenceRunner, hf_runner
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel
from truthprobe.prompts import PromptTemplate, choice_chars

#: Vocabulary rows of the LM head per product in `token_log_likelihoods`: every state row meets
#: one slice of the head at a time, so the head's weights are read once per call however many
#: rows there are, and the logits held at once are rows x this many, never rows x vocabulary.
VOCAB_CHUNK = 8192
#: The LM head's products have exactly this many state rows (padded with zero rows): a matrix
#: product's kernel, and so a row's rounding, depends on how many rows it has (oneDNN's bf16
#: kernels on AMX round rows differently at 48-512 rows than at 16 or 1024), never on the other
#: rows' values or order, so a fixed shape makes a row's log-likelihood independent of its pass.
HEAD_ROWS = 128
#: QLoRA's training passes and LM-head products have a multiple of this many rows (padding
#: that attends to nothing and is never scored). oneDNN builds a kernel per matrix-product
#: shape and keeps `memory.KERNEL_CACHE` of them: one pass length per item meant each item's
#: ~15 forward and backward shapes evicted the last one's (GSM8k CoT, 32 items: 1,542 kernels
#: built over 3 updates instead of 568).
TRAINING_ROUND = 128
#: Tokens per packed pass on a CPU for a float32 model, twice as many in 16-bit (`pass_tokens`).
CPU_PASS_TOKENS = 1024
#: At most this many tokens per pass on a GPU, and at most this share of its free memory.
GPU_PASS_TOKENS = 16384
PASS_MEMORY_SHARE = 0.25
#: `score_continuations` runs a prefix its items share once when it has this many tokens.
SHARED_CONTEXT_TOKENS = 32
#: Prompts `generate_greedy` decodes together by default (each pass one token of each: on a
#: CPU the head's and body's weights are read once per pass, so more prompts cost little more).
GENERATE_BATCH = 32
#: transformers' names for the attention of a packed pass (`_packed_attention`) and of a
#: generation pass (`_generation_attention`).
PACKED_ATTENTION = "truthprobe_packed"
GENERATION_ATTENTION = "truthprobe_generation"
#: Bytes of keys and values `generate_greedy` holds at most (fewer prompts decode together
#: where their slots would need more).
GENERATION_MEMORY = 1 << 29


class ScoringError(TruthprobeError, ValueError):
    """An item that cannot be scored (a choice that tokenises to nothing, no choices)."""


@dataclass(frozen=True)
class EncodedItem:
    """Token ids of one question: the shared prefix (with BOS) and each choice's continuation."""

    prefix: list[int]
    choices: list[list[int]]
    choice_chars: list[int]
    """Each choice's characters without the separator before it (lm-eval's `acc_norm`)."""
    item_id: str = ""
    question: tuple[int, int] = (0, 0)
    """Prefix token range [start, stop) of the question text (what Min-K% scores)."""

    @property
    def n_question_tokens(self) -> int:
        return self.question[1] - self.question[0]

    @property
    def n_tokens(self) -> int:
        return len(self.prefix) + sum(len(c) for c in self.choices)

    @property
    def longest(self) -> int:
        """Positions the longest sequence (prefix + one choice) occupies."""
        return len(self.prefix) + max((len(c) for c in self.choices), default=0)

    def after(self, shared: int) -> EncodedItem:
        """The item without its first `shared` prefix tokens (a context run once for many)."""
        start, stop = (max(0, i - shared) for i in self.question)
        return EncodedItem(
            self.prefix[shared:], self.choices, self.choice_chars, self.item_id, (start, stop)
        )

    def truncated(self, limit: int) -> EncodedItem:
        """Drop prefix tokens after the first (BOS) until the longest sequence fits `limit`."""
        excess = self.longest - limit
        if excess <= 0:
            return self
        keep = len(self.prefix) - excess
        start, stop = (0 if i == 0 else max(1, i - excess) for i in self.question)
        if keep < 2:
            raise ScoringError(
                f"item {self.item_id!r}: its longest choice alone needs "
                f"{self.longest - len(self.prefix) + 1} of the {limit} allowed positions"
            )
        return EncodedItem(
            self.prefix[:1] + self.prefix[-(keep - 1) :],
            self.choices,
            self.choice_chars,
            self.item_id,
            (start, stop),
        )


@dataclass
class BatchOutput:
    """Per-question outputs of one batch (float32 numpy arrays)."""

    answer_end: np.ndarray  # (layers, batch, choices, d_model)
    question_end: np.ndarray  # (layers, batch, d_model)
    logprob: np.ndarray  # (batch, choices); 0 where a choice does not exist
    tokens: np.ndarray  # (batch, choices) int
    question_logprob: list[np.ndarray] | None = None
    """Per question: log p of each question token given what precedes it."""
    question_zscore: list[np.ndarray] | None = None
    """Per question: the same, standardised by the next-token distribution (Min-K%++)."""


def encode(tokenizer, template: PromptTemplate, record: Question) -> EncodedItem:
    """Tokenise a record's prompt prefix and its choices' continuations."""
    return encode_texts(
        tokenizer,
        template.prefix(record),
        template.continuations(record),
        record.id,
        template.question_span(record),
        choice_chars(record),
    )


def encode_texts(
    tokenizer,
    prefix: str,
    continuations: Sequence[str],
    item_id: str,
    span: tuple[int, int] | None = None,
    chars: Sequence[int] | None = None,
) -> EncodedItem:
    """Tokenise prefix (with special tokens) and continuations (without) separately.

    Tokenising separately guarantees that the prefix tokens are identical for every choice,
    which is what lets the prefix run once. `span` (characters of the prefix) marks the question
    text: its tokens are those overlapping the span, by the fast tokenizer's offsets (a token
    such as "▁What" that carries the space before the question counts), or, for a tokenizer
    without offsets, by tokenising the text up to each end of the span. `chars`: each choice's
    length for `acc_norm` (`prompts.choice_chars`; default: the continuation without its
    leading whitespace).
    """
    question = (0, 0)
    if span is not None and getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(prefix, add_special_tokens=True, return_offsets_mapping=True)
        prefix_ids = encoded.input_ids
        inside = [
            i
            for i, (a, b) in enumerate(encoded.offset_mapping)
            if b > a and a < span[1] and b > span[0]
        ]
        question = (inside[0], inside[-1] + 1) if inside else (0, 0)
    else:
        prefix_ids = tokenizer(prefix, add_special_tokens=True).input_ids
        if span is not None:
            start, stop = (
                len(tokenizer(prefix[:end], add_special_tokens=True).input_ids) for end in span
            )
            question = (start, stop)
    if question[0] == 0 and question[1] > 0:  # the first token has nothing to predict it
        question = (1, max(1, question[1]))
    choices = [tokenizer(t, add_special_tokens=False).input_ids for t in continuations]
    for text, ids in zip(continuations, choices, strict=True):
        if not ids:
            raise ScoringError(f"record {item_id!r}: choice {text!r} tokenises to nothing")
    if chars is None:
        chars = [len(t.lstrip()) for t in continuations]
    return EncodedItem(prefix_ids, choices, list(chars), item_id, question)


def max_positions(loaded: LoadedModel) -> int:
    """The longest sequence the model was built for (its `max_position_embeddings`)."""
    limit = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)
    return int(limit) if limit else 2**31 - 1


def check_lengths(loaded: LoadedModel, items: Sequence[EncodedItem], offset: int = 0) -> None:
    """Refuse items longer than the model's positions before anything that size is allocated
    (`offset`: tokens of a shared context before every item)."""
    limit = max_positions(loaded)
    for item in items:
        if offset + item.longest > limit:
            raise ScoringError(
                f"item {item.item_id!r}: its prompt and longest choice are "
                f"{offset + item.longest} tokens, more than this model's {limit} positions"
            )


def count_tokens(loaded: LoadedModel, text: str) -> int:
    """Tokens of `text` as a prompt (special tokens included), for context-length budgets."""
    return len(loaded.tokenizer(text, add_special_tokens=True).input_ids)


def _slice_logits(model, states: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """float32 logits of vocabulary rows [start, stop) for every state row (softcapped where
    the model softcaps)."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    bias = None if head.bias is None else head.bias[start:stop]
    logits = torch.nn.functional.linear(states, head.weight[start:stop], bias).float()
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def _head_slices(model, states: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(start, stop, `_slice_logits`) for every state row, `VOCAB_CHUNK` vocabulary rows at a
    time."""
    vocabulary = model.get_output_embeddings().weight.shape[0]
    for start in range(0, vocabulary, VOCAB_CHUNK):
        stop = min(start + VOCAB_CHUNK, vocabulary)
        yield start, stop, _slice_logits(model, states, start, stop)


def _target_logits(logits: torch.Tensor, targets: torch.Tensor, start: int, stop: int):
    """Each row's target logit where the target falls in this slice, else 0."""
    inside = (targets >= start) & (targets < stop)
    picked = logits.gather(1, (targets - start).clamp(0, stop - start - 1)[:, None])[:, 0]
    return torch.where(inside, picked, torch.zeros_like(picked))


def token_log_likelihoods(model, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row of final (post-norm) hidden states.

    The head runs over `VOCAB_CHUNK` vocabulary rows at a time for all state rows together:
    each slice's logits give the target's logit where it falls in the slice and the slice's
    log-sum-exp, and the row's log-normaliser is the log-sum-exp of its slices'. On a CPU the
    head is bound by reading its weights (Gemma 3's 262k x 640), so reading them once per call
    rather than once per chunk of rows, and never holding rows x vocabulary logits, halves its
    time (`benchmarks/extract_bench.py`). Each row's result depends only on that row.
    Differentiable (QLoRA trains through it): with the head frozen (LoRA) the gradient with
    respect to the states is made in the same sweep (`_LogLikelihood`); with a trainable head,
    each slice's logits are recomputed in the backward pass rather than kept (rows x vocabulary
    float32 otherwise).
    """
    target = states.new_zeros(states.shape[0], dtype=torch.float32)
    if not states.shape[0]:
        return target
    head = model.get_output_embeddings()
    vocabulary = head.weight.shape[0]
    training = torch.is_grad_enabled() and states.requires_grad
    frozen = not any(p.requires_grad for p in head.parameters())
    if training and frozen:  # QLoRA: the gradient reaches the states only
        softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        return _LogLikelihood.apply(states, targets, head.weight, head.bias, softcap)
    normalisers = []
    for start in range(0, vocabulary, VOCAB_CHUNK):
        stop = min(start + VOCAB_CHUNK, vocabulary)
        if training:  # keep no slice's logits for the backward pass: recompute them there
            terms = checkpoint(
                _slice_terms, model, states, targets, start, stop, use_reentrant=False
            )
        else:
            terms = _slice_terms(model, states, targets, start, stop)
        normalisers.append(terms[0])
        target = target + terms[1]
    return target - torch.logsumexp(torch.stack(normalisers, dim=1), dim=1)


class _LogLikelihood(torch.autograd.Function):
    """log p(target) per row of `states` under a frozen head, with its gradient with respect to
    the states made in the same sweep over the vocabulary.

    A row's log-likelihood is a scalar, so its gradient is one vector per row: the target's
    head row times d logit / d z (1 - tanh^2 where the head softcaps) minus the same under the
    softmax. Each slice's logits give their part of the log-sum-exp and of that expectation
    (rescaled as the running maximum grows, as flash attention does), so the backward pass
    only scales the kept (rows, hidden) vectors: two products with the head's weights in all,
    where autograd through recomputed slices takes three, and no logits are kept.
    """

    @staticmethod
    def forward(ctx, states, targets, weight, bias, softcap):
        rows = states.shape[0]
        top = states.new_full((rows,), float("-inf"), dtype=torch.float32)
        total = states.new_zeros(rows, dtype=torch.float32)
        expected = states.new_zeros((rows, states.shape[1]), dtype=torch.float32)
        picked = states.new_zeros(rows, dtype=torch.float32)
        slope = states.new_ones(rows, dtype=torch.float32)
        for start in range(0, weight.shape[0], VOCAB_CHUNK):
            stop = min(start + VOCAB_CHUNK, weight.shape[0])
            rows_w = weight[start:stop]
            z = torch.nn.functional.linear(
                states, rows_w, None if bias is None else bias[start:stop]
            ).float()
            if softcap:
                capped = torch.tanh(z / softcap)
                logits, derivative = capped * softcap, 1 - capped.square()
            else:
                logits, derivative = z, None
            new_top = torch.maximum(top, logits.amax(-1))
            shrink = torch.exp(top - new_top)
            e = torch.exp(logits - new_top[:, None])
            total = total * shrink + e.sum(-1)
            weighted = e if derivative is None else e * derivative
            expected = expected * shrink[:, None] + (weighted.to(weight.dtype) @ rows_w).float()
            top = new_top
            inside = (targets >= start) & (targets < stop)
            at = (targets - start).clamp(0, stop - start - 1)[:, None]
            picked = torch.where(inside, logits.gather(1, at)[:, 0], picked)
            if derivative is not None:
                slope = torch.where(inside, derivative.gather(1, at)[:, 0], slope)
        gradient = slope[:, None] * weight[targets].float() - expected / total[:, None]
        ctx.save_for_backward(gradient)
        ctx.dtype = states.dtype
        return picked - (top + total.log())

    @staticmethod
    def backward(ctx, upstream):
        (gradient,) = ctx.saved_tensors
        return (upstream[:, None] * gradient).to(ctx.dtype), None, None, None, None


def _slice_terms(model, states: torch.Tensor, targets: torch.Tensor, start: int, stop: int):
    """One vocabulary slice's log-sum-exp and target logits (0 where the target is outside)."""
    logits = _slice_logits(model, states, start, stop)
    return torch.logsumexp(logits, dim=-1), _target_logits(logits, targets, start, stop)


def token_statistics(
    model, states: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and its Min-K%++ z-score (log p(target) - mu) / sigma per state row, where
    mu and sigma are the mean and standard deviation of log p(z) for z drawn from the row's
    next-token distribution (Zhang et al., 2024).

    Like `token_log_likelihoods`, a vocabulary slice at a time: each slice keeps its largest
    logit m and, over its logits x with y = x - m, the sums of e^y, e^y y and e^y y^2; the
    slices combine at the row's largest logit, giving log-sum-exp, E[x] and Var[x] (= Var of
    log p) without holding rows x vocabulary values.
    """
    target = states.new_zeros(states.shape[0], dtype=torch.float32)
    if not states.shape[0]:
        return target, target.clone()
    parts = []
    for start, stop, logits in _head_slices(model, states):
        target = target + _target_logits(logits, targets, start, stop)
        top = logits.amax(-1)
        y = logits - top[:, None]
        e = y.exp()
        parts.append(torch.stack([top, e.sum(-1), (e * y).sum(-1), (e * y.square()).sum(-1)]))
    top, s, a, b = torch.stack(parts, 2)  # each (rows, slices)
    shift = top - top.amax(1, keepdim=True)  # every slice's sums re-based on the row's max
    w = shift.exp()
    total = (w * s).sum(1)
    first = (w * (a + shift * s)).sum(1) / total
    second = (w * (b + 2 * shift * a + shift.square() * s)).sum(1) / total
    logp = target - (top.amax(1) + total.log())
    mu = first - total.log()  # E[log p] = E[x] - log-sum-exp
    sigma = (second - first.square()).clamp_min(1e-12).sqrt()
    return logp, (logp - mu) / sigma


def _split(values: torch.Tensor, counts: Sequence[int]) -> list[np.ndarray]:
    return [part.numpy() for part in torch.split(values.float().cpu(), list(counts))]


class _Segment:
    """One question's place in a packed pass: its token range and who may attend to whom.

    Inside a segment the prefix is causal and each choice sees the whole prefix and its own
    earlier tokens, never another choice; positions restart at 0 for every segment (at
    `context` after a shared context, which every token sees) and each choice continues from
    the prefix's end, as if it ran alone after the prefix.
    """

    def __init__(
        self, start: int, prefix: int, choices: Sequence[int], device, context: int = 0
    ) -> None:
        owner = torch.tensor([-1] * prefix + [j for j, n in enumerate(choices) for _ in range(n)])
        size = len(owner)
        self.start, self.stop, self.context = start, start + size, context
        self.positions = context + torch.cat(
            [torch.arange(prefix)] + [torch.arange(prefix, prefix + n) for n in choices]
        )
        index = torch.arange(size)
        causal = index[:, None] >= index[None, :]
        allowed = causal & ((owner[None, :] == -1) | (owner[None, :] == owner[:, None]))
        self._allowed = allowed.to(device)
        self._masks: dict[int | None, torch.Tensor] = {}

    def mask(self, window: int | None) -> torch.Tensor:
        """(1, 1, size, context + size) bool: the segment's mask (the shared context's columns
        first), within `window` positions if given."""
        if window not in self._masks:
            allowed = self._allowed
            pos = self.positions.to(allowed.device)
            if window:
                allowed = allowed & ((pos[:, None] - pos[None, :]) < window)
            if self.context:
                before = torch.arange(self.context, device=allowed.device)
                seen = (pos[:, None] - before[None, :]) < (window or pos.max() + 1)
                allowed = torch.cat([seen, allowed], 1)
            self._masks[window] = allowed[None, None]
        return self._masks[window]


_LAYOUT: ContextVar[list[_Segment] | None] = ContextVar("truthprobe_packed_layout", default=None)


@dataclass
class SharedContext:
    """A token prefix every question of a call shares (ICL's demonstrations), run once: its
    keys and values per layer, which every packed segment attends to before its own tokens."""

    tokens: list[int]
    states: dict[int, tuple[torch.Tensor, torch.Tensor]]
    complete: bool = False
    """False while its own pass records the states."""

    def __len__(self) -> int:
        return len(self.tokens)


_CONTEXT: ContextVar[SharedContext | None] = ContextVar("truthprobe_context", default=None)


def _packed_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention of a packed pass, one segment at a time (transformers' attention interface).

    Each segment's attention is computed on its own tensors with its own mask, exactly as it
    would be if the question ran alone; the transformer's matrix products see the whole pack.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layout, context = _LAYOUT.get(), _CONTEXT.get()
    if layout is None:
        raise ScoringError("packed attention called outside a packed pass")
    window = kwargs.pop("sliding_window", None)
    kwargs.pop("is_causal", None)
    if context is not None and not context.complete:
        context.states[module.layer_idx] = (key, value)  # the context's own pass records them
        context = None
    before = context.states[module.layer_idx] if context is not None else None

    def seen(states: torch.Tensor, s: _Segment, n: int) -> torch.Tensor:
        own = states[:, :, s.start : s.stop]
        return own if before is None else torch.cat([before[n], own], 2)

    out = [
        sdpa_attention_forward(
            module, query[:, :, s.start : s.stop], seen(key, s, 0), seen(value, s, 1),
            s.mask(window), is_causal=False, **kwargs,
        )[0]
        for s in layout
    ]  # fmt: skip
    filler = query.shape[2] - layout[-1].stop  # the pass's padding attends to nothing
    if filler:
        out.append(out[-1].new_zeros((out[-1].shape[0], filler, *out[-1].shape[2:])))
    return torch.cat(out, 1), None


class _Slots:
    """Keys and values of up to `n` generations, one row (slot) each, indexed by position after
    the shared context: a generation's own tokens only. The context's keys and values stay
    once in `context` and every slot's queries read them there (`_parts_attention`), so no
    slot copies or re-reads them; a finished generation's slot goes to the next one."""

    def __init__(self, n: int, capacity: int, context: SharedContext | None) -> None:
        self.n, self.capacity, self.context = n, capacity, context
        self.offset = len(context) if context is not None else 0
        self.states: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def layer(self, index: int, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self.states:
            shape = (self.n, key.shape[1], self.capacity, key.shape[3])
            self.states[index] = (key.new_zeros(shape), key.new_zeros(shape))
        return self.states[index]


@dataclass
class _Step:
    """One pass of `generate_greedy`: per generation (slot, start in the pass, tokens, position
    of its first token)."""

    slots: _Slots
    rows: list[tuple[int, int, int, int]]


_STEP: ContextVar[_Step | None] = ContextVar("truthprobe_generation_step", default=None)


def _visible(positions: torch.Tensor, keys: torch.Tensor, window: int | None) -> torch.Tensor:
    """(queries, keys) bool: the key at each position in `keys` is seen from each query position
    (causal, and within the sliding window where the layer has one)."""
    seen = keys[None, :] <= positions[:, None]
    if window:
        seen &= (positions[:, None] - keys[None, :]) < window
    return seen


def _parts_attention(module, query, parts, scaling, softcap=None) -> torch.Tensor:
    """Softmax attention of `query` (B, heads, Q, d) over keys held in parts, as if they were
    concatenated: each part is (keys, values, seen) with keys and values (B or 1, kv heads, L,
    d) and seen (B, Q, L) bool. A part with one row is shared by every query row, whose
    queries then meet its keys in one matrix product (how the shared context is read once for
    all generations). Arithmetic as transformers' eager attention: products in the model's
    dtype, softmax in float32. Returns (B, Q, heads, d)."""
    b, heads, q, d = query.shape
    kv = parts[0][0].shape[1]
    g = heads // kv
    grouped = query.reshape(b, kv, g * q, d)
    scores = []
    for keys, _, seen in parts:
        if keys.shape[0] == 1 and b > 1:
            rows = grouped.transpose(0, 1).reshape(1, kv, b * g * q, d)
            s = (rows @ keys.transpose(2, 3)).reshape(kv, b, g * q, -1).transpose(0, 1)
        else:
            s = grouped @ keys.transpose(2, 3)
        s = s.view(b, kv, g, q, -1) * scaling
        if softcap:
            s = torch.tanh(s / softcap) * softcap
        scores.append(s.masked_fill(~seen[:, None, None], float("-inf")))
    weights = torch.softmax(torch.cat(scores, -1), dim=-1, dtype=torch.float32).to(query.dtype)
    out = None
    for part, w in zip(parts, weights.split([s.shape[-1] for s in scores], -1), strict=True):
        values = part[1]
        if values.shape[0] == 1 and b > 1:
            w = w.transpose(0, 1).reshape(1, kv, b * g * q, -1)
            o = (w @ values).reshape(kv, b, g * q, d).transpose(0, 1)
        else:
            o = w.reshape(b, kv, g * q, -1) @ values
        out = o if out is None else out + o
    assert out is not None
    return out.reshape(b, heads, q, d).transpose(1, 2)


def _generation_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention of a `generate_greedy` pass (transformers' attention interface).

    Every generation's new keys and values go to its slot at their positions; the generations
    that add one token (all but those joining) attend in one call per layer over the shared
    context (once for all of them) and every slot (an idle slot's output is dropped), each
    joining one in a call of its own.
    """
    step = _STEP.get()
    if step is None:
        raise ScoringError("generation attention called outside generate_greedy")
    window = kwargs.get("sliding_window")
    scaling = kwargs.get("scaling") or module.head_dim**-0.5
    slots, device = step.slots, query.device
    keys, values = slots.layer(module.layer_idx, key)
    offset = slots.offset
    context = slots.context.states[module.layer_idx] if slots.context is not None else None
    rows = step.rows
    single = [r for r in rows if r[2] == 1]
    if single:  # one token each: written in one indexed copy
        where = torch.tensor([r[0] for r in single], device=device)
        at = torch.tensor([r[3] - offset for r in single], device=device)
        starts = torch.tensor([r[1] for r in single], device=device)
        keys[where, :, at] = key[0, :, starts].transpose(0, 1)
        values[where, :, at] = value[0, :, starts].transpose(0, 1)
    for slot, start, n, position in rows:
        if n > 1:
            keys[slot, :, position - offset : position - offset + n] = key[0, :, start : start + n]
            values[slot, :, position - offset : position - offset + n] = value[
                0, :, start : start + n
            ]
    out = query.new_empty((1, query.shape[2], query.shape[1], query.shape[3]))

    def parts(positions, slot, length):
        """The (context, own) parts seen from `positions` (B, Q) of `slot` (a slice)."""
        low = max(0, int(positions.min()) - window + 1) if window else 0
        found = []
        if context is not None and low < offset:
            before = torch.arange(low, offset, device=device)
            seen = _visible(positions.reshape(-1), before, window).view(*positions.shape, -1)
            found.append((context[0][:, :, low:offset], context[1][:, :, low:offset], seen))
        own = torch.arange(offset, offset + length, device=device)
        seen = _visible(positions.reshape(-1), own, window).view(*positions.shape, -1)
        found.append((keys[slot, :, :length], values[slot, :, :length], seen))
        return found

    if single:
        positions = torch.full((slots.n, 1), offset, dtype=torch.long, device=device)
        positions[where, 0] = at + offset
        # every slot's whole capacity, the unwritten positions masked: a slice of it would not
        # be one block in memory, and the matrix product would copy it at every layer
        found = parts(positions, slice(None), slots.capacity)
        found[-1][2][:, :, 0] |= ~torch.cat([p[2] for p in found], -1).any(-1)  # idle slots
        asked = query.new_zeros((slots.n, query.shape[1], 1, query.shape[3]))
        asked[where, :, 0] = query[0, :, starts].transpose(0, 1)
        together = _parts_attention(module, asked, found, scaling, kwargs.get("softcap"))
        out[0, starts] = together[where, 0]
    for slot, start, n, position in rows:
        if n > 1:
            positions = torch.arange(position, position + n, device=device)[None]
            found = parts(positions, slice(slot, slot + 1), position - offset + n)
            out[0, start : start + n] = _parts_attention(
                module, query[:, :, start : start + n], found, scaling, kwargs.get("softcap")
            )[0]
    return out, None


def _register_packed_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, _packed_attention)
    AttentionInterface.register(GENERATION_ATTENTION, _generation_attention)


@contextmanager
def _attention(model, name: str, **values) -> Iterator[None]:
    """Route the model's attention through `name` for one pass, with the context variables
    (`_LAYOUT`, `_CONTEXT`, `_STEP`) it reads set to `values`."""
    config = model.config.get_text_config()
    before = config._attn_implementation
    variables = {"layout": _LAYOUT, "context": _CONTEXT, "step": _STEP}
    tokens = [(variables[k], variables[k].set(v)) for k, v in values.items()]
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before
        for variable, token in tokens:
            variable.reset(token)


def _packed(model, layout: list[_Segment], context: SharedContext | None = None):
    """Route the model's attention through `_packed_attention` for one pass."""
    return _attention(model, PACKED_ATTENTION, layout=layout, context=context)


@torch.inference_mode()
def shared_context(loaded: LoadedModel, tokens: Sequence[int]) -> SharedContext:
    """Run `tokens` once and keep every layer's keys and values for `forward_batch(context=)`."""
    context = SharedContext(list(tokens), {})
    check_lengths(loaded, [EncodedItem(list(tokens), [], [])])
    with _packed(loaded.model, [_Segment(0, len(tokens), [], loaded.device)], context):
        loaded.model.get_decoder()(
            input_ids=torch.tensor([list(tokens)], device=loaded.device),
            position_ids=torch.arange(len(tokens), device=loaded.device)[None],
            use_cache=False,
        )
    context.complete = True
    return context


def common_prefix(items: Sequence[EncodedItem]) -> int:
    """Prefix tokens every item shares, leaving each at least its last prefix token (whose
    state predicts its choices' first tokens)."""
    if not items:
        return 0
    shared = len(os.path.commonprefix([it.prefix for it in items]))
    return max(min(shared, min(len(it.prefix) for it in items) - 1), 0)


def _head_blocks(head_function, states: torch.Tensor, targets: torch.Tensor):
    """`head_function(states, targets)` over blocks of exactly `HEAD_ROWS` rows (the last one
    filled with zero rows), so every head product has one shape; its outputs for the real rows,
    concatenated (a tuple of them where it returns a tuple)."""
    n = states.shape[0]
    if not n:
        return head_function(states, targets)
    extra = -n % HEAD_ROWS
    if extra:
        states = torch.cat([states, states.new_zeros((extra, states.shape[1]))])
        targets = torch.cat([targets, targets.new_zeros(extra)])
    blocks = [
        head_function(states[i : i + HEAD_ROWS], targets[i : i + HEAD_ROWS])
        for i in range(0, states.shape[0], HEAD_ROWS)
    ]
    if isinstance(blocks[0], tuple):
        return tuple(torch.cat(parts)[:n] for parts in zip(*blocks, strict=True))
    return torch.cat(blocks)[:n]


@torch.inference_mode()
def forward_batch(
    loaded: LoadedModel,
    items: Sequence[EncodedItem],
    layers: Sequence[int],
    n_choices: int,
    question_scores: bool = False,
    choices: bool = True,
    context: SharedContext | None = None,
) -> BatchOutput:
    """Hidden states and choice log-likelihoods of several questions in one packed pass.

    The questions are packed into one sequence: each is a segment (its prefix, then every
    choice, each choice seeing only the prefix and itself), attention runs per segment
    (`_packed_attention`), the sequence is filled up to a multiple of `pass_tokens` positions
    (the filling attends to nothing and is never read), and the LM head runs only at the
    positions that predict choice tokens, in products of exactly `HEAD_ROWS` rows. Every matrix
    product then has the same shape whichever questions share the pass, so a row's values do
    not depend on them (measured in `tests/test_packing.py` and recorded in each cache). With
    `question_scores`, also every question token's log-probability and Min-K%++ z-score;
    `choices=False` runs the prefixes alone (the question-score pass). With `context`, every
    question continues a shared context (`shared_context`), run once for all of them.
    """
    offset = len(context) if context is not None else 0
    check_lengths(loaded, items, offset)
    model, device = loaded.model, loaded.device
    b, c = len(items), n_choices
    ids: list[int] = []
    layout = []
    for it in items:
        runs = [len(ch) for ch in it.choices] if choices else []
        layout.append(_Segment(len(ids), len(it.prefix), runs, device, offset))
        ids += it.prefix + ([t for ch in it.choices for t in ch] if choices else [])
    size = pass_tokens(loaded)  # every pass the same length, so every product the same shape
    filler = -len(ids) % size
    ids += [loaded.tokenizer.pad_token_id or 0] * filler
    positions = torch.cat([s.positions for s in layout] + [torch.zeros(filler, dtype=torch.long)])
    positions = positions[None].to(device)
    with _packed(model, layout, context):
        out = model.get_decoder()(
            input_ids=torch.tensor([ids], device=device),
            position_ids=positions,
            use_cache=False,
            output_hidden_states=bool(layers),
        )
    final = out.last_hidden_state[0]  # post-norm: what the LM head reads
    hidden = out.hidden_states if layers else ()
    d = final.shape[-1]

    question_at = torch.tensor(
        [s.start + len(it.prefix) - 1 for s, it in zip(layout, items, strict=True)]
    )
    answer_at, answer_slot = [], []  # each choice's last token, and its (question, choice) slot
    head_at, targets, owner = [], [], []  # positions predicting choice tokens
    for i, (s, it) in enumerate(zip(layout, items, strict=True)):
        at = s.start + len(it.prefix)
        for j, ch in enumerate(it.choices if choices else []):
            answer_at.append(at + len(ch) - 1)
            answer_slot.append(i * c + j)
            head_at += [s.start + len(it.prefix) - 1, *range(at, at + len(ch) - 1)]
            targets += ch
            owner += [i * c + j] * len(ch)
            at += len(ch)
    answer_end = torch.zeros((len(layers), b * c, d), dtype=torch.float32)
    question_end = torch.zeros((len(layers), b, d), dtype=torch.float32)
    if layers:
        q_at, a_at = question_at.to(device), torch.tensor(answer_at, dtype=torch.long).to(device)
        slots = torch.tensor(answer_slot, dtype=torch.long)
        for n, k in enumerate(layers):
            question_end[n] = hidden[k][0, q_at].float().cpu()
            answer_end[n, slots] = hidden[k][0, a_at].float().cpu()

    logprob = torch.zeros(b * c, dtype=torch.float32)
    tokens = torch.zeros(b * c, dtype=torch.long)
    if head_at:
        token_logp = _head_blocks(
            lambda x, y: token_log_likelihoods(model, x, y),
            final[torch.tensor(head_at, device=device)],
            torch.tensor(targets, device=device),
        ).cpu()
        logprob.index_add_(0, torch.tensor(owner), token_logp)
        tokens.index_add_(0, torch.tensor(owner), torch.ones(len(owner), dtype=torch.long))

    question_logprob = question_zscore = None
    if question_scores:  # question token t is predicted by prefix position t - 1
        at = [
            (s.start + t - 1, it.prefix[t])
            for s, it in zip(layout, items, strict=True)
            for t in range(*it.question)
        ]
        logp_q, z_q = _head_blocks(
            lambda x, y: token_statistics(model, x, y),
            final[torch.tensor([a for a, _ in at], dtype=torch.long, device=device)],
            torch.tensor([t for _, t in at], dtype=torch.long, device=device),
        )
        counts = [it.n_question_tokens for it in items]
        question_logprob, question_zscore = _split(logp_q, counts), _split(z_q, counts)
    return BatchOutput(
        answer_end=answer_end.numpy().reshape(len(layers), b, c, d),
        question_end=question_end.numpy(),
        logprob=logprob.numpy().reshape(b, c),
        tokens=tokens.numpy().reshape(b, c),
        question_logprob=question_logprob,
        question_zscore=question_zscore,
    )


def pass_tokens(loaded: LoadedModel) -> int:
    """Default tokens per packed pass on the model's device.

    On a CPU, `CPU_PASS_TOKENS` in float32 and twice that in 16-bit, the same bytes of
    activations: measured on a 2-core AMX CPU, items/s peaked there (bf16 2048 tokens: 18.6
    items/s against 15 at 1024 and 16.7 at 4096; float32 1024: 8.1 against 7.4 at 2048). On
    a GPU, as many as `PASS_MEMORY_SHARE` of the memory beside the weights holds for every
    layer's states of the pass (kept for extraction), up to `GPU_PASS_TOKENS`, rounded down to
    a power of two: from the device's total memory rather than what is free now, so that every
    pass on that device and model has the same length (`forward_batch` relies on it).
    """
    device = loaded.device
    element = next(loaded.model.parameters()).element_size()
    if device.type != "cuda":
        return CPU_PASS_TOKENS * 4 // max(min(element, 4), 2)
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    spare = torch.cuda.get_device_properties(device).total_memory - weights
    per_token = 4 * (loaded.n_layers + 1) * loaded.d_model * max(element, 2)
    tokens = min(GPU_PASS_TOKENS, max(CPU_PASS_TOKENS, PASS_MEMORY_SHARE * spare / per_token))
    return 1 << (int(tokens).bit_length() - 1)  # a power of two: the same on every such GPU


def packs(items: Sequence[EncodedItem], tokens: int, max_items: int = 0) -> list[list[int]]:
    """Indices of `items`, in order, cut into passes of at most `tokens` tokens (an item longer
    than that runs alone) and, when given, at most `max_items` items."""
    out: list[list[int]] = []
    size = 0
    for i, item in enumerate(items):
        full = len(out[-1]) >= max_items if (out and max_items) else False
        over = size + item.n_tokens > tokens
        if not out or full or (over and out[-1]):
            out.append([])
            size = 0
        out[-1].append(i)
        size += item.n_tokens
    return out


def score_continuations(
    loaded: LoadedModel,
    items: Sequence[EncodedItem],
    n_choices: int,
    batch_size: int = 0,
    progress: bool = True,
    share_prefix: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed continuation log-likelihoods and character counts per (item, choice).

    Items run through `forward_batch` (no hidden states) in length-sorted passes packed up to
    the device's token budget (`pass_tokens`), at most `batch_size` items each when not 0.
    Where the items' prompts begin with the same `SHARED_CONTEXT_TOKENS` tokens or more (ICL's
    demonstrations), those run once (`shared_context`) and every item continues them, unless
    `share_prefix` is False (each item's whole prompt runs; for cross-checks and benchmarks).
    """
    shared = common_prefix(items)
    context = None
    if share_prefix and shared >= SHARED_CONTEXT_TOKENS:
        context = shared_context(loaded, items[0].prefix[:shared])
        items = [it.after(shared) for it in items]
    order = sorted(range(len(items)), key=lambda i: -items[i].n_tokens)
    logprob = np.zeros((len(items), n_choices))
    chars = np.zeros((len(items), n_choices), np.int64)
    groups = packs([items[i] for i in order], pass_tokens(loaded), batch_size)
    show = progress and len(groups) >= 4
    for group in tqdm(groups, desc="score choices", unit="pass", disable=not show):
        rows = [order[i] for i in group]
        out = forward_batch(loaded, [items[i] for i in rows], [], n_choices, context=context)
        logprob[rows] = out.logprob
        for i in rows:
            chars[i, : len(items[i].choice_chars)] = items[i].choice_chars
    return logprob, chars


def choice_log_likelihoods(loaded: LoadedModel, items: Sequence[EncodedItem]) -> list:
    """Differentiable summed log-likelihood of every choice, in one packed pass.

    The items are packed as in `forward_batch` (each prefix once, every choice after it,
    attention per item), so training (QLoRA's) runs each prompt once rather than once per
    choice and holds its activations once, and scores exactly what evaluation scores. Returns
    one tensor of per-choice scores per item; only the rows that predict continuation tokens
    go through the LM head. The pass and the head's rows are filled up to a multiple of
    `TRAINING_ROUND` (the filling attends to nothing and is never scored).
    """
    check_lengths(loaded, items)
    model, device = loaded.model, loaded.device
    ids: list[int] = []
    layout, head_at, targets = [], [], []
    for it in items:
        segment = _Segment(len(ids), len(it.prefix), [len(ch) for ch in it.choices], device)
        layout.append(segment)
        ids += it.prefix + [t for ch in it.choices for t in ch]
        at = segment.start + len(it.prefix)
        for ch in it.choices:
            head_at += [segment.start + len(it.prefix) - 1, *range(at, at + len(ch) - 1)]
            targets += ch
            at += len(ch)
    counts = [len(ch) for it in items for ch in it.choices]
    owner = [k for k, n in enumerate(counts) for _ in range(n)]
    filler = -len(ids) % TRAINING_ROUND  # few pass lengths: few kernels
    ids += [loaded.tokenizer.pad_token_id or 0] * filler
    positions = torch.cat([s.positions for s in layout] + [torch.zeros(filler, dtype=torch.long)])
    with _packed(model, layout):
        states = model.get_decoder()(
            input_ids=torch.tensor([ids], device=device),
            position_ids=positions[None].to(device),
            use_cache=False,
        ).last_hidden_state[0]
    extra = -len(head_at) % TRAINING_ROUND  # head rows too; extra rows read position 0, unused
    token_logp = token_log_likelihoods(
        model,
        states[torch.tensor(head_at + [0] * extra, device=device)],
        torch.tensor(targets + [0] * extra, device=device),
    )[: len(head_at)]
    per_choice = token_logp.new_zeros(len(counts)).index_add(
        0, torch.tensor(owner, device=token_logp.device), token_logp
    )
    return list(torch.split(per_choice, [len(it.choices) for it in items]))


@torch.inference_mode()
def forward_per_sequence(
    loaded: LoadedModel,
    items: Sequence[EncodedItem],
    layers: Sequence[int],
    n_choices: int,
    runner: SequenceRunner | None = None,
    question_scores: bool = False,
) -> BatchOutput:
    """Reference path: one full forward per (question, choice), as the paper's code does.

    Independent of `forward_batch` (no KV cache, no padding, full LM head), so it cross-checks
    it, serves as the benchmark's baseline, and carries the nnsight / TransformerLens backends.
    """
    runner = runner or hf_runner(loaded)
    b, n_layers = len(items), len(layers)
    answer = np.zeros((n_layers, b, n_choices, loaded.d_model), np.float32)
    question = np.zeros((n_layers, b, loaded.d_model), np.float32)
    logprob = np.zeros((b, n_choices), np.float32)
    tokens = np.zeros((b, n_choices), np.int64)
    question_logprob: list[np.ndarray] = []
    question_zscore: list[np.ndarray] = []
    for i, item in enumerate(items):
        p = len(item.prefix)
        for j, ch in enumerate(item.choices):
            ids = torch.tensor([item.prefix + ch], device=loaded.device)
            hidden, logits = runner(ids)
            answer[:, i, j] = torch.stack([hidden[k][-1] for k in layers]).float().cpu().numpy()
            if j == 0:
                question[:, i] = torch.stack([hidden[k][p - 1] for k in layers]).float().cpu()
            every = torch.log_softmax(logits.float(), -1)  # the full head at every position
            if j == 0 and question_scores:
                lo, hi = item.question
                full = every[lo - 1 : hi - 1]
                target = full.gather(
                    1, torch.tensor(item.prefix[lo:hi], device=full.device)[:, None]
                )
                mu = (full.exp() * full).sum(-1, keepdim=True)
                sigma = ((full.exp() * (full - mu).square()).sum(-1, keepdim=True)).sqrt()
                question_logprob.append(target[:, 0].cpu().numpy())
                question_zscore.append(((target - mu) / sigma)[:, 0].cpu().numpy())
            logp = every[p - 1 : p - 1 + len(ch)]
            logprob[i, j] = logp.gather(1, torch.tensor(ch, device=logp.device)[:, None]).sum()
            tokens[i, j] = len(ch)
    scored = (question_logprob, question_zscore) if question_scores else (None, None)
    return BatchOutput(answer, question, logprob, tokens, *scored)


def _greedy_tokens(model, states: torch.Tensor) -> torch.Tensor:
    """Each row's most likely next token (the first of equal maxima, as `argmax`), a
    vocabulary slice at a time like `token_log_likelihoods`: rows x vocabulary logits are
    never held."""
    best = index = None
    for start, _, logits in _head_slices(model, states):
        value, where = logits.max(-1)
        if best is None:
            best, index = value, where
        else:
            better = value > best  # strictly: an equal value in a later slice keeps the first
            best, index = (
                torch.where(better, value, best),
                torch.where(better, where + start, index),
            )
    assert index is not None
    return index


def _stop_tokens(loaded: LoadedModel) -> set[int]:
    """Token ids that end a generation (the model's generation config, else its tokenizer's)."""
    ids = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = loaded.tokenizer.eos_token_id
    return set([ids] if isinstance(ids, int) else (ids or []))


@dataclass
class _Generation:
    """One prompt being continued: its slot, what it feeds the next pass, what it made."""

    index: int
    feed: list[int]
    slot: int = -1
    position: int = 0
    """Position of the next token it feeds (its slot holds keys and values up to here)."""
    tokens: list[int] = field(default_factory=list)


def _slot_count(loaded: LoadedModel, capacity: int, wanted: int) -> int:
    """How many generations decode together: `wanted`, fewer where their slots' keys and
    values would take more than `GENERATION_MEMORY`."""
    config = loaded.model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    width = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(loaded.model.parameters()).element_size()
    per_slot = 2 * loaded.n_layers * heads * width * capacity * max(element, 2)
    return max(1, min(wanted, GENERATION_MEMORY // per_slot))


@torch.inference_mode()
def generate_greedy(
    loaded: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    batch_size: int = 0,
    progress: bool = True,
    share_prefix: bool = True,
    decided: Callable[[str], bool] | None = None,
) -> list[str]:
    """Greedy completions of `prompts`, each cut at its first stop string.

    Up to `batch_size` prompts (`GENERATE_BATCH` when 0, fewer where their keys and values
    would pass `GENERATION_MEMORY`) decode together: each pass carries the next token of every
    running prompt (a prompt's own tokens when it joins), each prompt's keys and values live in
    a slot of their own (`_Slots`), and the one-token steps attend in one call per layer
    (`_generation_attention`), so no padding enters any prompt's attention. A prompt stops on
    its own (an end token, a stop string, `max_new_tokens`) and the next waiting prompt takes
    its slot at the next pass. A prefix every prompt shares of `SHARED_CONTEXT_TOKENS` or more
    (CoT's demonstrations) runs once (`shared_context`) unless `share_prefix` is False. The LM
    head runs at each prompt's last position only, a vocabulary slice at a time.

    `decided(text)`, checked whenever a new token holds a line break, ends a generation early
    once whatever reads the completion can no longer change its verdict (CoT's answer line is
    complete): tokens after it would only be discarded.
    """
    tokenizer, model, device = loaded.tokenizer, loaded.model, loaded.device
    encoded = [tokenizer(p, add_special_tokens=True).input_ids for p in prompts]
    if not encoded:
        return []
    shared = common_prefix([EncodedItem(ids, [], []) for ids in encoded])
    context = None
    if share_prefix and shared >= SHARED_CONTEXT_TOKENS:
        context = shared_context(loaded, encoded[0][:shared])
    else:
        shared = 0
    limit, ends = max_positions(loaded), _stop_tokens(loaded)
    for i, ids in enumerate(encoded):
        if len(ids) + max_new_tokens > limit:
            raise ScoringError(
                f"prompt {i}: {len(ids)} tokens and {max_new_tokens} new ones are more than "
                f"this model's {limit} positions"
            )
    capacity = max(len(ids) for ids in encoded) - shared + max_new_tokens
    n = _slot_count(loaded, capacity, min(batch_size or GENERATE_BATCH, len(encoded)))
    slots = _Slots(n, capacity, context)
    free = list(range(n))[::-1]
    waiting = deque(_Generation(i, ids[shared:], position=shared) for i, ids in enumerate(encoded))
    running: list[_Generation] = []
    budget = pass_tokens(loaded)
    tail = 2 * max((len(s) for s in stop), default=0) + 2  # tokens that can hold a stop string
    out: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generate", unit="item", disable=not progress)
    while waiting or running:
        fed = sum(len(g.feed) for g in running)
        while waiting and free and (not running or fed + len(waiting[0].feed) <= budget):
            running.append(waiting.popleft())
            running[-1].slot = free.pop()
            fed += len(running[-1].feed)
        rows, ids, positions = [], [], []
        for g in running:
            rows.append((g.slot, len(ids), len(g.feed), g.position))
            positions += range(g.position, g.position + len(g.feed))
            ids += g.feed
        with _attention(model, GENERATION_ATTENTION, step=_Step(slots, rows)):
            states = model.get_decoder()(
                input_ids=torch.tensor([ids], device=device),
                position_ids=torch.tensor([positions], device=device),
                use_cache=False,
            ).last_hidden_state[0]
        last = torch.tensor([start + size - 1 for _, start, size, _ in rows], device=device)
        chosen = _greedy_tokens(model, states[last]).tolist()
        still = []
        for g, token in zip(running, chosen, strict=True):
            g.position += len(g.feed)
            done = token in ends
            if not done:
                g.tokens.append(token)
                g.feed = [token]
                recent = tokenizer.decode(g.tokens[-tail:])
                done = (
                    len(g.tokens) >= max_new_tokens
                    or any(s in recent for s in stop)
                    or (
                        decided is not None
                        and "\n" in tokenizer.decode([token])
                        and decided(tokenizer.decode(g.tokens, skip_special_tokens=True))
                    )
                )
            if done:
                text = tokenizer.decode(g.tokens, skip_special_tokens=True)
                cuts = [text.find(s) for s in stop if s in text]
                out[g.index] = text[: min(cuts)] if cuts else text
                free.append(g.slot)
                bar.update()
            else:
                still.append(g)
        running = still
    bar.close()
    return out


_register_packed_attention()
