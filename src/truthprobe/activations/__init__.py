"""The HDF5 `ActivationCache` and extraction into it (one cache per model, dataset and template).

Names load their module on first use: the cache and the `extract` command's config are light,
the extraction machinery imports torch.
"""

from importlib import import_module

#: Public name -> module that defines it.
_EXPORTS = {
    "ActivationCache": "truthprobe.activations.cache",
    "CacheError": "truthprobe.activations.cache",
    "CacheSpec": "truthprobe.activations.cache",
    "ExtractError": "truthprobe.activations.cache",
    "ExtractConfig": "truthprobe.activations.extract_command",
    "ExtractResult": "truthprobe.activations.extract_command",
    "extract": "truthprobe.activations.extract_command",
    "fill_rows": "truthprobe.activations.extraction",
    "open_cache": "truthprobe.activations.extraction",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'truthprobe.activations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
