"""Accuracy records are scarce: a counting source, the accuracy predictor, and query selection.

Every record a method reads goes through :class:`CountingAccuracy`, which refuses to read more
than ``max_queries`` distinct architectures. The rest of a table is never looked at (benchmarks
score with the raw table, outside this path).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from budgetnas.core.errors import BudgetNASError, DataFileError, InvalidArgumentError
from budgetnas.generator.features import token_features, uniform_tokens
from budgetnas.generator.latency import LatencyOracle
from budgetnas.generator.mlp import Ensemble, FitReport, fit_with_holdout
from budgetnas.generator.tables import ArchTable
from budgetnas.luts.token_cost import canonical_tokens
from budgetnas.spaces import SearchSpace


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
                       candidates: np.ndarray | None = None, reach: bool = False) -> np.ndarray:
    """AttentiveNAS's π̂(α|τ): for each target latency τ an arch drawn uniformly among those within
    ``tolerance`` (relative) of τ in a uniform pool (or in ``candidates``), or the nearest one when
    none is that close. With ``reach`` (uniform pool only) the nearest is then walked towards τ
    (:func:`walk_to_latency`): a uniform pool rarely holds the space's largest or smallest archs
    (in Once-for-All's space at 224 on the Note10, 20,000 draws reach 65 of its 92 ms), so targets
    beyond its range would all get the same few archs."""
    cand = uniform_tokens(space, pool, rng) if candidates is None else candidates
    lat = latency(cand)
    ok = ~np.isnan(lat)
    cand, lat = cand[ok], lat[ok]
    order = np.argsort(lat)
    cand, lat = cand[order], lat[order]
    targets = np.asarray(targets, np.float64)
    out = np.empty((len(targets), cand.shape[1]), np.int64)
    near = np.zeros(len(targets), bool)
    for i, tau in enumerate(targets):
        lo, hi = np.searchsorted(lat, [tau * (1 - tolerance), tau * (1 + tolerance)])
        near[i] = hi > lo
        j = int(rng.integers(lo, hi)) if hi > lo else min(int(np.searchsorted(lat, tau)), len(lat) - 1)
        out[i] = cand[j]
    if reach and candidates is None and not near.all():
        out[~near] = walk_to_latency(space, latency, out[~near], targets[~near], rng, tolerance)
    return out


def walk_to_latency(space: SearchSpace[Any], latency: LatencyOracle, start: np.ndarray, targets: np.ndarray,
                    rng: np.random.Generator, tolerance: float = 0.02, steps: int = 200,
                    tries: int = 16) -> np.ndarray:
    """Each row of ``start`` moved one decision at a time towards its target latency: per step,
    ``tries`` random one-decision changes, of which one that narrows the gap is taken at random
    (random, not the best, so that rows walking to nearby targets part ways), until the row is
    within ``tolerance`` of its target or no change narrows the gap."""
    sizes = np.asarray([len(d.choices) for d in space.decisions])
    cur = np.array(start, np.int64)
    tau = np.asarray(targets, np.float64)
    gap = np.abs(latency(cur) - tau) / tau
    for _ in range(steps):
        idx = np.flatnonzero(gap > tolerance)  # NaN (unknown latency) is never within: it walks too
        if not len(idx):
            break
        prop = np.repeat(cur[idx], tries, axis=0)
        d = rng.integers(len(sizes), size=len(prop))
        prop[np.arange(len(prop)), d] = rng.integers(sizes[d])
        new_gap = (np.abs(latency(prop) - np.repeat(tau[idx], tries)) / np.repeat(tau[idx], tries))
        new_gap = new_gap.reshape(len(idx), tries)
        better = new_gap < np.where(np.isnan(gap[idx]), np.inf, gap[idx])[:, None]  # NaN proposals: False
        pick = np.where(better, rng.random(better.shape), -1.0).argmax(axis=1)
        moved = better[np.arange(len(idx)), pick]
        if not moved.any():
            break
        rows = idx[moved]
        cur[rows] = prop.reshape(len(idx), tries, -1)[moved, pick[moved]]
        gap[rows] = new_gap[moved, pick[moved]]
    return cur


# The accuracy predictor every method shares: five MLPs scored at their mean less one standard
# deviation (a lower confidence bound; both fixed a priori, not fitted to a benchmark). Members are
# 200 wide, not OFA's 400: five of them fit in about the time one 400-wide MLP took (7x faster
# each here), and their floor on nb201 was no worse (300 records, 9 settings x 2 seeds: 1.35 vs
# 1.10 points, 100 wide 1.07: differences within the seeds' spread).
MEMBERS, PENALTY, HIDDEN = 5, 1.0, 200


def accuracy_model(n_in: int, seed: int) -> Ensemble:
    return Ensemble(n_in, MEMBERS, PENALTY, hidden=HIDDEN, seed=seed)


@dataclass
class Problem:
    """What every method shares: the space, the latency oracle, the query-limited accuracy
    records and the predictor fitted on them. ``calls`` counts archs scored (predictor calls)."""

    space: SearchSpace[Any]
    latency: LatencyOracle
    accuracy: CountingAccuracy
    predictor: Ensemble
    report: FitReport
    lat_range: tuple[float, float]
    known: dict[bytes, float] = field(default_factory=dict)
    epochs: int = 120
    seed: int = 0
    calls: int = 0
    residuals: list[float] = field(default_factory=list)  # prediction - record of each validated arch

    @property
    def bias(self) -> float:
        """The predictor's optimism where it matters: the mean amount by which it overrated the
        archs chosen for validation (the best-looking, so the ones it errs upwards on), >= 0."""
        return max(0.0, float(np.mean(self.residuals))) if self.residuals else 0.0

    def predict(self, tokens: np.ndarray) -> np.ndarray:
        """The predictor alone (counted as calls), less its measured optimism."""
        tok = canonical_tokens(self.space, tokens)
        self.calls += len(tok)
        return self.predictor.predict(token_features(self.space, tok)) - self.bias

    def score(self, tokens: np.ndarray) -> np.ndarray:
        """Accuracy as the methods see it: the record when one was read, else the prediction less
        the predictor's measured optimism (so a guess beats a record only by what it has earned)."""
        tok = canonical_tokens(self.space, tokens)
        pred = self.predict(tok)
        if self.known:
            for i, r in enumerate(tok):
                v = self.known.get(r.tobytes())
                if v is not None:
                    pred[i] = v
        return pred

    def fork(self) -> Problem:
        """An independent copy for one method: its own query counter (the records read so far
        carried over, the rest of the budget its own), the same predictor, calls from zero."""
        counter = CountingAccuracy(self.space, self.accuracy.source, self.accuracy.max_queries)
        counter.read = dict(self.accuracy.read)
        return replace(self, accuracy=counter, known=dict(self.known), calls=0, residuals=list(self.residuals))

    def read(self, tokens: np.ndarray) -> None:
        """Query these archs' records, note how far the predictor was off on them, and refit it on
        every record read."""
        before = self.predict(tokens) + self.bias
        values = self.accuracy.query(tokens)
        self.residuals += [float(v) for v in (before - values)[~np.isnan(values)]]
        tok, val = self.accuracy.records()
        self.predictor = accuracy_model(self.space.feature_dim, self.seed)
        self.predictor.fit(token_features(self.space, tok), val, epochs=self.epochs)
        self.known = {r.tobytes(): float(v) for r, v in zip(tok, val, strict=True)}


# A third of the queries explore; the rest validate in many small rounds (``SearchOptions.rounds``):
# each round's refit steers the next, which beat one big exploration batch at 100 queries on nb201.
EXPLORE_SHARE = 0.3


def prepare(space: SearchSpace[Any], latency: LatencyOracle, source: AccuracySource, max_queries: int,
            seed: int = 0, epochs: int = 120, explore_share: float = EXPLORE_SHARE) -> Problem:
    """Spend ``explore_share`` of the query budget on archs spread evenly over the latency range
    (constrained sampler) and fit the accuracy predictor on them; the rest of the budget is left
    on the counter for the method to spend on its own candidates (:func:`validate`).
    """
    if max_queries < 10:
        raise BudgetNASError(f"--max-queries must be >= 10 to fit an accuracy predictor, got {max_queries}")
    if not 0 < explore_share <= 1:
        raise InvalidArgumentError(f"explore share must be in (0, 1], got {explore_share}")
    rng = np.random.default_rng(seed)
    counter = CountingAccuracy(space, source, max_queries)
    lo, hi = latency.bounds()
    n1 = min(max_queries, max(10, round(max_queries * explore_share)))
    listed = source.available()
    first = np.unique(canonical_tokens(space, constrained_sample(space, latency, np.linspace(lo, hi, n1), rng,
                                                                 candidates=listed, reach=True)), axis=0)
    if len(first) < n1:  # duplicates from the sampler: top up with uniform draws (or listed archs)
        pool = listed if listed is not None else uniform_tokens(space, 4 * n1, rng)
        pool = np.unique(canonical_tokens(space, pool), axis=0)
        seen = {r.tobytes() for r in first}
        extra = [r for r in pool[rng.permutation(len(pool))] if r.tobytes() not in seen][:n1 - len(first)]
        if extra:
            first = np.concatenate([first, np.asarray(extra)])
    counter.query(first)
    tok, val = counter.records()
    if len(val) < 10:
        raise DataFileError(f"only {len(val)} of the {len(first)} archs drawn have an accuracy record; "
                            f"the accuracy table covers too little of {space.name}")
    model, report = fit_with_holdout(token_features(space, tok), val, seed, accuracy_model, epochs=epochs)
    known = {r.tobytes(): float(v) for r, v in zip(tok, val, strict=True)}
    return Problem(space, latency, counter, model, report, (lo, hi), known, epochs=epochs, seed=seed)


def neighbours(space: SearchSpace[Any], tokens: np.ndarray, n_two: int, rng: np.random.Generator) -> np.ndarray:
    """Archs near the rows of ``tokens``: every one a single decision away, and ``n_two`` drawn
    at random two decisions away (all of them is ~n^2/2 rows), canonical and unique, the rows
    themselves left out."""
    tok = canonical_tokens(space, np.asarray(tokens, np.int64).reshape(-1, len(space.decisions)))
    sizes = np.asarray([len(d.choices) for d in space.decisions])
    pos = np.repeat(np.arange(len(sizes)), sizes)  # one row per (decision, value)
    val = np.concatenate([np.arange(s) for s in sizes])
    out = []
    for t in tok:
        one = np.repeat(t[None], len(pos), axis=0)
        one[np.arange(len(pos)), pos] = val
        two = one[rng.integers(len(pos), size=n_two)]
        j = rng.integers(len(pos), size=n_two)
        two[np.arange(n_two), pos[j]] = val[j]
        out += [one, two]
    if not out:
        return np.zeros((0, len(sizes)), np.int64)
    near = np.unique(canonical_tokens(space, np.concatenate(out)), axis=0)
    own = {r.tobytes() for r in tok}
    return near[[r.tobytes() not in own for r in near]]


def incumbent_neighbours(problem: Problem, budgets: np.ndarray, n: int, rng: np.random.Generator,
                         best: int = 4) -> np.ndarray:
    """Candidates around what the records say is best: the neighbours (:func:`neighbours`) of the
    ``best`` records that fit each budget. The accuracy predictor is least wrong next to records,
    and its error grows with the distance from them; so where it rates a neighbour of the best
    record higher, that is the likeliest improvement a query can buy. Two-decision neighbours are
    drawn in proportion to the ``n`` queries to spend, so the predictor, not the draw, picks them."""
    tok, val = problem.accuracy.records()
    if not len(tok):
        return np.zeros((0, len(problem.space.decisions)), np.int64)
    lat = problem.latency(tok)
    order = np.argsort(-val, kind="stable")
    budgets = np.unique(np.asarray(budgets, np.float64))
    per = max(1, n // max(1, len(budgets)))
    if len(budgets) > 16:  # many budgets (a whole range): the best records of 16 evenly spaced ones
        budgets = budgets[np.linspace(0, len(budgets) - 1, 16).astype(int)]
    picks = np.unique(np.concatenate([order[lat[order] <= b][:best] for b in budgets]))
    return neighbours(problem.space, tok[picks], max(256, 8 * per), rng)


def validate(problem: Problem, cand: np.ndarray, budgets: np.ndarray, n: int) -> int:
    """Spend up to ``n`` queries on the method's own candidates, then refit the predictor.

    Round-robin over ``budgets``: each takes its best-scored candidate that fits it and has no
    record yet (preferring ones at least two decisions away from this call's other picks), first
    only while that candidate's predicted accuracy beats the best record that fits (what could
    change an answer), then, while queries are left, whatever fits best (a query left unspent
    is information thrown away). Where the source lists the archs it can answer, only those are
    queried (and when fewer than ``n`` candidates are listed, the other listed archs compete
    too). Returns the number of records read.
    """
    n = min(n, problem.accuracy.left)
    if n <= 0 or not len(cand):
        return 0
    read = problem.accuracy.read
    cand = np.unique(canonical_tokens(problem.space, cand), axis=0)
    listed = problem.accuracy.source.available()
    if listed is not None:
        listed = np.unique(canonical_tokens(problem.space, listed), axis=0)
        ok = {r.tobytes() for r in listed}
        cand = cand[[r.tobytes() in ok for r in cand]]
        if sum(r.tobytes() not in read for r in cand) < n:  # few candidates have records: the listed archs too
            cand = np.unique(np.concatenate([cand, listed]), axis=0)
    cand = cand[[r.tobytes() not in read for r in cand]]
    if not len(cand):
        return 0
    lat = problem.latency(cand)
    pred = problem.predict(cand) + problem.bias  # optimistic: could it beat the record at all?
    rec_tok, rec_val = problem.accuracy.records()
    rec_lat = problem.latency(rec_tok) if len(rec_tok) else np.zeros(0)
    order = np.argsort(-pred, kind="stable")
    taken = np.zeros(len(cand), bool)
    near: set[bytes] = set()  # a key per (pick, decision) with that decision masked: a shared key = < 2 apart
    mask = np.eye(cand.shape[1], dtype=bool)

    def masked(i: int) -> list[bytes]:
        return [r.tobytes() for r in np.where(mask, -1, cand[i][None])]

    budgets = np.asarray(budgets, np.float64)
    # per budget, pointers into ``order``: every condition they skip on (taken, over budget, near a
    # pick) is permanent within this call, so each scans the candidates once
    spread, first = np.zeros(len(budgets), np.int64), np.zeros(len(budgets), np.int64)

    def best_for(k: int) -> int | None:
        """The best-scored free candidate within budget ``k`` that is two decisions or more from
        every pick of this call (near-copies of a pick mostly repeat what its record will say),
        else the best free one."""
        b = budgets[k]
        while first[k] < len(order) and (taken[order[first[k]]] or lat[order[first[k]]] > b):
            first[k] += 1
        if first[k] == len(order):
            return None
        while spread[k] < len(order):
            i = int(order[spread[k]])
            if not taken[i] and lat[i] <= b and not any(m in near for m in masked(i)):
                return i
            spread[k] += 1
        return int(order[first[k]])

    picks: list[int] = []
    for must_beat in (True, False):  # first what could change an answer, then the best of the rest
        active = list(range(len(budgets)))
        while len(picks) < n and active:
            still = []
            for k in active:
                fit = rec_val[rec_lat <= budgets[k]]
                best_rec = float(fit.max()) if len(fit) else -np.inf
                j = best_for(k)
                if j is None or (must_beat and pred[j] <= best_rec):
                    continue
                taken[j] = True
                near.update(masked(j))
                picks.append(j)
                still.append(k)
                if len(picks) == n:
                    break
            active = still
    if picks:
        problem.read(cand[picks])
    return len(picks)
