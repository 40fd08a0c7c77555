"""CSV tables and the latency oracles built on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from budgetnas.core.errors import DataFileError, InvalidArgumentError
from budgetnas.generator.latency import MLPOracle, TableOracle
from budgetnas.generator.tables import read_table
from budgetnas.spaces import get_space

SP = get_space("nb201")


def _write(path: Path, rows: list[tuple[str, str]], header: str = "arch_str,lat") -> str:
    path.write_text(header + "\n" + "".join(f"{a},{v}\n" for a, v in rows))
    return f"{path}:lat"


def _arch(i: int) -> str:
    return SP.format(SP.from_tokens([int(c) for c in np.base_repr(i, 5).zfill(6)]))


def test_reads_values_and_blanks(tmp_path: Path) -> None:
    spec = _write(tmp_path / "t.csv", [(_arch(0), "1.5"), (_arch(1), ""), (_arch(7), "2.5")])
    t = read_table(spec, SP)
    assert len(t) == 3 and np.isnan(t.values[1]) and len(t.present()) == 2
    oracle = TableOracle(SP, t)
    lat = oracle(np.asarray([SP.to_tokens(SP.parse(_arch(i))) for i in (0, 1, 7, 9)]))
    assert lat[0] == 1.5 and lat[2] == 2.5 and np.isnan(lat[1]) and np.isnan(lat[3])
    assert oracle.bounds() == (1.5, 2.5)


def test_bad_rows_are_named(tmp_path: Path) -> None:
    spec = _write(tmp_path / "t.csv", [(_arch(0), "1"), ("|bogus~0|", "2"), (_arch(0), "3"), (_arch(2), "fast")])
    with pytest.raises(DataFileError) as exc:
        read_table(spec, SP)
    msg = str(exc.value)
    assert "rows 2 have an invalid arch_str" in msg
    assert "rows 3 repeat an architecture" in msg
    assert "rows 4 have a non-numeric 'lat'" in msg


def test_missing_columns_and_files(tmp_path: Path) -> None:
    spec = _write(tmp_path / "t.csv", [(_arch(0), "1")], header="name,lat")
    with pytest.raises(DataFileError, match="needs an 'arch_str' or 'arch' column"):
        read_table(spec, SP)
    spec = _write(tmp_path / "u.csv", [(_arch(0), "1")], header="arch,lat")
    with pytest.raises(DataFileError, match="no column 'other'"):
        read_table(spec.replace(":lat", ":other"), SP)
    with pytest.raises(DataFileError, match="cannot read table"):
        read_table(f"{tmp_path}/absent.csv:lat", SP)
    with pytest.raises(InvalidArgumentError, match="PATH:COLUMN"):
        read_table("no_column.csv", SP)


def test_mlp_latency_oracle_learns_an_additive_latency(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cost = np.array([0.0, 0.1, 1.0, 3.0, 0.5])
    idx = rng.choice(5**6, size=400, replace=False)
    rows = []
    for i in idx:
        toks = [int(c) for c in np.base_repr(int(i), 5).zfill(6)]
        rows.append((_arch(int(i)), f"{1 + cost[toks].sum():.6f}"))
    oracle = MLPOracle(SP, read_table(_write(tmp_path / "m.csv", rows), SP), epochs=30)
    assert oracle.fit_report.kendall_tau > 0.8  # held-out ranking of unseen archs
    test = rng.integers(0, 5, size=(200, 6))
    err = np.abs(oracle(test) - (1 + cost[test].sum(1)))
    assert np.median(err) < 1.0
