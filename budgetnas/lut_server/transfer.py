"""Transferred LUTs: a new device answered from the fleet's LUTs plus a few whole models measured on it.

``POST /v1/transfers`` creates (or reuses) the new device's LUT, marks it ``meta.transfer`` with its
source LUTs, chooses the N archs that inform the transfer most (``budgetnas.luts.transfer.choose_archs``) and
enqueues them as whole-model jobs for the device's agent. Once two or more are measured, ``POST
/v1/predict`` on that LUT answers every arch with ``budgetnas.luts.transfer.fit`` over the sources' predictions,
each answer flagged ``transferred`` with its band. Measured entries supersede it: the transfer is the
fallback only when the LUT's own entries do not cover an arch (the routes call it on
``MissingKeysError``), so a measured LUT answers as soon as it covers.

The fleet is every arch of the space predicted by each source LUT, so the space must be one whose archs
can all be listed (nb201: 15,625); ofa-mbv3 (~10^19 archs) would need a per-block transfer, not built.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from budgetnas.core.errors import (
    ConflictError,
    DataFileError,
    InvalidArchitectureError,
    InvalidArgumentError,
    MissingKeysError,
)
from budgetnas.db import queue, repo
from budgetnas.db.models import Lut
from budgetnas.lut_server.convert import space_for
from budgetnas.lut_server.service import lut_model
from budgetnas.luts.lut import DEFAULT_STATISTIC
from budgetnas.luts.token_cost import canonical_tokens, cost_model_from_lut
from budgetnas.luts.transfer import DEFAULT_METHOD, MIN_MEASURED, Fleet, TransferPrediction, choose_archs, fit
from budgetnas.spaces import SearchSpace

MAX_ENUMERATED = 100_000  # archs of a space the fleet lists in full
FITS_KEPT = 16  # fitted transfers kept per process, keyed by everything they are computed from
_fits: OrderedDict[tuple[Any, ...], tuple[SearchSpace[Any], TransferPrediction, dict[str, Any]]] = OrderedDict()
_fits_lock = threading.Lock()


def _all_tokens(space: SearchSpace[Any]) -> np.ndarray:
    sizes = [len(d.choices) for d in space.decisions]
    if int(np.prod(np.asarray(sizes, np.float64))) > MAX_ENUMERATED:
        raise InvalidArgumentError(f"sources: a transfer lists every arch of its space; {space.name} has too many "
                                   "(only spaces of at most 100,000 archs, e.g. nb201)")
    return np.asarray(list(itertools.product(*(range(n) for n in sizes))), np.int64)


def _row_index(space: SearchSpace[Any], tokens: np.ndarray) -> np.ndarray:
    sizes = [len(d.choices) for d in space.decisions]
    strides = np.cumprod([1, *sizes[::-1]])[:-1][::-1].astype(np.int64)
    return np.asarray(tokens, np.int64) @ strides  # the row of ``_all_tokens``' order


def source_fleet(s: Session, source_ids: list[int]) -> tuple[SearchSpace[Any], Fleet, list[Lut]]:
    """Every arch of the sources' (one) space, predicted by each source LUT."""
    if not source_ids:
        raise InvalidArgumentError("sources: name at least one source LUT")
    if len(set(source_ids)) != len(source_ids):
        raise InvalidArgumentError("sources: a LUT is named twice")
    luts = [repo.get_lut(s, i) for i in source_ids]
    for lut in luts[1:]:
        if lut.space != luts[0].space:
            raise InvalidArgumentError(f"sources: LUT {lut.id} is of space {lut.space_name} {lut.space}, LUT "
                                       f"{luts[0].id} of {luts[0].space_name} {luts[0].space}; sources share one space")
    space = space_for(luts[0].space, "sources")
    tokens = _all_tokens(space)
    cols = []
    for lut in luts:
        try:
            model = cost_model_from_lut(space, lut_model(s, lut.id), calibrated=True)
        except MissingKeysError as exc:
            raise InvalidArgumentError(f"sources: LUT {lut.id} cannot predict every arch: {exc}") from None
        cols.append(model(tokens))
    names = [f"lut:{lut.id}" for lut in luts]
    try:
        fleet = Fleet.from_ms(names, np.column_stack(cols))
    except DataFileError as exc:  # e.g. a calibration that predicts <= 0 ms somewhere
        raise InvalidArgumentError(f"sources: {exc}") from None
    return space, fleet, luts


def create_transfer(s: Session, *, device: str, backend: str, batch: int, threads: int, runtime_version: str,
                    statistic: str | None, sources: list[int], measure: int, seed: int,
                    selection: str) -> dict[str, Any]:
    """``statistic`` None: the reused LUT's, or ``DEFAULT_STATISTIC`` for a new one."""
    space, fleet, _ = source_fleet(s, sources)
    dev = repo.get_device(s, device)
    desc = space.describe()
    ident = repo.lut_identity(dev.name, backend, batch, threads, runtime_version, desc)
    meta_transfer = {"sources": list(sources), "method": DEFAULT_METHOD, "selection": selection, "seed": seed,
                     "measure": measure}
    lut = repo.find_lut(s, ident)
    if lut is None:
        lut = repo.create_lut(s, device=dev, backend=backend, batch=batch, threads=threads,
                              runtime_version=runtime_version, space=desc,
                              statistic=statistic or DEFAULT_STATISTIC, n_keys=len(space.all_block_keys()),
                              meta={"source": "transfer", "transfer": meta_transfer})
    else:
        lut = repo.get_lut(s, lut.id, lock=True)
        if lut.status == "complete":
            raise ConflictError(f"device: LUT {lut.id} of this identity is measured in full; nothing to transfer")
        if statistic is not None and statistic != lut.statistic:
            raise ConflictError(f"statistic {statistic!r}: LUT {lut.id} of this identity sums {lut.statistic!r}; "
                                "leave statistic out to reuse it")
        lut.meta = {**lut.meta, "transfer": meta_transfer}
        lut.revision += 1
    idx = choose_archs(fleet, measure, np.random.default_rng(seed), selection)
    tokens = _all_tokens(space)[idx]
    archs = [space.format(space.from_tokens(t.tolist())) for t in tokens]
    created = queue.enqueue(s, lut.id, "model", archs)
    return {"lut_id": lut.id, "jobs_created": created, "archs": archs, "sources": list(sources)}


def transferred(s: Session, lut_id: int) -> tuple[SearchSpace[Any], TransferPrediction, dict[str, Any]] | None:
    """The fitted transfer of a transfer-target LUT, or None for any other LUT."""
    lut = repo.get_lut(s, lut_id)
    spec = lut.meta.get("transfer") if isinstance(lut.meta, dict) else None
    if not spec:
        return None
    source_ids = [int(i) for i in spec["sources"]]
    pairs = repo.model_measurements(s, lut_id)
    revisions = tuple(repo.lut_revision(s, i) for i in source_ids)  # None for a source gone: source_fleet's 404
    key = (lut_id, repr(spec), tuple(pairs), revisions)
    with _fits_lock:
        hit = _fits.get(key)
        if hit is not None:
            _fits.move_to_end(key)
            return hit
    space, fleet, _ = source_fleet(s, source_ids)
    if len(pairs) < MIN_MEASURED:
        raise InvalidArgumentError(f"lut: LUT {lut_id} is a transfer target with {len(pairs)} measured whole "
                                   f"model(s); its predictions need {MIN_MEASURED} (its agent's jobs are pending)")
    by_row: dict[int, list[float]] = {}
    toks = canonical_tokens(space, np.asarray([space.to_tokens(space.parse(a)) for a, _ in pairs]))
    for row, (_, value) in zip(_row_index(space, toks).tolist(), pairs, strict=True):
        by_row.setdefault(row, []).append(value)
    rows = sorted(by_row)
    ms = [float(np.median(by_row[r])) for r in rows]  # an arch measured twice counts once, at its median
    if len(rows) < MIN_MEASURED:
        raise InvalidArgumentError(f"lut: LUT {lut_id} has {len(rows)} distinct measured arch(s); need {MIN_MEASURED}")
    pred = fit(fleet, np.asarray(rows), np.asarray(ms), str(spec.get("method", DEFAULT_METHOD)))
    with _fits_lock:
        _fits[key] = (space, pred, spec)
        while len(_fits) > FITS_KEPT:
            _fits.popitem(last=False)
    return space, pred, spec


def transferred_predictions(s: Session, lut_id: int, archs: list[str]) -> list[dict[str, Any]] | None:
    got = transferred(s, lut_id)
    if got is None:
        return None
    space, pred, spec = got
    parsed = []
    for i, a in enumerate(archs):
        try:
            parsed.append(space.to_tokens(space.parse(a)))
        except InvalidArchitectureError as exc:
            raise InvalidArchitectureError(f"archs[{i}]: {exc}") from None
    tokens = canonical_tokens(space, np.asarray(parsed, np.int64))
    rows = _row_index(space, tokens).tolist()
    sources = [int(i) for i in spec["sources"]]
    return [{"arch": space.format(space.from_tokens(t.tolist())), "latency_ms": float(pred.latency_ms[r]),
             "low_ms": float(pred.low_ms[r]), "high_ms": float(pred.high_ms[r]), "raw_ms": float(pred.latency_ms[r]),
             "transferred": True, "method": pred.method, "sources": sources}
            for t, r in zip(tokens, rows, strict=True)]
