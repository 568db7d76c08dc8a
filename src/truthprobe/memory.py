"""Give memory freed by finished work back to the operating system.

glibc's malloc keeps what PyTorch frees in its heap rather than returning it (its mmap threshold
rises with the largest block freed), so a long run's resident size ratchets up part after part:
measured on a 2-core CPU, four QLoRA parts in one process grew from 2.5 to 4.4 GB although 0.8-1
GB of it was free heap each time. `release_memory` returns that heap (`malloc_trim`); where
there is no glibc (macOS, musl, Windows) it only collects garbage.

The other thing that ratchets is oneDNN's kernel cache (bfloat16 matrix products on a CPU):
one entry per distinct shape, kept up to `ONEDNN_PRIMITIVE_CACHE_CAPACITY`, default 1024.
Generation and packed passes meet new shapes every part; measured on a 2-core CPU, four
GSM8k CoT generations grew the trimmed resident size by 0.44 GiB with 1024 entries and by
0.16 GiB with 256 at the same speed (64 entries: 30-40% slower). QLoRA training, one pass
length per item, met more shapes than 256 and ran 20% slower; its passes are now packed and
rounded to a few lengths (`scoring.TRAINING_ROUND`). A run of the CPU-default baselines with
1024 entries peaked at 4.15 GiB against 3.54 (docs/baselines.md). `KERNEL_CACHE` is the
package's default; a value the user set is kept.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

#: oneDNN kernel cache entries (see the module docstring).
KERNEL_CACHE = 256


def bound_kernel_cache() -> None:
    """Cap oneDNN's kernel cache at `KERNEL_CACHE` entries unless the user chose a size. Must
    run before the process's first oneDNN kernel (oneDNN reads it once): `import truthprobe`
    does."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(KERNEL_CACHE))


def release_memory() -> None:
    """Collect garbage and hand the heap's free pages back (glibc `malloc_trim(0)`)."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
