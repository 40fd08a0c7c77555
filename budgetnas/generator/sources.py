"""Build the latency oracle and the accuracy source from CLI options (files, tables, database).

The database path is a thin read-only adapter over ``budgetnas.db``'s repository functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from budgetnas.core.errors import BudgetNASError, DataFileError, InvalidArgumentError, UnknownNameError
from budgetnas.db import repo
from budgetnas.db.session import Database
from budgetnas.generator.accuracy import AccuracySource, TableAccuracy
from budgetnas.generator.latency import CostModelOracle, LatencyOracle, MLPOracle, TableOracle
from budgetnas.generator.tables import read_table
from budgetnas.luts.lut import LUT
from budgetnas.luts.token_cost import (
    canonical_tokens,
    cost_model_from_lut,
    cost_model_from_lut_family,
    lut_family_resolution,
)
from budgetnas.spaces import SearchSpace


def _database(url: str) -> Database:
    if url.startswith("sqlite:///"):  # read-only use: never let SQLite create an empty file
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise DataFileError(f"no database at {path} (from {url!r})")
    try:
        return Database(url)
    except Exception as exc:  # SQLAlchemy raises several types for a bad URL
        raise InvalidArgumentError(f"cannot open database {url!r}: {exc}") from None


def lut_from_db(url: str, lut_id: str) -> LUT:
    """Read-only: the LUT with this id, through ``budgetnas.db.repo.load_lut``."""
    if not lut_id.isdigit():
        raise InvalidArgumentError(f"with --db, --lut must be a LUT id (an integer), got {lut_id!r}")
    database = _database(url)
    try:
        with database.session() as s:
            return LUT.from_json_dict(repo.load_lut(s, int(lut_id)), f"LUT {lut_id} of {url}")
    except SQLAlchemyError as exc:
        raise DataFileError(f"cannot read LUT {lut_id} from {url}: {exc.__class__.__name__}: "
                            f"{str(exc).splitlines()[0]}") from None
    finally:
        database.dispose()


LutFamily = list[tuple[str, LUT]]  # (where it came from, for errors; the LUT)


def load_lut_family(spec: str, db: str | None = None) -> LutFamily:
    """``--lut-family``: comma-separated LUT JSON files or directories (every ``*.json`` in one), or,
    with ``--db``, LUT ids. Which resolution each LUT is for is read from its own meta."""
    items = [s.strip() for s in spec.split(",")]
    if not spec.strip() or any(not s for s in items):
        raise InvalidArgumentError(f"--lut-family must be comma-separated LUT files, directories or (with --db) "
                                   f"LUT ids, got {spec!r}")
    if db is not None:
        return [(f"LUT {i}", lut_from_db(db, i)) for i in items]
    out: LutFamily = []
    for item in items:
        path = Path(item)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not files:
            raise DataFileError(f"--lut-family: directory {path} holds no *.json LUT")
        out += [(str(f), LUT.load(f)) for f in files]
    return out


def family_resolutions(family: LutFamily) -> list[int]:
    """The resolutions a family covers (sorted, each once: duplicates are refused when it is folded)."""
    return sorted({lut_family_resolution(lut, name) for name, lut in family})


def latency_oracle(space: SearchSpace[Any], lut: str | None = None, db: str | None = None,
                   latency_table: str | None = None, latency_mlp: str | None = None, seed: int = 0,
                   lut_family: LutFamily | None = None) -> LatencyOracle:
    given = [n for n, v in (("--lut", lut), ("--lut-family", lut_family), ("--latency-table", latency_table),
                            ("--latency-mlp", latency_mlp)) if v is not None]
    if len(given) != 1:
        raise InvalidArgumentError("give exactly one latency source: --lut FILE, --lut ID --db URL, --lut-family "
                                   "FILES_OR_DIR, --latency-table CSV:COLUMN or --latency-mlp CSV:COLUMN "
                                   f"(got {given or 'none'})")
    if lut_family is not None:
        return CostModelOracle(space, cost_model_from_lut_family(space, lut_family))
    if lut is not None:
        table = lut_from_db(db, lut) if db is not None else LUT.load(lut)
        return CostModelOracle(space, cost_model_from_lut(space, table))
    if latency_table is not None:
        return TableOracle(space, read_table(latency_table, space))
    assert latency_mlp is not None
    return MLPOracle(space, read_table(latency_mlp, space), seed=seed)


class DBAccuracy(AccuracySource):
    """Accuracy records of the database, read only for the archs asked (``arch IN (...)``), so a
    method never sees more records than it queried."""

    def __init__(self, space: SearchSpace[Any], url: str, dataset: str | None) -> None:
        self.space, self.dataset = space, dataset
        self.database = _database(url)

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        archs = [self.space.format(self.space.from_tokens(t.tolist())) for t in canonical_tokens(self.space, tokens)]
        try:
            with self.database.session() as s:
                found = repo.accuracy_values(s, self.space.name, archs, self.dataset)
        except SQLAlchemyError as exc:
            raise DataFileError(f"cannot read accuracy records: {str(exc).splitlines()[0]}") from None
        many = sorted(a for a, v in found.items() if len(v) > 1)
        if many:
            raise DataFileError(f"{len(many)} arch(s) have several accuracy records (datasets, metrics or sources), "
                                f"e.g. {many[0]!r}; choose one with --dataset")
        return np.asarray([found[a][0] if a in found else np.nan for a in archs], np.float64)

    def available(self) -> np.ndarray:
        try:
            with self.database.session() as s:
                names = repo.accuracy_archs(s, self.space.name, self.dataset)
        except SQLAlchemyError as exc:
            raise DataFileError(f"cannot read accuracy records: {str(exc).splitlines()[0]}") from None
        rows = []
        for a in names:
            try:
                rows.append(self.space.to_tokens(self.space.parse(a)))
            except BudgetNASError:
                continue  # a record of another space variant: it cannot be queried here
        return canonical_tokens(self.space, np.asarray(rows, np.int64).reshape(-1, len(self.space.decisions)))


def _ofa_predictor(space: SearchSpace[Any], path: str) -> AccuracySource:
    from budgetnas.generator.ofa_accuracy import OFAPredictorAccuracy

    return OFAPredictorAccuracy(space, path)


# --accuracy-predictor KIND:PATH: published accuracy predictors, queried like records
PREDICTORS: dict[str, Callable[[SearchSpace[Any], str], AccuracySource]] = {"ofa": _ofa_predictor}


def predictor_source(space: SearchSpace[Any], spec: str) -> AccuracySource:
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise InvalidArgumentError(f"--accuracy-predictor must be KIND:PATH (kinds: {', '.join(PREDICTORS)}), "
                                   f"got {spec!r}")
    if kind not in PREDICTORS:
        raise UnknownNameError("accuracy predictor kind", kind, sorted(PREDICTORS))
    return PREDICTORS[kind](space, path)


def accuracy_source(space: SearchSpace[Any], accuracy_table: str | None = None, accuracy_db: str | None = None,
                    dataset: str | None = None, accuracy_predictor: str | None = None) -> AccuracySource:
    given = [n for n, v in (("--accuracy-table", accuracy_table), ("--accuracy-db", accuracy_db),
                            ("--accuracy-predictor", accuracy_predictor)) if v is not None]
    if len(given) != 1:
        raise InvalidArgumentError("give exactly one accuracy source: --accuracy-table CSV:COLUMN, --accuracy-db URL "
                                   f"or --accuracy-predictor KIND:PATH (got {given or 'none'})")
    if accuracy_table is not None:
        return TableAccuracy(read_table(accuracy_table, space))
    if accuracy_predictor is not None:
        return predictor_source(space, accuracy_predictor)
    assert accuracy_db is not None
    return DBAccuracy(space, accuracy_db, dataset)
