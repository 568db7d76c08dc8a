"""File names from names a user chose (a template's, a dataset file's, a model's): safe
characters only, never a path, so nothing is ever created outside the folder it belongs in."""

from __future__ import annotations

import re

#: One file-name component: letters, digits, `.`, `_`, `-`; not starting with a dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """`text` as one file-name component: runs of other characters become `_`, leading and
    trailing dots and underscores go (so `..` and `/` can never climb out of a folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+|\.\.+", "_", text).strip("._") or fallback


def is_safe_name(text: str) -> bool:
    """Whether `text` is already one safe file-name component (no `/`, no `..`, no spaces)."""
    return SAFE_NAME.fullmatch(text) is not None and ".." not in text
