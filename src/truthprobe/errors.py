"""The one base class of every error a user can fix (bad input, missing data, wrong cache).

The CLI prints these as one line without a traceback; anything else is a bug and keeps its
traceback.
"""


class TruthprobeError(Exception):
    """Base of all user-facing errors; the message names the file, record or option at fault."""
