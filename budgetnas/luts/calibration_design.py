"""Which whole models to measure so that a LUT's calibration is well determined.

The grouped calibration (``budgetnas.luts.lut.Calibration``) fits one scale per op and stage (a block's op
at its input shape, ``budgetnas.luts.lut.key_group``) plus a slope and an intercept, from the models' per-group
sums; the design here varies the stages (ofa-mbv3's groups: one block op).
Uniform draws of a space mostly repeat the same mix of stages (every ofa-mbv3 model has all five
units; depths and expansions average out), so with a few dozen models some stage scales are
barely determined. :func:`calibration_archs` draws a pool of uniform archs and keeps, greedily,
the ones that add most to the determinant of the design (D-optimal), on each arch's per-stage
FLOPs (log) and a constant: the kept models vary each stage's amount independently of the others
and span the range of totals. Before any LUT value is known FLOPs are the proxy of a stage's
latency.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.spaces.base import SearchSpace

RIDGE = 1e-3  # keeps the design's inverse defined before it has as many picks as columns
MAX_POOL_EXTRA = 4000  # draws beyond n at most: the pool's walk and the greedy picks stay about a second
MAX_DESIGNED = 1000  # beyond this many models every stage is well covered anyway: uniform draws


def stage_flops(space: SearchSpace[Any], archs: list[Any]) -> tuple[np.ndarray, list[str]]:
    """(archs x stages) multiply-accumulates per stage (a block's input shape), and the stage names."""
    rows = []
    for a in archs:
        row: dict[str, float] = {}
        for b in space.blocks(a):
            g = "input:{}x{}x{}".format(*b.input_shape)
            row[g] = row.get(g, 0.0) + float(b.flops)
        rows.append(row)
    names = sorted({g for r in rows for g in r})
    return np.array([[r.get(g, 0.0) for g in names] for r in rows]), names


def calibration_archs(space: SearchSpace[Any], n: int, seed: int = 0, pool: int = 20) -> list[Any]:
    """``n`` distinct archs for calibrating a LUT of ``space``, chosen from ``pool * n`` uniform draws."""
    if n < 1:
        raise InvalidArgumentError(f"calibration models must be >= 1, got {n}")
    if n > MAX_DESIGNED:
        return space.sample_many(n, seed)
    cand = space.sample_many(min(pool * n, n + MAX_POOL_EXTRA), seed)
    canon = {space.format(a): a for a in cand}  # distinct archs only
    cand = list(canon.values())
    if len(cand) <= n:
        return cand
    flops, _ = stage_flops(space, cand)
    x = np.log1p(flops)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 1e-9 * (1 + np.abs(x).max(0)), sd, np.inf)  # constant stages: 0
    x = np.hstack([x, np.ones((len(x), 1))])
    inv = np.eye(x.shape[1]) / RIDGE  # inverse of the design matrix so far (Sherman-Morrison updates)
    free = np.ones(len(x), bool)
    picks: list[int] = []
    for _ in range(n):
        gain = np.einsum("ij,jk,ik->i", x, inv, x)  # det grows by 1 + x' M^-1 x
        gain[~free] = -np.inf
        j = int(np.argmax(gain))
        picks.append(j)
        free[j] = False
        v = inv @ x[j]
        inv -= np.outer(v, v) / (1.0 + x[j] @ v)
    return [cand[j] for j in picks]
