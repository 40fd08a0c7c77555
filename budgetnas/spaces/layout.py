"""The records a space describes its token layout with, so the modules outside ``spaces`` need no
space's internals: which tokens an earlier token switches on (:class:`Gate`), a LUT folded into
per-token cost tables (:class:`CostTerm`), and how canonical strings split into units of layer
tokens (:class:`UnitGrammar`, for callers that cache by piece).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

KeyCost = Callable[[str], float]  # block key -> its cost (ms)


@dataclass(frozen=True)
class Gate:
    """A decision counts only where the token at ``pos`` (an earlier decision) is ``>= min``
    (ofa-mbv3: a unit's third layer exists iff its depth token picks 3 or 4). Token 0 of ``pos``
    always switches it off (``min >= 1``), so all-zero gate tokens are the shallowest arch."""

    pos: int
    min: int


@dataclass(frozen=True)
class CostTerm:
    """``table[tokens[:, positions]]``, counted only where ``tokens[:, gate_pos] >= gate_min``."""

    positions: tuple[int, ...]
    table: np.ndarray  # shape = choices of each position
    gate_pos: int = -1  # -1: always active
    gate_min: int = 0


@dataclass(frozen=True)
class UnitGrammar:
    """A canonical string is ``head``, then one piece per unit, joined by ``unit_sep``; a unit is
    its layers' tokens joined by ``layer_sep``. A claim about strings only: whoever caches by
    piece (the server's per-unit fast path) checks what it learns against the walk."""

    head: str
    unit_sep: str
    layer_sep: str
    probes: tuple[str, str]  # two different valid layer tokens, to build reference archs with

    def units(self, text: str) -> list[str] | None:
        """The unit pieces of ``text``, or None when it does not start with this grammar's head."""
        head, *units = text.split(self.unit_sep)
        return units if head == self.head else None

    def join(self, units: Sequence[Sequence[str]]) -> str:
        return self.unit_sep.join([self.head, *(self.layer_sep.join(u) for u in units)])
