"""A fleet of source devices read from per-arch latency tables (``budgetnas.generator.tables`` format).

``read_fleet`` lines up the named columns of one or more CSV tables on one set of archs (the union of
their rows; a column's blank or missing archs are NaN) for :class:`budgetnas.luts.transfer.Fleet`. Each column
is read by :func:`budgetnas.generator.tables.read_table`, so a table of another space (archs that do not parse)
is an error naming its rows.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError
from budgetnas.generator.tables import read_table
from budgetnas.spaces import SearchSpace


@dataclass(frozen=True)
class FleetTable:
    names: tuple[str, ...]
    tokens: np.ndarray  # (n, decisions) canonical, the rows of ``ms``
    ms: np.ndarray  # (n, len(names)), NaN = not measured on that device

    def row_of(self) -> dict[tuple[int, ...], int]:
        return {tuple(int(v) for v in t): i for i, t in enumerate(self.tokens)}


def latency_columns(path: Path) -> list[str]:
    """Header columns of a table other than its arch and index columns."""
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise DataFileError(f"cannot read table {path}: {exc.strerror}") from None
    return [c for c in header if c not in ("arch_str", "arch", "arch_idx", "index", "")]


def read_fleet(tables: Sequence[Path], columns: Sequence[str], space: SearchSpace[Any]) -> FleetTable:
    """The ``columns`` (device names), each looked up in exactly one of ``tables``."""
    if not columns:
        raise InvalidArgumentError("name at least one source device")
    if len(set(columns)) != len(columns):
        raise InvalidArgumentError(f"source devices repeat: {', '.join(columns)}")
    headers = {p: latency_columns(p) for p in tables}
    keys: dict[tuple[int, ...], int] = {}
    cols: list[dict[int, float]] = []
    for name in columns:
        homes = [p for p, h in headers.items() if name in h]
        if not homes:
            known = sorted({c for h in headers.values() for c in h})
            raise InvalidArgumentError(f"no table has a column {name!r}; columns are {', '.join(known)}")
        if len(homes) > 1:
            raise InvalidArgumentError(f"column {name!r} is in several tables: {', '.join(map(str, homes))}")
        t = read_table(f"{homes[0]}:{name}", space).present()
        col: dict[int, float] = {}
        for tok, v in zip(t.tokens, t.values, strict=True):
            col[keys.setdefault(tuple(int(x) for x in tok), len(keys))] = float(v)
        cols.append(col)
    ms = np.full((len(keys), len(columns)), np.nan)
    for j, col in enumerate(cols):
        rows = np.fromiter(col.keys(), np.int64, len(col))
        ms[rows, j] = np.fromiter(col.values(), np.float64, len(col))
    tokens = np.asarray(list(keys), np.int64).reshape(-1, len(space.decisions))
    return FleetTable(tuple(columns), tokens, ms)
