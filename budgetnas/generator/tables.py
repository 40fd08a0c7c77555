"""Per-architecture CSV tables (``PATH:COLUMN``): an ``arch_str`` or ``arch`` column plus values.

Rows are checked before anything is used: unparseable archs, duplicate archs and non-numeric
cells are errors naming the rows (1-based data rows, header excluded). Blank cells mean "absent".
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from budgetnas.core.errors import BudgetNASError, DataFileError, InvalidArgumentError
from budgetnas.luts.token_cost import canonical_tokens
from budgetnas.spaces import SearchSpace

ARCH_COLUMNS = ("arch_str", "arch")


def split_spec(spec: str) -> tuple[Path, str]:
    """``path/to/table.csv:column`` -> (path, column)."""
    path, sep, column = spec.rpartition(":")
    if not sep or not path or not column:
        raise InvalidArgumentError(f"table {spec!r} must be PATH:COLUMN, e.g. nb201_bench.csv:pixel3_latency_ms")
    return Path(path), column


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" (+{len(rows) - 10} more)" if len(rows) > 10 else "")


@dataclass
class ArchTable:
    """Canonical token rows and their values (NaN where the cell was blank)."""

    space: SearchSpace[Any]
    column: str
    tokens: np.ndarray  # (n, decisions) canonical
    values: np.ndarray  # (n,) float64, NaN = absent
    source: str

    def __len__(self) -> int:
        return len(self.values)

    def present(self) -> ArchTable:
        keep = ~np.isnan(self.values)
        return ArchTable(self.space, self.column, self.tokens[keep], self.values[keep], self.source)


def read_table(spec: str, space: SearchSpace[Any]) -> ArchTable:
    path, column = split_spec(spec)
    try:
        f = path.open(newline="")
    except OSError as exc:
        raise DataFileError(f"cannot read table {path}: {exc.strerror}") from None
    with f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        arch_col = next((c for c in ARCH_COLUMNS if c in header), None)
        if arch_col is None:
            raise DataFileError(f"{path}: needs an 'arch_str' or 'arch' column; columns are {header}")
        if column not in header:
            raise DataFileError(f"{path}: no column {column!r}; columns are {header}")
        toks: list[list[int]] = []
        vals: list[float] = []
        bad_arch: list[int] = []
        bad_num: list[int] = []
        first_error = ""
        seen: dict[tuple[int, ...], int] = {}
        dups: list[int] = []
        for n, row in enumerate(reader, start=1):
            try:
                t = space.to_tokens(space.parse(row[arch_col] or ""))
            except BudgetNASError as exc:
                bad_arch.append(n)
                first_error = first_error or str(exc)
                continue
            cell = (row.get(column) or "").strip()
            try:
                v = float(cell) if cell else math.nan
                if math.isinf(v):
                    raise ValueError
            except ValueError:
                bad_num.append(n)
                continue
            key = tuple(canonical_tokens(space, np.asarray([t]))[0])
            if key in seen:
                dups.append(n)
                continue
            seen[key] = n
            toks.append(list(key))
            vals.append(v)
    problems = []
    if bad_arch:
        problems.append(f"rows {_rows_text(bad_arch)} have an invalid {arch_col} ({first_error})")
    if dups:
        problems.append(f"rows {_rows_text(dups)} repeat an architecture of an earlier row")
    if bad_num:
        problems.append(f"rows {_rows_text(bad_num)} have a non-numeric {column!r}")
    if problems:
        raise DataFileError(f"{path}: " + "; ".join(problems))
    if not vals or all(math.isnan(v) for v in vals):
        raise DataFileError(f"{path}: column {column!r} has no values")
    tokens = np.asarray(toks, np.int64).reshape(-1, len(space.decisions))
    return ArchTable(space, column, tokens, np.asarray(vals, np.float64), f"{path}:{column}")
