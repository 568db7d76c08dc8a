"""Where a result came from: the code (version and git commit), libraries, command and machine.

Every run's `config.json` records `provenance()`; `code_version()` (the package version and a
hash of its sources) goes into every stored part's fingerprint, so parts made by other code are
recomputed rather than reused.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from truthprobe import __version__

LIBRARIES = ("torch", "transformers", "bitsandbytes", "peft", "numpy", "h5py", "scikit-learn")


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    """The package source tree's git commit and whether it has uncommitted changes.

    "unknown" when the package is not run from a git checkout (an installed wheel).
    """
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit or "unknown", "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 (first 12 hex digits) of the package's Python sources, committed or not."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> str:
    """Package version and source hash: what a stored part's fingerprint names as its code.

    The sources themselves, not the git commit, so an uncommitted edit counts as other code
    and an installed wheel (no git) is identified too.
    """
    return f"{__version__}+src-{source_hash()}"


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Code, libraries, command line, start time and machine of the current process."""
    return {
        "package_version": __version__,
        "code_version": code_version(),
        "git": git_commit(),
        "libraries": library_versions(),
        "argv": list(sys.argv if argv is None else argv),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware(),
    }
