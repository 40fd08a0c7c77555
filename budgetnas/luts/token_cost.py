"""Vectorised latency from token matrices: a LUT folded into per-decision cost tables.

A LUT prediction is a sum of block entries. Each block is decided by a few tokens, so the sum
becomes ``base + Σ_terms gate(tokens) * table[tokens[positions]]``; the space itself folds its walk
into such terms (``SearchSpace.cost_terms``: nb201 one term over its six edges, because whether an
edge is live depends on the others; ofa-mbv3 one per layer slot, gated by its unit's depth token).
A searched resolution (the last token) is folded here from one model per resolution.

Evaluating a token matrix is then a handful of numpy gathers (millions of archs per second),
with the same numbers as :class:`budgetnas.luts.lut.LUTPredictor`, whose per-key terms it folds
(tested). Numpy only: the LUT server uses it for generation without torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError, MissingKeysError
from budgetnas.luts.lut import LUTPredictor
from budgetnas.spaces.base import SearchSpace
from budgetnas.spaces.layout import CostTerm

__all__ = ["CostTerm", "TokenCostModel", "canonical_tokens", "cost_model_from_costs", "cost_model_from_lut",
           "cost_model_from_lut_family", "lut_family_resolution", "token_features"]


@dataclass
class TokenCostModel:
    """Additive latency model over token matrices, with an affine calibration on top."""

    base: float
    terms: list[CostTerm]
    slope: float = 1.0
    intercept: float = 0.0

    def __post_init__(self) -> None:
        flat, offsets = [], []
        off = 0
        for t in self.terms:
            offsets.append(off)
            flat.append(np.asarray(t.table, np.float64).ravel())
            off += t.table.size
        self._flat = np.concatenate(flat) if flat else np.zeros(0)
        self._offsets = np.asarray(offsets, np.int64)
        self._strides = [np.asarray([int(np.prod(t.table.shape[i + 1:])) for i in range(t.table.ndim)], np.int64)
                         for t in self.terms]

    def raw(self, tokens: np.ndarray) -> np.ndarray:
        tok = np.asarray(tokens, np.int64)
        if tok.ndim != 2:
            raise InvalidArgumentError(f"token matrix must be 2-D, got shape {tok.shape}")
        cols = np.ascontiguousarray(tok.T, dtype=np.int32)  # one copy; column reads are then contiguous
        out = np.full(tok.shape[0], self.base, np.float64)
        for t, off, strides in zip(self.terms, self._offsets, self._strides, strict=True):
            idx = cols[t.positions[0]] * np.int32(strides[0]) + np.int32(off)
            for p, s in zip(t.positions[1:], strides[1:], strict=True):
                idx += cols[p] * np.int32(s)
            v = self._flat[idx]
            if t.gate_pos >= 0:
                v *= cols[t.gate_pos] >= t.gate_min
            out += v
        return out

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        return self.slope * self.raw(tokens) + self.intercept

    def _shared_choices(self) -> list[dict[int, int]]:
        """Every assignment of the positions that several terms read (the searched resolution of
        ofa-mbv3); ``[{}]`` when terms share none. Given one, the terms are independent again."""
        seen: dict[int, int] = {}
        shared: dict[int, int] = {}
        for t in self.terms:
            for p, size in zip(t.positions, t.table.shape, strict=True):
                if p in seen:
                    shared[p] = size
                seen[p] = size
        pos = sorted(shared)
        return [dict(zip(pos, c, strict=True)) for c in itertools.product(*(range(shared[p]) for p in pos))]

    @staticmethod
    def _sub(t: CostTerm, fixed: dict[int, int]) -> np.ndarray:
        return np.asarray(t.table[tuple(fixed.get(p, slice(None)) for p in t.positions)])

    def bounds(self) -> tuple[float, float]:
        """Exact min and max of the calibrated latency over the space (terms are independent
        once shared positions are fixed, except for the gate, and every table is non-negative,
        so gating off is never dearer)."""
        lo, hi = math.inf, -math.inf
        for fixed in self._shared_choices():
            subs = [(t, self._sub(t, fixed)) for t in self.terms]
            lo = min(lo, self.base + sum(float(v.min()) if t.gate_pos < 0 else 0.0 for t, v in subs))
            hi = max(hi, self.base + sum(float(v.max()) for _, v in subs))
        a, b = self.slope * lo + self.intercept, self.slope * hi + self.intercept
        return (min(a, b), max(a, b))

    def cheapest_tokens(self, n_decisions: int) -> np.ndarray:
        """The cheapest token row: gates off (gate tokens 0), each ungated term at its argmin,
        for the best assignment of shared positions."""
        best, best_tok = math.inf, np.zeros(n_decisions, np.int64)
        for fixed in self._shared_choices():
            tok = np.zeros(n_decisions, np.int64)
            for p, c in fixed.items():
                tok[p] = c
            for t in self.terms:
                if t.gate_pos < 0:
                    free = [p for p in t.positions if p not in fixed]
                    sub = self._sub(t, fixed)
                    if free:
                        tok[free] = np.unravel_index(int(np.argmin(sub)), sub.shape)
            v = float(self.raw(tok[None])[0])
            if v < best:
                best, best_tok = v, tok
        return best_tok

    # ---- plain arrays (for numpy-only bundles) -----------------------------------------------
    def to_arrays(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"base": self.base, "slope": self.slope, "intercept": self.intercept,
                "terms": [{"positions": list(t.positions), "gate_pos": t.gate_pos, "gate_min": t.gate_min}
                          for t in self.terms]}
        arrays = {f"{prefix}{i}": np.asarray(t.table, np.float64) for i, t in enumerate(self.terms)}
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str) -> TokenCostModel:
        terms = [CostTerm(tuple(int(p) for p in t["positions"]), np.asarray(arrays[f"{prefix}{i}"], np.float64),
                          int(t["gate_pos"]), int(t["gate_min"])) for i, t in enumerate(meta["terms"])]
        return cls(float(meta["base"]), terms, float(meta["slope"]), float(meta["intercept"]))


def _fold_resolutions(space: SearchSpace[Any], models: Sequence[TokenCostModel]) -> TokenCostModel:
    """One model over a searched-resolution space from one fixed-resolution model per
    resolution (in the space's order): every term also reads the resolution token (the last), and
    each resolution's calibration is folded in (tables x slope, a base term slope x base +
    intercept), so a row at resolution r costs what resolution r's own model says."""
    pos = len(space.decisions) - 1
    terms = [CostTerm((pos,), np.asarray([m.slope * m.base + m.intercept for m in models], np.float64))]
    for i, t in enumerate(models[0].terms):  # one cost_terms made them all: the same terms, in order
        table = np.stack([m.slope * np.asarray(m.terms[i].table, np.float64) for m in models], axis=-1)
        terms.append(CostTerm((*t.positions, pos), table, t.gate_pos, t.gate_min))
    return TokenCostModel(0.0, terms)


def cost_model_from_costs(space: SearchSpace[Any], key_cost: dict[str, float], slope: float = 1.0,
                          intercept: float = 0.0) -> TokenCostModel:
    """Fold {block key -> ms} into a :class:`TokenCostModel`; a key the space needs but the
    mapping lacks raises :class:`MissingKeysError` naming every such key."""
    searched = space.resolutions
    if searched is not None:  # one mapping holding every resolution's keys
        return _fold_resolutions(space, [cost_model_from_costs(space.at_resolution(r), key_cost, slope, intercept)
                                         for r in searched])
    missing = sorted(set(space.all_block_keys()) - set(key_cost))
    if missing:
        raise MissingKeysError(missing)
    base, terms = space.cost_terms(lambda k: float(key_cost[k]))
    return TokenCostModel(base, terms, slope, intercept)


def cost_model_from_lut(space: SearchSpace[Any], lut: Any, calibrated: bool = True) -> TokenCostModel:
    """From a :class:`budgetnas.luts.lut.LUT` (its statistic, and its calibration when ``calibrated``): the
    terms of :class:`LUTPredictor`'s own sum, folded into token tables."""
    costs, slope, intercept = LUTPredictor(lut, space).key_costs(calibrated)
    return cost_model_from_costs(space, costs, slope, intercept)


# what must be equal across a LUT family: one device, runtime and protocol, measured at several resolutions
_FAMILY_FIELDS = ("device", "backend", "batch", "threads", "runtime_version")


def lut_family_resolution(lut: Any, name: str) -> int:
    """The resolution of one LUT of a family: its space must fix one (which space it is, the family's
    own check compares with the searched space's ``at_resolution``)."""
    desc = lut.meta.space
    res = desc.get("resolution")
    if isinstance(res, bool) or not isinstance(res, int):
        raise DataFileError(f"LUT family: {name} is a LUT of {desc}, not of one fixed resolution")
    return res


def cost_model_from_lut_family(space: SearchSpace[Any], luts: Sequence[tuple[str, Any]],
                               calibrated: bool = True) -> TokenCostModel:
    """A searched-resolution ofa-mbv3 space's model from one LUT per resolution (``(name, LUT)``
    pairs; names are for errors). Refused, naming what is wrong: a searched resolution without a
    LUT, two LUTs of one resolution, LUTs of other widths or classes, or of different devices,
    backends, batch sizes, threads or runtimes. LUTs of resolutions not searched are not used."""
    searched = space.resolutions
    if searched is None:
        raise InvalidArgumentError(f"a LUT family needs a space that searches resolution, got {space.describe()}")
    if not luts:
        raise InvalidArgumentError("LUT family: no LUTs given")
    by_res: dict[int, tuple[str, Any]] = {}
    first_name, first = luts[0]
    for name, lut in luts:
        res = lut_family_resolution(lut, name)
        if res in by_res:
            raise DataFileError(f"LUT family: two LUTs for resolution {res}: {by_res[res][0]} and {name}")
        for f in _FAMILY_FIELDS:
            a, b = getattr(first.meta, f), getattr(lut.meta, f)
            if a != b:
                raise DataFileError(f"LUT family: LUTs of different {f}: {first_name} has {a!r}, {name} {b!r}")
        want = {**space.at_resolution(res).describe(), "resolution": res}
        got = {**want, **lut.meta.space}
        differ = sorted(k for k in want if got[k] != want[k])
        if differ or set(got) != set(want):
            shown = ", ".join(f"{k} {got[k]!r} (the space's: {want[k]!r})" for k in differ) or str(lut.meta.space)
            raise DataFileError(f"LUT family: {name} is for another space variant: {shown}")
        by_res[res] = (name, lut)
    missing = [r for r in searched if r not in by_res]
    if missing:
        raise DataFileError(f"LUT family lacks resolution(s) {missing}: the space searches {list(searched)}, "
                            f"the LUTs cover {sorted(by_res)}")
    models = []
    for r in searched:
        name, lut = by_res[r]
        try:
            models.append(cost_model_from_lut(space.at_resolution(r), lut, calibrated))
        except MissingKeysError as exc:
            raise DataFileError(f"LUT family: {name} (resolution {r}): {exc}") from None
    return _fold_resolutions(space, models)


# ---- the space's token layout, for callers holding a space and a token matrix ---------------------------
def canonical_tokens(space: SearchSpace[Any], tokens: np.ndarray) -> np.ndarray:
    """Set the tokens archs ignore (layers past an ofa-mbv3 unit's depth) to 0, so equal archs have equal rows."""
    return space.canonical_tokens(tokens)


def token_features(space: SearchSpace[Any], tokens: np.ndarray) -> np.ndarray:
    """The space's features of every row (equal to ``space.features_many``)."""
    return space.token_features(tokens)
