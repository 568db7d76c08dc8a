"""Extraction: hidden states at every choice's last token and at the question's last token.

The fast path (`forward_batch`) runs the question prefix once per question with a KV cache,
repeats that cache for each choice, and runs only the short continuations on top. The LM head
(262k-vocabulary on Gemma 3: more work than the transformer body) runs only at the positions
that predict continuation tokens, giving each choice's summed log-likelihood for the zero-shot
baseline. Batches are length-sorted; prefixes are left-padded so every question's last token
sits at the same position and continuations follow it directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from truthprobe.activations.cache import ActivationCache, CacheError, CacheSpec, Storage
from truthprobe.data import Dataset, Question
from truthprobe.errors import TruthprobeError
from truthprobe.models import LoadedModel
from truthprobe.prompts import PromptTemplate, default_template, get_template

Backend = Literal["hf", "nnsight", "transformer_lens"]
#: Rows of LM-head output computed at once (each row is a full-vocabulary logit vector).
HEAD_CHUNK = 256


class ExtractError(TruthprobeError, ValueError):
    """An extraction request that cannot be carried out (bad layer index, no choices, ...)."""


@dataclass(frozen=True)
class EncodedItem:
    """Token ids of one question: the shared prefix (with BOS) and each choice's continuation."""

    prefix: list[int]
    choices: list[list[int]]
    choice_chars: list[int]

    @property
    def n_tokens(self) -> int:
        return len(self.prefix) + sum(len(c) for c in self.choices)


@dataclass
class BatchOutput:
    """Per-question outputs of one batch (float32 numpy arrays)."""

    answer_end: np.ndarray  # (layers, batch, choices, d_model)
    question_end: np.ndarray  # (layers, batch, d_model)
    logprob: np.ndarray  # (batch, choices); 0 where a choice does not exist
    tokens: np.ndarray  # (batch, choices) int


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract and where. `truthprobe extract --help` is built from these fields."""

    dataset: str = "arc"
    """Dataset name (arc, mmlu, strategyqa, gsm8k) or a .jsonl path."""
    model: str = "default"
    """`default` (embedded Gemma 3 270M), a Hugging Face id, or a local path."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    """Compute dtype; `auto` = bf16 where the hardware has it natively."""
    device: str = "auto"
    template: str | None = None
    """Prompt template name; None picks the paper's template for the dataset."""
    layers: tuple[int, ...] | None = None
    """Hidden-state indices to keep (0 = embeddings); None keeps all."""
    limit: int | None = None
    """Only the first N records (quick looks and tests)."""
    annotated_only: bool = False
    """ARC: only records with hardness annotations (the 5,120 the paper's measures rate)."""
    measure: str | None = None
    """Only records this hardness measure rates (with `max_per_stratum`: a balanced subset)."""
    max_per_stratum: int | None = None
    """At most this many records per easy / medium / hard stratum of `measure`, drawn with
    `subset_seed`; keeps a default run small while every stratum stays represented."""
    subset_seed: int = 0
    batch_size: int = 8
    """Questions per forward pass."""
    storage: Storage = "bfloat16"
    cache_dir: str = "activations"
    cache_path: str | None = None
    """Explicit output file; default `<cache_dir>/<model-slug>/<dataset>-<template>.h5`."""
    backend: Backend = "hf"
    source: Literal["auto", "local", "hub"] = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


def encode(tokenizer, template: PromptTemplate, record: Question) -> EncodedItem:
    """Tokenise a record's prompt prefix and its choices' continuations."""
    return encode_texts(
        tokenizer, template.prefix(record), template.continuations(record), record.id
    )


def encode_texts(tokenizer, prefix: str, continuations: Sequence[str], item_id: str) -> EncodedItem:
    """Tokenise prefix (with special tokens) and continuations (without) separately.

    Tokenising separately guarantees that the prefix tokens are identical for every choice,
    which is what lets the prefix run once.
    """
    prefix_ids = tokenizer(prefix, add_special_tokens=True).input_ids
    choices = [tokenizer(t, add_special_tokens=False).input_ids for t in continuations]
    for text, ids in zip(continuations, choices, strict=True):
        if not ids:
            raise ExtractError(f"record {item_id!r}: choice {text!r} tokenises to nothing")
    return EncodedItem(prefix_ids, choices, [len(t) for t in continuations])


def _cache_argument(decoder) -> str:
    """Name of the KV-cache argument (`cache` in recent transformers, `past_key_values` before)."""
    import inspect

    return (
        "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    )


def _decoder(model):
    """The transformer body (embeddings + blocks + final norm) without the LM head."""
    return model.get_decoder()


def token_log_likelihoods(model, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row of final (post-norm) hidden states, in row chunks.

    Differentiable (QLoRA trains through it); only these rows go through the LM head.
    """
    head = model.get_output_embeddings()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    out = []
    for start in range(0, states.shape[0], HEAD_CHUNK):
        logits = head(states[start : start + HEAD_CHUNK]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        logp = torch.log_softmax(logits, dim=-1)
        out.append(logp.gather(1, targets[start : start + HEAD_CHUNK, None])[:, 0])
    return torch.cat(out) if out else states.new_zeros(0, dtype=torch.float32)


@torch.inference_mode()
def forward_batch(
    loaded: LoadedModel, items: Sequence[EncodedItem], layers: Sequence[int], n_choices: int
) -> BatchOutput:
    """Hidden states and choice log-likelihoods for a batch, prefix computed once per question."""
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

    decoder = _decoder(model)
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
    )


#: Runs one full sequence (1, T) and returns (hidden states 0..L each (T, d_model), logits (T, V)).
SequenceRunner = Callable[[torch.Tensor], tuple[Sequence[torch.Tensor], torch.Tensor]]


def hf_runner(loaded: LoadedModel) -> SequenceRunner:
    """Plain transformers forward with `output_hidden_states` and the full LM head."""

    def run(ids: torch.Tensor) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        out = loaded.model(input_ids=ids, output_hidden_states=True)
        return [h[0] for h in out.hidden_states], out.logits[0]

    return run


@torch.inference_mode()
def forward_per_sequence(
    loaded: LoadedModel,
    items: Sequence[EncodedItem],
    layers: Sequence[int],
    n_choices: int,
    runner: SequenceRunner | None = None,
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
    for i, item in enumerate(items):
        p = len(item.prefix)
        for j, ch in enumerate(item.choices):
            ids = torch.tensor([item.prefix + ch], device=loaded.device)
            hidden, logits = runner(ids)
            answer[:, i, j] = torch.stack([hidden[k][-1] for k in layers]).float().cpu().numpy()
            if j == 0:
                question[:, i] = torch.stack([hidden[k][p - 1] for k in layers]).float().cpu()
            logp = torch.log_softmax(logits.float(), -1)[p - 1 : p - 1 + len(ch)]
            logprob[i, j] = logp.gather(1, torch.tensor(ch, device=logp.device)[:, None]).sum()
            tokens[i, j] = len(ch)
    return BatchOutput(answer, question, logprob, tokens)


@dataclass
class ExtractResult:
    """Where the cache is and what this call did."""

    path: Path
    rows_written: int
    rows_total: int
    seconds: float
    tokens: int = 0
    notes: list[str] = field(default_factory=list)


def default_cache_path(
    config: ExtractConfig, loaded: LoadedModel, template: PromptTemplate
) -> Path:
    if config.cache_path:
        return Path(config.cache_path)
    name = Path(config.dataset).stem if config.dataset.endswith(".jsonl") else config.dataset
    suffix = f"-limit{config.limit}" if config.limit else ""
    suffix += "-annotated" if config.annotated_only else ""
    if config.measure:
        cap = f"{config.max_per_stratum}s{config.subset_seed}" if config.max_per_stratum else ""
        suffix += f"-{config.measure}{cap}"
    return Path(config.cache_dir) / loaded.fingerprint.slug / f"{name}{suffix}-{template.name}.h5"


def resolve_layers(requested: Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Validate hidden-state indices (0 = embeddings .. n_layers = last block)."""
    if requested is None:
        return tuple(range(n_layers + 1))
    bad = [k for k in requested if not 0 <= k <= n_layers]
    if bad:
        raise ExtractError(
            f"layer index {bad[0]} out of range: this model has hidden states 0..{n_layers} "
            "(0 = embeddings)"
        )
    return tuple(sorted(set(requested)))


def select_records(dataset: Dataset, config: ExtractConfig) -> list[Question]:
    records = [r for r in dataset.records if r.choices]
    if config.annotated_only:
        records = [r for r in records if r.meta.get("bloom") is not None]
    if config.measure is not None:
        from truthprobe.hardness import stratify

        strata = stratify(records, config.measure)
        rng = np.random.default_rng(config.subset_seed)
        keep: list[int] = []
        for stratum in ("easy", "medium", "hard"):
            rows = [i for i, s in enumerate(strata) if s == stratum]
            if config.max_per_stratum is not None and len(rows) > config.max_per_stratum:
                rows = sorted(rng.choice(rows, config.max_per_stratum, replace=False).tolist())
            keep.extend(rows)
        records = [records[i] for i in sorted(keep)]
    if config.limit is not None:
        records = records[: config.limit]
    if not records:
        raise ExtractError(f"{dataset.name}: no multiple-choice records to extract")
    return records


def extract(config: ExtractConfig, loaded: LoadedModel | None = None) -> ExtractResult:
    """Extract hidden states into the cache, reusing or resuming a matching one.

    Raises:
        CacheError: an existing cache at the path was made for a different request.
    """
    import time

    from truthprobe.data import content_hash, load_dataset
    from truthprobe.models import load_model

    dataset = load_dataset(config.dataset, source=config.source)
    records = select_records(dataset, config)
    if loaded is None:
        loaded = load_model(config.model, config.quantization, config.dtype, config.device)
    template = (
        default_template(records[0].dataset)
        if config.template is None
        else get_template(config.template)
    )
    layers = resolve_layers(config.layers, loaded.n_layers)
    n_choices = max(r.n_choices for r in records)
    spec = CacheSpec(
        model=loaded.fingerprint.to_json(),
        template=template.to_json(),
        template_hash=template.hash,
        dataset=dataset.name,
        dataset_hash=content_hash(records),
        layers=layers,
        storage=config.storage,
        n_choices_max=n_choices,
    )
    path = default_cache_path(config, loaded, template)

    encoded = [encode(loaded.tokenizer, template, r) for r in records]
    if path.exists():
        cache = ActivationCache(path, "r+")
        try:
            cache.check_spec(spec)
        except CacheError:
            cache.close()
            raise
        batch_size = int(cache.attrs["batch_size"])
        rows = [int(x) for x in cache.item("row")]
    else:
        # Length-sorted order (longest first) so padding is small and memory peaks early.
        rows = sorted(range(len(records)), key=lambda i: (-encoded[i].n_tokens, i))
        batch_size = config.batch_size
        cache = ActivationCache.create(
            path,
            spec,
            records,
            rows,
            loaded.d_model,
            batch_size,
            extra_attrs={"backend": config.backend, "dtype_compute": loaded.fingerprint.dtype},
        )
    start = cache.completed_rows
    forward = _backend_forward(config.backend, loaded)
    began = time.perf_counter()
    total_tokens = 0
    with (
        cache,
        tqdm(
            total=len(rows),
            initial=start,
            unit="item",
            disable=not config.progress,
            desc=f"extract {dataset.name}",
        ) as bar,
    ):
        for lo in range(start, len(rows), batch_size):
            batch = [encoded[i] for i in rows[lo : lo + batch_size]]
            out = forward(loaded, batch, layers, n_choices)
            chars = np.zeros((len(batch), n_choices), dtype=np.int32)
            for i, it in enumerate(batch):
                chars[i, : len(it.choice_chars)] = it.choice_chars
            cache.write_batch(lo, out.answer_end, out.question_end, out.logprob, out.tokens, chars)
            total_tokens += sum(it.n_tokens for it in batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - began
    if len(rows) > start:  # total extraction time across resumes, for benchmarks' ratios
        with ActivationCache(path, "r+") as done:
            done.add_extract_seconds(seconds)
    return ExtractResult(path, len(rows) - start, len(rows), seconds, total_tokens)


def _backend_forward(backend: Backend, loaded: LoadedModel):
    if backend == "hf":
        return forward_batch
    if backend == "nnsight":
        from truthprobe.activations.nnsight_backend import nnsight_runner

        runner = nnsight_runner(loaded)
    elif backend == "transformer_lens":
        from truthprobe.activations.lens_backend import lens_runner

        runner = lens_runner(loaded)
    else:
        raise ExtractError(f"unknown backend {backend!r}; use hf, nnsight or transformer_lens")
    return functools.partial(forward_per_sequence, runner=runner)
