"""The scoring engine: every forward pass the package makes goes through this module.

- `encode` / `encode_texts`: a prompt prefix (with BOS) and each choice's continuation, tokenised
  separately, so the prefix tokens are identical for every choice and run once.
- `forward_batch`: the fast path. The prefix runs once per question with a KV cache, the cache
  is repeated per choice and only the short continuations run on top. The LM head (262k
  vocabulary on Gemma 3: more work than the transformer body) runs only at the positions that
  predict continuation tokens. Returns hidden states at each choice's last token and at the
  prompt's last token, and each choice's summed log-likelihood; with `question_scores`, also
  every question token's log-probability and its Min-K%++ z-score from the same prefix pass
  (`truthprobe.min_k`).
- `score_continuations`: `forward_batch` over many items in length-sorted batches, scores only
  (zero-shot with k demonstrations: ICL, and evaluation of a QLoRA-adapted model).
- `choice_log_likelihoods`: the same log-likelihoods, differentiable (QLoRA trains through it).
- `forward_per_sequence`: the reference path, one full forward per (question, choice) through a
  backend runner (transformers, nnsight, TransformerLens), to cross-check the fast path.
- `generate_greedy`: batched greedy generation for chain-of-thought.

Extraction, zero-shot, ICL, QLoRA and CoT import from here; this module imports nothing from
them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from truthprobe.backends import SequenceRunner, hf_runner
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel
from truthprobe.prompts import PromptTemplate, choice_chars

#: Rows of LM-head output computed at once (each row is a full-vocabulary logit vector).
HEAD_CHUNK = 256
#: The same for Min-K% statistics, which hold several vocabulary-sized temporaries per row
#: (on Gemma 3's 262k vocabulary, 32 rows keep them near 0.2 GB).
STATS_CHUNK = 32


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


def check_lengths(loaded: LoadedModel, items: Sequence[EncodedItem]) -> None:
    """Refuse items longer than the model's positions before anything that size is allocated."""
    limit = max_positions(loaded)
    for item in items:
        if item.longest > limit:
            raise ScoringError(
                f"item {item.item_id!r}: its prompt and longest choice are {item.longest} "
                f"tokens, more than this model's {limit} positions"
            )


def count_tokens(loaded: LoadedModel, text: str) -> int:
    """Tokens of `text` as a prompt (special tokens included), for context-length budgets."""
    return len(loaded.tokenizer(text, add_special_tokens=True).input_ids)


def _cache_argument(decoder) -> str:
    """Name of the KV-cache argument (`cache` in recent transformers, `past_key_values` before)."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _head_log_softmax(model, states: torch.Tensor, chunk: int = HEAD_CHUNK):
    """(row offset, log-softmax over the vocabulary) for chunks of `chunk` state rows."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    for start in range(0, states.shape[0], chunk):
        logits = head(states[start : start + chunk]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        yield start, torch.log_softmax(logits, dim=-1)


def token_log_likelihoods(model, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row of final (post-norm) hidden states, in row chunks.

    Differentiable (QLoRA trains through it); only these rows go through the LM head.
    """
    out = [
        logp.gather(1, targets[start : start + HEAD_CHUNK, None])[:, 0]
        for start, logp in _head_log_softmax(model, states)
    ]
    return torch.cat(out) if out else states.new_zeros(0, dtype=torch.float32)


def token_statistics(
    model, states: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and its Min-K%++ z-score (log p(target) - mu) / sigma per state row, where
    mu and sigma are the mean and standard deviation of log p(z) for z drawn from the row's
    next-token distribution (Zhang et al., 2024)."""
    logps, zscores = [], []
    for start, logp in _head_log_softmax(model, states, STATS_CHUNK):
        target = logp.gather(1, targets[start : start + STATS_CHUNK, None])[:, 0]
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
        logps.append(target)
        zscores.append((target - mu) / sigma)
    if not logps:
        empty = states.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(zscores)


def _split(values: torch.Tensor, counts: Sequence[int]) -> list[np.ndarray]:
    return [part.numpy() for part in torch.split(values.float().cpu(), list(counts))]


@torch.inference_mode()
def forward_batch(
    loaded: LoadedModel,
    items: Sequence[EncodedItem],
    layers: Sequence[int],
    n_choices: int,
    question_scores: bool = False,
) -> BatchOutput:
    """Hidden states and choice log-likelihoods for a batch, prefix computed once per question.

    Prefixes are left-padded so every question's last token sits at the same position and the
    continuations follow it directly. In bfloat16 the padding (which other questions share the
    batch) changes a row's values slightly, which is why the activation cache fixes batch
    membership per dataset.
    """
    check_lengths(loaded, items)
    model, device = loaded.model, loaded.device
    pad = loaded.tokenizer.pad_token_id or 0
    b, c = len(items), n_choices
    prefix_len = max(len(it.prefix) for it in items)
    cont_len = max(len(ch) for it in items for ch in it.choices)

    prefix_ids = torch.full((b, prefix_len), pad, dtype=torch.long)
    prefix_mask = torch.zeros((b, prefix_len), dtype=torch.long)
    for i, it in enumerate(items):  # left padding: every prefix ends at the same position
        prefix_ids[i, prefix_len - len(it.prefix) :] = torch.tensor(it.prefix)
        prefix_mask[i, prefix_len - len(it.prefix) :] = 1
    cont_ids = torch.full((b * c, cont_len), pad, dtype=torch.long)
    cont_mask = torch.zeros((b * c, cont_len), dtype=torch.long)
    lengths = torch.ones(b * c, dtype=torch.long)  # missing choices: one dummy token
    cont_mask[:, 0] = 1
    for i, it in enumerate(items):
        for j, ch in enumerate(it.choices):
            cont_ids[i * c + j, : len(ch)] = torch.tensor(ch)
            cont_mask[i * c + j, : len(ch)] = 1
            lengths[i * c + j] = len(ch)

    decoder = model.get_decoder()  # embeddings + blocks + final norm, without the LM head
    first = decoder(
        input_ids=prefix_ids.to(device),
        attention_mask=prefix_mask.to(device),
        use_cache=True,
        output_hidden_states=True,
    )
    d = first.hidden_states[-1].shape[-1]
    empty = first.hidden_states[-1].new_zeros((0, b, d))  # no layers asked: scores only (ICL)
    question_end = torch.stack([first.hidden_states[k][:, -1] for k in layers]) if layers else empty
    prefix_last = first.hidden_states[-1][:, -1]  # post-norm: predicts each first choice token
    question_logprob = question_zscore = None
    if question_scores:  # question token t is predicted by prefix position t - 1
        at = [
            (i, prefix_len - len(it.prefix) + t - 1, it.prefix[t])
            for i, it in enumerate(items)
            for t in range(*it.question)
        ]
        rows_q = torch.tensor([a[0] for a in at], dtype=torch.long)
        cols_q = torch.tensor([a[1] for a in at], dtype=torch.long)
        targets_q = torch.tensor([a[2] for a in at], dtype=torch.long, device=device)
        states_q = first.hidden_states[-1][rows_q.to(device), cols_q.to(device)]
        logp_q, z_q = token_statistics(model, states_q, targets_q)
        counts = [it.n_question_tokens for it in items]
        question_logprob, question_zscore = _split(logp_q, counts), _split(z_q, counts)
    cache = first.cache if "cache" in first else first.past_key_values  # renamed in 5.x
    cache.batch_repeat_interleave(c)
    second = decoder(
        input_ids=cont_ids.to(device),
        attention_mask=torch.cat([prefix_mask.repeat_interleave(c, 0), cont_mask], 1).to(device),
        use_cache=False,
        output_hidden_states=True,
        **{_cache_argument(decoder): cache},
    )
    rows = torch.arange(b * c, device=device)
    last = (lengths - 1).to(device)
    answer_end = (
        torch.stack([second.hidden_states[k][rows, last] for k in layers])
        if layers
        else empty.new_zeros((0, b * c, d))
    )

    # Token t of a continuation is predicted by position t-1 (t = 0: the prefix's last token).
    exists = torch.zeros(b * c, dtype=torch.bool)
    for i, it in enumerate(items):
        exists[i * c : i * c + len(it.choices)] = True
    row_idx, tok_idx = torch.nonzero(cont_mask.bool() & exists[:, None], as_tuple=True)
    final = second.hidden_states[-1]
    later = tok_idx > 0
    states = torch.empty((row_idx.numel(), final.shape[-1]), dtype=final.dtype, device=device)
    states[~later.to(device)] = prefix_last[(row_idx[~later] // c).to(device)]
    states[later.to(device)] = final[row_idx[later].to(device), (tok_idx[later] - 1).to(device)]
    token_logp = token_log_likelihoods(model, states, cont_ids[row_idx, tok_idx].to(device)).cpu()
    logprob = torch.zeros(b * c, dtype=torch.float32).index_add_(0, row_idx, token_logp)

    tokens = torch.where(exists, lengths, 0)
    return BatchOutput(
        answer_end=answer_end.float().cpu().numpy().reshape(len(layers), b, c, d),
        question_end=question_end.float().cpu().numpy(),
        logprob=logprob.numpy().reshape(b, c),
        tokens=tokens.numpy().reshape(b, c),
        question_logprob=question_logprob,
        question_zscore=question_zscore,
    )


def score_continuations(
    loaded: LoadedModel,
    items: Sequence[EncodedItem],
    n_choices: int,
    batch_size: int = 4,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed continuation log-likelihoods and character counts per (item, choice).

    Items run in length-sorted batches through `forward_batch` without hidden states.
    """
    order = sorted(range(len(items)), key=lambda i: -items[i].n_tokens)
    logprob = np.zeros((len(items), n_choices))
    chars = np.zeros((len(items), n_choices), np.int64)
    starts = range(0, len(order), batch_size)
    show = progress and len(starts) >= 4
    for lo in tqdm(starts, desc="score choices", unit="batch", disable=not show):
        rows = order[lo : lo + batch_size]
        out = forward_batch(loaded, [items[i] for i in rows], [], n_choices)
        logprob[rows] = out.logprob
        for i in rows:
            chars[i, : len(items[i].choice_chars)] = items[i].choice_chars
    return logprob, chars


def choice_log_likelihoods(loaded: LoadedModel, items: Sequence[EncodedItem]) -> list:
    """Differentiable summed log-likelihood of every choice, one full sequence per choice.

    Returns one tensor of per-choice scores per item. Only the rows that predict continuation
    tokens go through the LM head.
    """
    model, device = loaded.model, loaded.device
    pad = loaded.tokenizer.pad_token_id or 0
    sequences = [(it.prefix + ch, len(it.prefix), ch) for it in items for ch in it.choices]
    length = max(len(s) for s, _, _ in sequences)
    ids = torch.full((len(sequences), length), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (seq, _, _) in enumerate(sequences):  # right padding: positions stay natural
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    hidden = model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device))
    states = hidden.last_hidden_state
    rows, cols, targets = [], [], []
    for i, (_, p, ch) in enumerate(sequences):
        rows += [i] * len(ch)
        cols += list(range(p - 1, p - 1 + len(ch)))
        targets += ch
    picked = states[torch.tensor(rows), torch.tensor(cols)]
    token_logp = token_log_likelihoods(model, picked, torch.tensor(targets, device=picked.device))
    per_choice = torch.zeros(len(sequences), device=token_logp.device).index_add(
        0, torch.tensor(rows, device=token_logp.device), token_logp
    )
    out, k = [], 0
    for it in items:
        out.append(per_choice[k : k + len(it.choices)])
        k += len(it.choices)
    return out


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


@torch.inference_mode()
def generate_greedy(
    loaded: LoadedModel,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    batch_size: int = 8,
    progress: bool = True,
) -> list[str]:
    """Greedy completions of `prompts`, cut at the first stop string; length-sorted batches."""
    tokenizer, model, device = loaded.tokenizer, loaded.model, loaded.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [tokenizer(p, add_special_tokens=True).input_ids for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    starts = range(0, len(order), batch_size)
    for lo in tqdm(starts, desc="generate", unit="batch", disable=not progress or len(starts) < 2):
        rows = order[lo : lo + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(rows):  # left padding: every prompt ends at the same position
            ids[j, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[j, width - len(encoded[i]) :] = 1
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
            stop_strings=list(stop) or None,
            tokenizer=tokenizer,
        )
        for j, i in enumerate(rows):
            text = tokenizer.decode(generated[j, width:], skip_special_tokens=True)
            cuts = [text.find(s) for s in stop if s in text]
            out[i] = text[: min(cuts)] if cuts else text
    return out
