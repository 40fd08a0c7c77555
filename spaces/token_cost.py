"""Vectorised latency from token matrices: a LUT folded into per-decision cost tables.

A LUT prediction is a sum of block entries. In both spaces each block is decided by a few
tokens, so the sum becomes ``base + Σ_terms gate(tokens) * table[tokens[positions]]``:

- ``nb201``: latency = fixed blocks (stem, reductions, head) + Σ over the *live* edges
  (``spaces.nb201.live_edges``) of the edge's op cost summed over the stages (× cells). Whether an
  edge is live depends on the other edges, so it is one term over all six edges: a 5^6 table.
- ``ofa-mbv3``: a layer's block depends only on (unit, first layer or not, kernel, expand) and is
  active iff the layer index < the unit's depth. One term per layer slot, gated by its depth token.

Evaluating a token matrix is then a handful of numpy gathers (millions of archs per second),
with the same numbers as :class:`spaces.lut.LUTPredictor` (tested). Numpy only: the LUT server
uses it for generation without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from budgetnas.errors import InvalidArgumentError, MissingKeysError, UnknownNameError
from spaces.base import SearchSpace
from spaces.lut import key_group


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

    def bounds(self) -> tuple[float, float]:
        """Exact min and max of the calibrated latency over the space (terms are independent
        except for the gate, and every table is non-negative, so gating off is never dearer)."""
        lo = self.base + sum(float(t.table.min()) if t.gate_pos < 0 else 0.0 for t in self.terms)
        hi = self.base + sum(float(t.table.max()) for t in self.terms)
        a, b = self.slope * lo + self.intercept, self.slope * hi + self.intercept
        return (min(a, b), max(a, b))

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
    from spaces.nb201 import EDGES, live_edges

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
    from spaces.ofa_mbv3 import DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, N_UNITS

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


def cost_model_from_costs(space: SearchSpace[Any], key_cost: dict[str, float], slope: float = 1.0,
                          intercept: float = 0.0) -> TokenCostModel:
    """Fold {block key -> ms} into a :class:`TokenCostModel`; a key the space needs but the
    mapping lacks raises :class:`MissingKeysError` naming every such key."""
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
    """From a :class:`spaces.lut.LUT` (its statistic, and its calibration when ``calibrated``)."""
    stat = lut.meta.statistic
    cal = lut.calibration if calibrated else None
    costs = {k: s.value(stat) * (cal.scale(key_group(k)) if cal else 1.0) for k, s in lut.entries.items()}
    return cost_model_from_costs(space, costs, cal.slope if cal else 1.0, cal.intercept if cal else 0.0)


# ---- canonical token matrices: zero the tokens an arch ignores ---------------------------------------
def canonical_tokens(space: SearchSpace[Any], tokens: np.ndarray) -> np.ndarray:
    """Set ignored tokens (layers past an ofa-mbv3 unit's depth) to 0, so equal archs have equal rows."""
    tok = np.array(tokens, np.int64, copy=True)
    if space.name == "ofa-mbv3":
        from spaces.ofa_mbv3 import DEPTHS, MAX_DEPTH, N_UNITS

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
        from spaces.ofa_mbv3 import DEPTHS, EXPANDS, KERNELS, MAX_DEPTH, N_UNITS

        step, per = 1 + 2 * MAX_DEPTH, len(KERNELS) + len(EXPANDS)
        for u in range(N_UNITS):
            depth = np.asarray(DEPTHS)[tok[:, u * step]]
            for li in range(MAX_DEPTH):
                on = (li < depth).astype(np.float32)
                base = (u * MAX_DEPTH + li) * per
                out[rows, base + tok[:, u * step + 1 + 2 * li]] = on
                out[rows, base + len(KERNELS) + tok[:, u * step + 2 + 2 * li]] = on
        return out
    # any other space: its own (per-arch) encoding
    return space.features_many(space.from_tokens(t) for t in tok)
