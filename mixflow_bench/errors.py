"""Ordinary mistakes in what the user asked for: one clear line from the CLI, exit status 1, no traceback.

Library code raises :class:`UserError` (or a subclass) for a wrong name, a missing file or a setting out of range;
``mixflow-bench`` (``cli/main.py``) catches it once for every command and prints ``Error: <message>``. Exit statuses:
1 for such mistakes, 2 for a malformed command line (click's usage errors: an unknown option, a bad choice).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the request (a name, a path, a setting); its message is one line that says what to do."""


class SettingError(UserError, ValueError):
    """A setting out of range or at odds with another one (``--nproc 0``, a stage the recipe does not have)."""


class UnknownNameError(UserError, KeyError):
    """A name that a registry does not hold; the message offers the closest known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = list(known)
        self.message = f"unknown {kind} {name!r}{close_names(name, known)} (known: {', '.join(known)})"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


def close_names(name: str, known: Iterable[str]) -> str:
    """``"; did you mean a or b?"`` with the known names closest to ``name`` (difflib), or ``""`` when none is."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def one_line(text: str) -> str:
    """``text`` on one line (newlines and runs of spaces become single spaces)."""
    return " ".join(text.split())
