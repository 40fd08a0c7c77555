"""Every distinct architecture the generator sampled in training, with latency and score.

The archive is the generator's memory: self-imitation reads the best fitting arch for a budget
from it, validation spends queries on its best candidates, and its per-budget bests ship in the
bundle as candidates beside the fresh samples (``budgetnas.generator.bundle``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class Archive:
    def __init__(self, n_decisions: int) -> None:
        self._index: dict[bytes, int] = {}
        self._tok = np.zeros((0, n_decisions), np.int64)
        self._lat = np.zeros(0)
        self._score = np.zeros(0)

    def __len__(self) -> int:
        return len(self._lat)

    @property
    def tokens(self) -> np.ndarray:
        return self._tok

    @property
    def latency(self) -> np.ndarray:
        return self._lat

    @property
    def score(self) -> np.ndarray:
        return self._score

    def scored(self, tokens: np.ndarray, lat: np.ndarray, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Scores of canonical token rows: the archive's where it holds the arch, else ``score``
        (the predictor runs once per distinct arch); the new ones are added."""
        idx = np.asarray([self._index.get(r.tobytes(), -1) for r in tokens], np.int64)
        out = np.empty(len(tokens))
        held = idx >= 0
        out[held] = self._score[idx[held]]
        if not held.all():
            new_tok, inv = np.unique(tokens[~held], axis=0, return_inverse=True)
            new_score = score(new_tok)
            out[~held] = new_score[inv.ravel()]
            first = np.zeros(len(new_tok), np.int64)
            first[inv.ravel()[::-1]] = np.flatnonzero(~held)[::-1]
            self.add(new_tok, lat[first], new_score)
        return out

    def add(self, tokens: np.ndarray, lat: np.ndarray, score: np.ndarray) -> None:
        """Canonical token rows; archs already held keep their entry; unknown latency is left out."""
        new: list[int] = []
        for i, r in enumerate(tokens):
            k = r.tobytes()
            if k not in self._index and np.isfinite(lat[i]):
                self._index[k] = len(self._lat) + len(new)
                new.append(i)
        if new:
            self._tok = np.concatenate([self._tok, tokens[new]])
            self._lat = np.concatenate([self._lat, lat[new]])
            self._score = np.concatenate([self._score, score[new]])

    def rescore(self, score: Callable[[np.ndarray], np.ndarray]) -> None:
        """After the predictor changed (new records): every entry scored again."""
        if len(self):
            self._score = score(self._tok)

    def best(self, budgets: np.ndarray) -> np.ndarray:
        """Index of the best-scored entry within each budget; -1 where none fits."""
        budgets = np.asarray(budgets, np.float64)
        if not len(self):
            return np.full(len(budgets), -1)
        order = np.argsort(self._lat, kind="stable")
        s = self._score[order]
        # position of the running maximum, in latency order (the latest on ties)
        at_max = np.maximum.accumulate(np.where(s >= np.maximum.accumulate(s), np.arange(len(s)), 0))
        pos = np.searchsorted(self._lat[order], budgets, side="right") - 1
        return np.where(pos >= 0, order[at_max[np.maximum(pos, 0)]], -1)

    def front(self) -> np.ndarray:
        """Indices of the Pareto front (no entry both cheaper-or-equal and better), by latency."""
        if not len(self):
            return np.zeros(0, np.int64)
        order = np.lexsort((-self._score, self._lat))
        best, keep = -np.inf, []
        for i in order:
            if self._score[i] > best:
                keep.append(int(i))
                best = self._score[i]
        return np.asarray(keep, np.int64)

    def top(self, budgets: np.ndarray, per_budget: int) -> np.ndarray:
        """Indices of the ``per_budget`` best-scored entries within each budget, deduplicated."""
        order = np.argsort(-self._score, kind="stable")
        picks = [order[self._lat[order] <= b][:per_budget] for b in np.asarray(budgets, np.float64)]
        if not picks:
            return np.zeros(0, np.int64)
        idx = np.concatenate(picks)
        _, first = np.unique(idx, return_index=True)
        return idx[np.sort(first)].astype(np.int64)
