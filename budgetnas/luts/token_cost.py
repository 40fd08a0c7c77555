"""Vectorised latency from token matrices: a LUT folded into per-decision cost tables.

A LUT prediction is a sum of block entries. In both spaces each block is decided by a few
tokens, so the sum becomes ``base + Σ_terms gate(tokens) * table[tokens[positions]]``:

- ``nb201``: latency = fixed blocks (stem, reductions, head) + Σ over the *live* edges
  (``budgetnas.spaces.nb201.live_edges``) of the edge's op cost summed over the stages (× cells). Whether an
  edge is live depends on the other edges, so it is one term over all six edges: a 5^6 table.
- ``ofa-mbv3``: a layer's block depends only on (unit, first layer or not, kernel, expand) and is
  active iff the layer index < the unit's depth. One term per layer slot, gated by its depth token.

Evaluating a token matrix is then a handful of numpy gathers (millions of archs per second),
with the same numbers as :class:`budgetnas.luts.lut.LUTPredictor` (tested). Numpy only: the LUT server
uses it for generation without torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError, MissingKeysError, UnknownNameError
from budgetnas.luts.lut import key_group
from budgetnas.spaces.base import SearchSpace


@dataclass(frozen=True)
class CostTerm:
    """``table[tokens[:, positions]]``, counted only where ``tokens[:, gate_pos] >= gate_min``."""

    positions: tuple[int, ...]
    table: np.ndarray  # shape = choices of each position
    gate_pos: int = -1  # -1: always active
    gate_min: int = 0


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


# ---- builders: walk the space once per (slot, choice) through its public ``blocks`` ---------------
KeyCost = Callable[[str], float]


def _nb201_model(space: SearchSpace[Any], cost: KeyCost) -> tuple[float, list[CostTerm]]:
    from budgetnas.spaces.nb201 import EDGES, live_edges

    ops = space.decisions[0].choices
    n_edges = len(space.decisions)
    none_tok = [0] * n_edges  # token 0 is 'none': the arch with no edge blocks is the fixed part
    base = sum(cost(k) for k in space.block_keys(space.from_tokens(none_tok)))
    # an op's blocks cost the same on every live edge; probe them with edge 3<-0, live on its own
    probe = EDGES.index((3, 0))
    per_op = np.zeros(len(ops))
    for o in range(1, len(ops)):
        toks = list(none_tok)
        toks[probe] = o
        per_op[o] = sum(cost(b.key_str) for b in space.blocks(space.from_tokens(toks)) if b.key.op == ops[o])
    # liveness depends only on which edges are 'none': one live_edges call per such pattern
    grid = np.indices((len(ops),) * n_edges).reshape(n_edges, -1).T  # every token vector, C order
    weights = 1 << np.arange(n_edges)
    live = np.array([live_edges([ops[1] if p >> e & 1 else ops[0] for e in range(n_edges)])
                     for p in range(1 << n_edges)])
    table = (live[(grid != 0) @ weights] * per_op[grid]).sum(1)
    return base, [CostTerm(tuple(range(n_edges)), table.reshape((len(ops),) * n_edges))]


def _ofa_model(space: SearchSpace[Any], cost: KeyCost) -> tuple[float, list[CostTerm]]:
    from budgetnas.spaces.ofa_mbv3 import DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, N_UNITS

    step = 1 + 2 * MAX_DEPTH
    shallow = space.blocks(space.from_tokens([0] * len(space.decisions)))
    n_fixed_head = 2  # stem + first block; the walk then lists the units' layers, then 4 tail blocks
    base = sum(cost(b.key_str) for b in shallow[:n_fixed_head] + shallow[-4:])
    tables = np.zeros((N_UNITS, MAX_DEPTH, len(KERNELS), len(EXPANDS)))
    deep = [len(DEPTHS) - 1 if i % step == 0 else 0 for i in range(len(space.decisions))]
    for ki in range(len(KERNELS)):
        for ei in range(len(EXPANDS)):
            toks = [t if i % step == 0 else (ki if (i % step) % 2 == 1 else ei) for i, t in enumerate(deep)]
            layers = space.blocks(space.from_tokens(toks))[n_fixed_head:-4]
            for u in range(N_UNITS):
                for li in range(MAX_DEPTH):
                    tables[u, li, ki, ei] = cost(layers[u * MAX_DEPTH + li].key_str)
    terms = []
    for u in range(N_UNITS):
        for li in range(MAX_DEPTH):
            pk, pe = u * step + 1 + 2 * li, u * step + 2 + 2 * li
            always = li + 1 <= DEPTHS[0]
            gate_min = next(i for i, d in enumerate(DEPTHS) if d >= li + 1)
            terms.append(CostTerm((pk, pe), tables[u, li].copy(), -1 if always else u * step, gate_min))
    return base, terms


_BUILDERS: dict[str, Callable[[SearchSpace[Any], KeyCost], tuple[float, list[CostTerm]]]] = {
    "nb201": _nb201_model,
    "ofa-mbv3": _ofa_model,
}


def _searched_resolutions(space: SearchSpace[Any]) -> tuple[int, ...] | None:
    """The resolutions an ofa-mbv3 space searches (its last decision), None when it fixes one."""
    return getattr(space, "resolutions", None) if space.name == "ofa-mbv3" else None


def _fold_resolutions(space: SearchSpace[Any], models: Sequence[TokenCostModel]) -> TokenCostModel:
    """One model over a searched-resolution ofa-mbv3 space from one fixed-resolution model per
    resolution (in the space's order): every term also reads the resolution token (the last), and
    each resolution's calibration is folded in (tables x slope, a base term slope x base +
    intercept), so a row at resolution r costs what resolution r's own model says."""
    pos = len(space.decisions) - 1
    terms = [CostTerm((pos,), np.asarray([m.slope * m.base + m.intercept for m in models], np.float64))]
    for i, t in enumerate(models[0].terms):  # one builder made them all: the same terms, in order
        table = np.stack([m.slope * np.asarray(m.terms[i].table, np.float64) for m in models], axis=-1)
        terms.append(CostTerm((*t.positions, pos), table, t.gate_pos, t.gate_min))
    return TokenCostModel(0.0, terms)


def cost_model_from_costs(space: SearchSpace[Any], key_cost: dict[str, float], slope: float = 1.0,
                          intercept: float = 0.0) -> TokenCostModel:
    """Fold {block key -> ms} into a :class:`TokenCostModel`; a key the space needs but the
    mapping lacks raises :class:`MissingKeysError` naming every such key."""
    searched = _searched_resolutions(space)
    if searched is not None:  # one mapping holding every resolution's keys
        return _fold_resolutions(space, [cost_model_from_costs(space.at_resolution(r), key_cost, slope,  # type: ignore[attr-defined]
                                                               intercept) for r in searched])
    try:
        builder = _BUILDERS[space.name]
    except KeyError:
        raise UnknownNameError("space with a token cost model", space.name, sorted(_BUILDERS)) from None
    missing = sorted(set(space.all_block_keys()) - set(key_cost))
    if missing:
        raise MissingKeysError(missing)
    base, terms = builder(space, lambda k: float(key_cost[k]))
    return TokenCostModel(base, terms, slope, intercept)


def cost_model_from_lut(space: SearchSpace[Any], lut: Any, calibrated: bool = True) -> TokenCostModel:
    """From a :class:`budgetnas.luts.lut.LUT` (its statistic, and its calibration when ``calibrated``)."""
    stat = lut.meta.statistic
    cal = lut.calibration if calibrated else None
    costs = {k: s.value(stat) * (cal.scale(key_group(k)) if cal else 1.0) for k, s in lut.entries.items()}
    return cost_model_from_costs(space, costs, cal.slope if cal else 1.0, cal.intercept if cal else 0.0)


# what must be equal across a LUT family: one device, runtime and protocol, measured at several resolutions
_FAMILY_FIELDS = ("device", "backend", "batch", "threads", "runtime_version")


def lut_family_resolution(lut: Any, name: str) -> int:
    """The resolution of one LUT of a family: its space must be a fixed-resolution ofa-mbv3."""
    desc = lut.meta.space
    res = desc.get("resolution")
    if desc.get("space") != "ofa-mbv3" or isinstance(res, bool) or not isinstance(res, int):
        raise DataFileError(f"LUT family: {name} is a LUT of {desc}, not of one ofa-mbv3 resolution")
    return res


def cost_model_from_lut_family(space: SearchSpace[Any], luts: Sequence[tuple[str, Any]],
                               calibrated: bool = True) -> TokenCostModel:
    """A searched-resolution ofa-mbv3 space's model from one LUT per resolution (``(name, LUT)``
    pairs; names are for errors). Refused, naming what is wrong: a searched resolution without a
    LUT, two LUTs of one resolution, LUTs of other widths or classes, or of different devices,
    backends, batch sizes, threads or runtimes. LUTs of resolutions not searched are not used."""
    searched = _searched_resolutions(space)
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
        want = {**space.at_resolution(res).describe(), "resolution": res}  # type: ignore[attr-defined]
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
            models.append(cost_model_from_lut(space.at_resolution(r), lut, calibrated))  # type: ignore[attr-defined]
        except MissingKeysError as exc:
            raise DataFileError(f"LUT family: {name} (resolution {r}): {exc}") from None
    return _fold_resolutions(space, models)


# ---- canonical token matrices: zero the tokens an arch ignores ---------------------------------------
def canonical_tokens(space: SearchSpace[Any], tokens: np.ndarray) -> np.ndarray:
    """Set ignored tokens (layers past an ofa-mbv3 unit's depth) to 0, so equal archs have equal rows."""
    tok = np.array(tokens, np.int64, copy=True)
    if space.name == "ofa-mbv3":
        from budgetnas.spaces.ofa_mbv3 import DEPTHS, MAX_DEPTH, N_UNITS

        step = 1 + 2 * MAX_DEPTH
        for u in range(N_UNITS):
            depth = np.asarray(DEPTHS)[tok[:, u * step]]
            for li in range(MAX_DEPTH):
                off = ~(li < depth)
                tok[off, u * step + 1 + 2 * li] = 0
                tok[off, u * step + 2 + 2 * li] = 0
    return tok


# ---- features from token matrices (equal to ``space.features_many``) ----------------------------------
def token_features(space: SearchSpace[Any], tokens: np.ndarray) -> np.ndarray:
    tok = np.asarray(tokens, np.int64)
    n = tok.shape[0]
    out = np.zeros((n, space.feature_dim), np.float32)
    rows = np.arange(n)
    if space.name == "nb201":
        width = len(space.decisions[0].choices)
        for i in range(tok.shape[1]):
            out[rows, i * width + tok[:, i]] = 1.0
        return out
    if space.name == "ofa-mbv3":
        from budgetnas.spaces.ofa_mbv3 import DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, N_UNITS

        step, per = 1 + 2 * MAX_DEPTH, len(KERNELS) + len(EXPANDS)
        for u in range(N_UNITS):
            depth = np.asarray(DEPTHS)[tok[:, u * step]]
            for li in range(MAX_DEPTH):
                on = (li < depth).astype(np.float32)
                base = (u * MAX_DEPTH + li) * per
                out[rows, base + tok[:, u * step + 1 + 2 * li]] = on
                out[rows, base + len(KERNELS) + tok[:, u * step + 2 + 2 * li]] = on
        if _searched_resolutions(space):  # the resolution one-hot after the layer slots
            out[rows, N_UNITS * MAX_DEPTH * per + tok[:, -1]] = 1.0
        return out
    # any other space: its own (per-arch) encoding
    return space.features_many(space.from_tokens(t) for t in tok)
