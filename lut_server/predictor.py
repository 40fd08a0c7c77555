"""In-memory copies of LUTs for prediction, invalidated when the LUT's revision changes.

Each request checks the LUT's revision in the database (one indexed read), so several workers or
replicas sharing one PostgreSQL never serve a stale LUT. Per LUT, the block-key row indices of
each architecture string seen are cached, so repeated architectures skip parsing and the walk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from budgetnas.errors import InvalidArchitectureError, MissingKeysError
from spaces import SearchSpace, space_from_description
from spaces.lut import LUT

ARCH_CACHE_SIZE = 200_000


@dataclass
class Prepared:
    """One LUT ready to predict: its values and variances by row, and the per-arch row cache.

    The sum, calibration and error band are those of ``spaces.lut.LUTPredictor`` (a test holds
    them equal); the rows are cached per architecture string, which LUTPredictor does not do.
    """

    revision: int
    lut: LUT
    space: SearchSpace[Any]
    values: np.ndarray  # LUT value (statistic) per row of the predictors' sorted keys
    variances: np.ndarray
    keys: list[str]
    index: dict[str, int]
    arch_rows: OrderedDict[str, tuple[str, np.ndarray]] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, lut: LUT, revision: int) -> Prepared:
        space = space_from_description(lut.meta.space)
        keys = sorted(lut.entries)
        stat = lut.meta.statistic
        return cls(revision, lut, space, np.array([lut.entries[k].value(stat) for k in keys], np.float64),
                   np.array([lut.entries[k].std_ms ** 2 for k in keys], np.float64), keys,
                   {k: i for i, k in enumerate(keys)})

    def rows(self, archs: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Canonical strings, concatenated LUT rows and per-arch start offsets; errors name the arch."""
        canon: list[str] = []
        parts: list[np.ndarray] = []
        missing: list[str] = []
        cache = self.arch_rows
        for i, text in enumerate(archs):
            hit = cache.get(text)
            if hit is None:
                hit = self._walk(i, text, missing)
                if hit is None:
                    continue
                with self.lock:
                    cache[text] = hit
                    if len(cache) > ARCH_CACHE_SIZE:
                        cache.popitem(last=False)
            canon.append(hit[0])
            parts.append(hit[1])
        if missing:
            raise MissingKeysError(missing)
        lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        starts = np.zeros(len(parts), np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        return canon, np.concatenate(parts) if parts else np.zeros(0, np.int64), starts

    def _walk(self, i: int, text: str, missing: list[str]) -> tuple[str, np.ndarray] | None:
        sp = self.space
        try:
            arch = sp.parse(text)
        except InvalidArchitectureError as exc:
            raise InvalidArchitectureError(f"archs[{i}]: {exc}") from None
        for attr in ("width", "resolution"):  # an arch string may carry its own; it must be the LUT's
            mine, lut_value = getattr(arch, attr, None), getattr(sp, attr, None)
            if mine is not None and lut_value is not None and mine != lut_value:
                raise InvalidArchitectureError(f"archs[{i}]: {attr} {mine} is not the LUT's {attr} {lut_value}")
        keys = sp.block_keys(arch)
        idx = [self.index.get(k, -1) for k in keys]
        if -1 in idx:
            missing.extend(k for k in keys if k not in self.index)
            return None
        return sp.format(arch), np.asarray(idx, np.int64)

    def predict(self, archs: Sequence[str], calibrated: bool = True, breakdown: bool = False
                ) -> list[dict[str, Any]]:
        canon, idx, starts = self.rows(archs)
        if not canon:
            return []
        raw = np.add.reduceat(self.values[idx], starts)
        cal = self.lut.calibration if calibrated else None
        if cal is not None:  # the band formulas of spaces.lut.LUTPredictor
            lat = cal.apply(raw)
            half = 2.0 * cal.rel_residual_std * lat
        else:
            lat = raw
            half = 2.0 * np.sqrt(np.add.reduceat(self.variances[idx], starts))
        out = [{"arch": a, "latency_ms": la, "low_ms": lo, "high_ms": hi, "raw_ms": r}
               for a, la, lo, hi, r in zip(canon, lat.tolist(), (lat - half).tolist(), (lat + half).tolist(),
                                           raw.tolist(), strict=True)]
        if breakdown:
            ends = np.append(starts[1:], len(idx))
            for p, s0, e0 in zip(out, starts.tolist(), ends.tolist(), strict=True):
                p["blocks"] = [{"key": self.keys[j], "ms": float(self.values[j])} for j in idx[s0:e0].tolist()]
        return out


class PredictorCache:
    """LUT id -> Prepared, least recently used first out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[int, Prepared] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, lut_id: int, revision: int, load: Callable[[], LUT]) -> Prepared:
        with self._lock:
            hit = self._items.get(lut_id)
            if hit is not None and hit.revision == revision:
                self._items.move_to_end(lut_id)
                return hit
        prepared = Prepared.build(load(), revision)
        with self._lock:
            self._items[lut_id] = prepared
            self._items.move_to_end(lut_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return prepared

    def invalidate(self, lut_id: int) -> None:
        with self._lock:
            self._items.pop(lut_id, None)
