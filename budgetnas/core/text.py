"""Printable text: the one predicate for every free-text value the service stores or looks up.

Control characters (C0, DEL) in a name make a LUT's meta unreadable (``LUTMeta`` refuses them), and
NUL is stored by SQLite but refused by PostgreSQL, so the two databases would diverge; lone UTF-16
surrogates cannot be encoded to UTF-8 for either. Single-line text (names, versions, keys) allows
none of them; multi-line text (error messages, logs) also allows tab, newline and carriage return.
Like ``budgetnas.core.errors`` this module imports nothing else of the project, so every package may use it.
"""

from __future__ import annotations

import re

_LINE_BAD = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_TEXT_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _bad(multiline: bool) -> re.Pattern[str]:
    return _TEXT_BAD if multiline else _LINE_BAD


def is_printable(value: str, multiline: bool = False) -> bool:
    """True when ``value`` holds no control character, NUL or lone surrogate (see the module)."""
    return _bad(multiline).search(value) is None


def printable_problem(value: str, multiline: bool = False) -> str | None:
    """Why ``value`` is not printable text (the first offending character), or None when it is."""
    m = _bad(multiline).search(value)
    if m is None:
        return None
    allowed = " (tab, newline and carriage return are allowed)" if multiline else ""
    return f"must be printable text: character {m.start()} is {m.group()!r}{allowed}"


def make_printable(value: str, multiline: bool = False) -> str:
    """``value`` with each character ``is_printable`` refuses replaced by U+FFFD (for logs sent on)."""
    return _bad(multiline).sub("\ufffd", value)
