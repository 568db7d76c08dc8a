"""The 0.5.0 extraction and generation paths, frozen here as the benchmarks' baselines (not
used by the package).

`forward_batch` of truthprobe 0.5.0: prefixes left-padded in one batch, run once with a KV
cache that is repeated per choice; the choices' states depend on which questions share the
batch (padding changes the kernels' shapes), which is why 0.5.0 fixed batch membership.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from truthprobe.models import LoadedModel
from truthprobe.scoring import (
    BatchOutput,
    EncodedItem,
    _split,
    check_lengths,
)


def _cache_argument(decoder) -> str:
    """Name of the KV-cache argument (`cache` in recent transformers, `past_key_values` before)."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _head_log_softmax(model, states: torch.Tensor, chunk: int):
    """(row offset, log-softmax over the vocabulary) for chunks of `chunk` state rows."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    for start in range(0, states.shape[0], chunk):
        logits = head(states[start : start + chunk]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        yield start, torch.log_softmax(logits, dim=-1)


def token_statistics(model, states: torch.Tensor, targets: torch.Tensor):
    """0.5.0's Min-K% statistics: full-vocabulary log-softmax of 32 rows at a time."""
    logps, zscores = [], []
    for start, logp in _head_log_softmax(model, states, 32):
        target = logp.gather(1, targets[start : start + 32, None])[:, 0]
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
        logps.append(target)
        zscores.append((target - mu) / sigma)
    return torch.cat(logps), torch.cat(zscores)


def token_log_likelihoods(model, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0.5.0's: the full-vocabulary log-softmax of 256 rows at a time."""
    out = [
        logp.gather(1, targets[start : start + 256, None])[:, 0]
        for start, logp in _head_log_softmax(model, states, 256)
    ]
    return torch.cat(out) if out else states.new_zeros(0, dtype=torch.float32)


@torch.inference_mode()
def forward_batch_050(
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


@torch.inference_mode()
def generate_greedy_050(
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


def score_continuations_050(
    loaded: LoadedModel, items: Sequence[EncodedItem], n_choices: int, batch_size: int = 4
) -> np.ndarray:
    """0.5.0's `score_continuations` (ICL's scorer): length-sorted batches of 4 whole prompts
    through `forward_batch_050`; the summed log-likelihoods."""
    order = sorted(range(len(items)), key=lambda i: -items[i].n_tokens)
    logprob = np.zeros((len(items), n_choices))
    for lo in range(0, len(order), batch_size):
        rows = order[lo : lo + batch_size]
        logprob[rows] = forward_batch_050(loaded, [items[i] for i in rows], [], n_choices).logprob
    return logprob


def choice_log_likelihoods_050(loaded: LoadedModel, items: Sequence[EncodedItem]) -> list:
    """0.5.0's differentiable scores (what QLoRA trained through): one right-padded sequence
    per (item, choice), the prompt run once per choice, 0.5.0's full-vocabulary head."""
    model, device = loaded.model, loaded.device
    pad = loaded.tokenizer.pad_token_id or 0
    sequences = [(it.prefix + ch, len(it.prefix), ch) for it in items for ch in it.choices]
    length = max(len(s) for s, _, _ in sequences)
    ids = torch.full((len(sequences), length), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (seq, _, _) in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    states = model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device))
    states = states.last_hidden_state
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
    return list(torch.split(per_choice, [len(it.choices) for it in items]))
