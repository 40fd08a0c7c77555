"""Build the latency oracle and the accuracy source from CLI options (files, tables, database).

The database path is a thin read-only adapter over ``db``'s repository functions.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from budgetnas.errors import InvalidArgumentError
from generator.accuracy import AccuracySource, TableAccuracy
from generator.latency import CostModelOracle, LatencyOracle, MLPOracle, TableOracle
from generator.tables import read_table
from spaces import SearchSpace
from spaces.lut import LUT
from spaces.token_cost import canonical_tokens, cost_model_from_lut


def _db_module() -> Any:
    try:
        return importlib.import_module("db.repository")
    except ImportError:
        raise InvalidArgumentError("--db/--accuracy-db need the database package (db.repository), "
                                   "which this installation lacks; use --lut FILE and --accuracy-table") from None


def latency_oracle(space: SearchSpace[Any], lut: str | None = None, db: str | None = None,
                   latency_table: str | None = None, latency_mlp: str | None = None, seed: int = 0) -> LatencyOracle:
    given = [n for n, v in (("--lut", lut), ("--latency-table", latency_table), ("--latency-mlp", latency_mlp))
             if v is not None]
    if len(given) != 1:
        raise InvalidArgumentError("give exactly one latency source: --lut FILE, --lut ID --db URL, "
                                   f"--latency-table CSV:COLUMN or --latency-mlp CSV:COLUMN (got {given or 'none'})")
    if lut is not None:
        if db is not None:
            repo = _db_module()
            table = repo.load_lut(db, lut)  # read-only: a spaces.lut.LUT
        else:
            table = LUT.load(lut)
        return CostModelOracle(space, cost_model_from_lut(space, table))
    if latency_table is not None:
        return TableOracle(space, read_table(latency_table, space))
    assert latency_mlp is not None
    return MLPOracle(space, read_table(latency_mlp, space), seed=seed)


class DBAccuracy(AccuracySource):
    """Accuracy records of the database, read one batch of archs at a time."""

    def __init__(self, space: SearchSpace[Any], url: str, dataset: str | None) -> None:
        self.space, self.url, self.dataset, self.repo = space, url, dataset, _db_module()

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        archs = [self.space.format(self.space.from_tokens(t.tolist())) for t in canonical_tokens(self.space, tokens)]
        found = self.repo.accuracy_values(self.url, self.space.name, archs, dataset=self.dataset)
        return np.asarray([found.get(a, np.nan) for a in archs], np.float64)


def accuracy_source(space: SearchSpace[Any], accuracy_table: str | None = None, accuracy_db: str | None = None,
                    dataset: str | None = None) -> AccuracySource:
    if (accuracy_table is None) == (accuracy_db is None):
        raise InvalidArgumentError("give exactly one accuracy source: --accuracy-table CSV:COLUMN or --accuracy-db URL")
    if accuracy_table is not None:
        return TableAccuracy(read_table(accuracy_table, space))
    assert accuracy_db is not None
    return DBAccuracy(space, accuracy_db, dataset)
