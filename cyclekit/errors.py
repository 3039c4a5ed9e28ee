"""One base for every error a user can cause (bad flag, bad file, missing data, offline).

Commands turn :class:`CyclekitError` (and only it) into a one-line message and a non-zero
exit; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class CyclekitError(Exception):
    """A problem with the user's input or environment; the message names the file or flag."""


class UsageError(CyclekitError):
    """A flag value that cannot work here (e.g. ``--device cuda`` without a GPU)."""
