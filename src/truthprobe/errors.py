"""The one base class of every error a user can fix (bad input, missing data, wrong cache).

The CLI prints these as one line without a traceback; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno


class TruthprobeError(Exception):
    """Base of all user-facing errors; the message names the file, record or option at fault."""


class WriteRefusedError(TruthprobeError, RuntimeError):
    """The machine refused a write (full disk, quota, file-size limit, read-only) into a file
    HDF5 held open. HDF5 cannot close such a file cleanly (it crashes at interpreter exit), so
    the CLI ends the process right after printing the message; what was written before is kept
    and the next run resumes."""


def remedy(code: int | None) -> str:
    """What a user can do when the system refused a write with error number `code`."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free space there (or write elsewhere) and run again"
    if code == errno.EFBIG:
        return "a file-size limit (ulimit -f) stopped the write; raise it and run again"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST):
        return "choose a folder you can write to (--runs-dir, --cache-dir, --plots-dir)"
    return "the system refused it"
