"""Every distinct architecture the generator sampled in training, with latency and score.

The archive is the generator's memory: self-imitation reads the best fitting arch for a budget
from it, validation spends queries on its best candidates, and its per-budget bests ship in the
bundle as candidates beside the fresh samples (``budgetnas.generator.bundle``).

In a large space nearly every sample is new, so the archive grows by hundreds of archs a step to
millions (Once-for-All's space: ~1M in a 16,000-query training). Its arrays grow by doubling, and
:meth:`best` reads a *staircase* kept up to date as archs arrive (the entries that are the best
within some budget), not a sort of the whole archive every step: both were most of a step's time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _staircase(lat: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Of entries ``idx``, those that are the best within some budget: in (latency, index) order,
    each one scored at least as high as every one before it. The best within budget ``b`` is then
    the last of them with latency <= ``b`` (ties go to the later entry in that order)."""
    order = idx[np.lexsort((idx, lat[idx]))]
    s = score[order]
    return order[s >= np.maximum.accumulate(s)]


class Archive:
    def __init__(self, n_decisions: int) -> None:
        self._index: dict[bytes, int] = {}
        self._n = 0
        self._tok_buf = np.zeros((0, n_decisions), np.int64)
        self._lat_buf = np.zeros(0)
        self._score_buf = np.zeros(0)
        self._stair = np.zeros(0, np.int64)  # indices, by latency (see _staircase)

    def __len__(self) -> int:
        return self._n

    @property
    def tokens(self) -> np.ndarray:
        return self._tok_buf[:self._n]

    @property
    def latency(self) -> np.ndarray:
        return self._lat_buf[:self._n]

    @property
    def score(self) -> np.ndarray:
        return self._score_buf[:self._n]

    def scored(self, tokens: np.ndarray, lat: np.ndarray, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Scores of canonical token rows: the archive's where it holds the arch, else ``score``
        (the predictor runs once per distinct arch); the new ones are added."""
        idx = np.asarray([self._index.get(r.tobytes(), -1) for r in tokens], np.int64)
        out = np.empty(len(tokens))
        held = idx >= 0
        out[held] = self.score[idx[held]]
        if not held.all():
            new_tok, inv = np.unique(tokens[~held], axis=0, return_inverse=True)
            new_score = score(new_tok)
            out[~held] = new_score[inv.ravel()]
            first = np.zeros(len(new_tok), np.int64)
            first[inv.ravel()[::-1]] = np.flatnonzero(~held)[::-1]
            self.add(new_tok, lat[first], new_score)
        return out

    def _reserve(self, n: int) -> None:
        if n <= len(self._lat_buf):
            return
        cap = max(n, 2 * len(self._lat_buf), 1024)
        tok = np.zeros((cap, self._tok_buf.shape[1]), np.int64)
        tok[:self._n] = self.tokens
        lat, score = np.zeros(cap), np.zeros(cap)
        lat[:self._n], score[:self._n] = self.latency, self.score
        self._tok_buf, self._lat_buf, self._score_buf = tok, lat, score

    def add(self, tokens: np.ndarray, lat: np.ndarray, score: np.ndarray) -> None:
        """Canonical token rows; archs already held keep their entry; unknown latency is left out."""
        new: list[int] = []
        for i, r in enumerate(tokens):
            k = r.tobytes()
            if k not in self._index and np.isfinite(lat[i]):
                self._index[k] = self._n + len(new)
                new.append(i)
        if new:
            start = self._n
            self._reserve(start + len(new))
            self._n = start + len(new)
            self._tok_buf[start:self._n] = tokens[new]
            self._lat_buf[start:self._n] = lat[new]
            self._score_buf[start:self._n] = score[new]
            # entries off the staircase stay off when others arrive: merging the new ones is enough
            self._stair = _staircase(self.latency, self.score,
                                     np.concatenate([self._stair, np.arange(start, self._n)]))

    def rescore(self, score: Callable[[np.ndarray], np.ndarray]) -> None:
        """After the predictor changed (new records): every entry scored again."""
        if len(self):
            self._score_buf[:self._n] = score(self.tokens)
            self._stair = _staircase(self.latency, self.score, np.arange(self._n))

    def best(self, budgets: np.ndarray) -> np.ndarray:
        """Index of the best-scored entry within each budget; -1 where none fits."""
        budgets = np.asarray(budgets, np.float64)
        if not len(self):
            return np.full(len(budgets), -1)
        pos = np.searchsorted(self._lat_buf[self._stair], budgets, side="right") - 1
        return np.where(pos >= 0, self._stair[np.maximum(pos, 0)], -1)

    def front(self) -> np.ndarray:
        """Indices of the Pareto front (no entry both cheaper-or-equal and better), by latency."""
        if not len(self):
            return np.zeros(0, np.int64)
        order = np.lexsort((-self.score, self.latency))
        s = self.score[order]
        before = np.concatenate([[-np.inf], np.maximum.accumulate(s)[:-1]])
        return order[s > before].astype(np.int64)

    def top(self, budgets: np.ndarray, per_budget: int) -> np.ndarray:
        """Indices of the ``per_budget`` best-scored entries within each budget, deduplicated."""
        order = np.argsort(-self.score, kind="stable")
        lat = self.latency[order]
        picks = [order[lat <= b][:per_budget] for b in np.asarray(budgets, np.float64)]
        if not picks:
            return np.zeros(0, np.int64)
        idx = np.concatenate(picks)
        _, first = np.unique(idx, return_index=True)
        return idx[np.sort(first)].astype(np.int64)
