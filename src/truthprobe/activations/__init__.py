"""Hidden-state extraction and the HDF5 `ActivationCache`."""

from truthprobe.activations.cache import ActivationCache, CacheError, CacheSpec
from truthprobe.activations.extraction import (
    EncodedItem,
    ExtractConfig,
    ExtractResult,
    encode,
    extract,
    forward_batch,
    forward_per_sequence,
)

__all__ = [
    "ActivationCache",
    "CacheError",
    "CacheSpec",
    "EncodedItem",
    "ExtractConfig",
    "ExtractResult",
    "encode",
    "extract",
    "forward_batch",
    "forward_per_sequence",
]
