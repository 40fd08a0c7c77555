"""Accuracy records are scarce: a counting source, the accuracy predictor, and query selection.

Every record a method reads goes through :class:`CountingAccuracy`, which refuses to read more
than ``max_queries`` distinct architectures. The rest of a table is never looked at (benchmarks
score with the raw table, outside this path).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from budgetnas.errors import BudgetNASError, DataFileError
from generator.features import token_features, uniform_tokens
from generator.latency import LatencyOracle
from generator.mlp import FitReport, MLPRegressor, fit_with_holdout
from generator.tables import ArchTable
from spaces import SearchSpace
from spaces.token_cost import canonical_tokens


class QueryBudgetExceeded(BudgetNASError):
    """A method asked for more accuracy records than ``--max-queries`` allows."""


class AccuracySource(abc.ABC):
    """Where accuracy records come from (a CSV table, the database)."""

    @abc.abstractmethod
    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        """Values for canonical token rows; NaN where there is no record."""

    def available(self) -> np.ndarray | None:
        """Canonical token rows of the archs that have a record (names only, no values), so queries
        are spent on archs that can answer; None when the source cannot list them."""
        return None


class TableAccuracy(AccuracySource):
    def __init__(self, table: ArchTable) -> None:
        t = table.present()
        self._values = {r.tobytes(): float(v) for r, v in zip(t.tokens, t.values, strict=True)}
        self.space = table.space
        self._tokens = t.tokens

    def available(self) -> np.ndarray:
        return self._tokens

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray([self._values.get(r.tobytes(), np.nan) for r in np.asarray(tokens, np.int64)])


class CountingAccuracy:
    """Reads records through a source, at most ``max_queries`` distinct archs in total."""

    def __init__(self, space: SearchSpace[Any], source: AccuracySource, max_queries: int) -> None:
        self.space, self.source, self.max_queries = space, source, int(max_queries)
        self.read: dict[bytes, float] = {}

    @property
    def used(self) -> int:
        return len(self.read)

    @property
    def left(self) -> int:
        return self.max_queries - self.used

    def query(self, tokens: np.ndarray) -> np.ndarray:
        tok = canonical_tokens(self.space, tokens)
        keys = [r.tobytes() for r in tok]
        new = sorted({k for k in keys if k not in self.read})
        if len(new) > self.left:
            raise QueryBudgetExceeded(
                f"reading {len(new)} more accuracy records would exceed --max-queries {self.max_queries} "
                f"({self.used} read)")
        if new:
            rows = np.frombuffer(b"".join(new), np.int64).reshape(len(new), -1)
            for k, v in zip(new, self.source.lookup(rows), strict=True):
                self.read[k] = float(v)
        return np.asarray([self.read[k] for k in keys])

    def records(self) -> tuple[np.ndarray, np.ndarray]:
        """Every record read so far that has a value: (tokens, values)."""
        items = [(k, v) for k, v in self.read.items() if not np.isnan(v)]
        if not items:
            return np.zeros((0, len(self.space.decisions)), np.int64), np.zeros(0)
        tok = np.frombuffer(b"".join(k for k, _ in items), np.int64).reshape(len(items), -1)
        return tok.copy(), np.asarray([v for _, v in items])


def constrained_sample(space: SearchSpace[Any], latency: LatencyOracle, targets: np.ndarray,
                       rng: np.random.Generator, pool: int = 20000, tolerance: float = 0.02,
                       candidates: np.ndarray | None = None) -> np.ndarray:
    """AttentiveNAS's π̂(α|τ): for each target latency τ an arch drawn uniformly among those within
    ``tolerance`` (relative) of τ in a uniform pool (or in ``candidates``), or the nearest one when
    none is that close."""
    cand = uniform_tokens(space, pool, rng) if candidates is None else candidates
    lat = latency(cand)
    ok = ~np.isnan(lat)
    cand, lat = cand[ok], lat[ok]
    order = np.argsort(lat)
    cand, lat = cand[order], lat[order]
    out = np.empty((len(targets), cand.shape[1]), np.int64)
    for i, tau in enumerate(np.asarray(targets, np.float64)):
        lo, hi = np.searchsorted(lat, [tau * (1 - tolerance), tau * (1 + tolerance)])
        j = int(rng.integers(lo, hi)) if hi > lo else min(int(np.searchsorted(lat, tau)), len(lat) - 1)
        out[i] = cand[j]
    return out


@dataclass
class Problem:
    """What every method shares: the space, the latency oracle, the query-limited accuracy
    records and the predictor fitted on them."""

    space: SearchSpace[Any]
    latency: LatencyOracle
    accuracy: CountingAccuracy
    predictor: MLPRegressor
    report: FitReport
    lat_range: tuple[float, float]
    known: dict[bytes, float] = field(default_factory=dict)

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """Accuracy as the methods see it: the record when one was read, else the prediction."""
        tok = canonical_tokens(self.space, tokens)
        pred = self.predictor.predict(token_features(self.space, tok))
        if self.known:
            for i, r in enumerate(tok):
                v = self.known.get(r.tobytes())
                if v is not None:
                    pred[i] = v
        return pred


def prepare(space: SearchSpace[Any], latency: LatencyOracle, source: AccuracySource, max_queries: int,
            seed: int = 0, epochs: int = 120, explore_share: float = 0.5) -> Problem:
    """Spend the query budget in two rounds, then fit the accuracy predictor on what was read.

    Round 1 draws archs spread evenly over the latency range (constrained sampler); round 2 reads
    the archs the first predictor places nearest its predicted frontier (latency vs accuracy),
    where the answers to any budget lie.
    """
    if max_queries < 10:
        raise BudgetNASError(f"--max-queries must be >= 10 to fit an accuracy predictor, got {max_queries}")
    rng = np.random.default_rng(seed)
    counter = CountingAccuracy(space, source, max_queries)
    lo, hi = latency.bounds()
    n1 = max(10, int(max_queries * explore_share))
    listed = source.available()
    first = np.unique(canonical_tokens(space, constrained_sample(space, latency, np.linspace(lo, hi, n1), rng,
                                                                 candidates=listed)), axis=0)
    counter.query(first)
    tok, val = counter.records()
    if len(val) < 10:
        raise DataFileError(f"only {len(val)} of the {len(first)} archs drawn have an accuracy record; "
                            f"the accuracy table covers too little of {space.name}")
    model = MLPRegressor(space.feature_dim, seed=seed)
    model.fit(token_features(space, tok), val, epochs=epochs)
    if counter.left > 0:
        pool = listed if listed is not None else uniform_tokens(space, 30000, rng)
        pool = np.unique(canonical_tokens(space, pool), axis=0)
        lat = latency(pool)
        pool, lat = pool[~np.isnan(lat)], lat[~np.isnan(lat)]
        acc = model.predict(token_features(space, pool))
        order = np.argsort(lat)
        best_so_far = np.maximum.accumulate(acc[order])
        gap = np.empty_like(acc)
        gap[order] = best_so_far - acc[order]  # 0 on the predicted frontier
        seen = {k for k in counter.read}
        picks = [i for i in np.argsort(gap, kind="stable") if pool[i].tobytes() not in seen][:counter.left]
        counter.query(pool[picks])
    tok, val = counter.records()
    model, report = fit_with_holdout(token_features(space, tok), val, seed, epochs=epochs)
    known = {r.tobytes(): float(v) for r, v in zip(tok, val, strict=True)}
    return Problem(space, latency, counter, model, report, (lo, hi), known)
