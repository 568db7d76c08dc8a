"""The HDF5 `ActivationCache` and extraction into it (one cache per model, dataset and template)."""

from truthprobe.activations.cache import ActivationCache, CacheError, CacheSpec
from truthprobe.activations.extraction import (
    ExtractConfig,
    ExtractError,
    ExtractResult,
    extract,
    fill_rows,
    open_cache,
)

__all__ = [
    "ActivationCache",
    "CacheError",
    "CacheSpec",
    "ExtractConfig",
    "ExtractError",
    "ExtractResult",
    "extract",
    "fill_rows",
    "open_cache",
]
