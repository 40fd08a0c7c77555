"""Operations that join the database with the search spaces: storing a LUT, campaigns, calibration."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.core.jsonlimits import check_json
from budgetnas.db import queue, repo
from budgetnas.db.models import Lut
from budgetnas.lut_server.convert import space_for
from budgetnas.lut_server.predictor import Prepared
from budgetnas.lut_server.state import AppState
from budgetnas.luts.calibration import (
    DEFAULT_METHOD,
    MIN_HOLDOUT,
    HoldoutError,
    check_method,
    fit_calibration,
    holdout,
    sessions,
)
from budgetnas.luts.calibration_design import calibration_archs
from budgetnas.luts.lut import LUT, LUTPredictor


def store_lut(s: Session, lut: LUT, measurements: list[tuple[str, float]], source: str) -> Lut:
    """A complete (immutable) LUT from an import; the device is created when it is new."""
    space = space_for(lut.meta.space, "space")
    m = lut.meta
    check_json(m.environment, "content: meta.environment")  # free-form: bounded before anything is written
    check_json(m.protocol, "content: meta.protocol")
    dev = repo.ensure_device(s, m.device)
    row = repo.create_lut(
        s, device=dev, backend=m.backend, batch=m.batch, threads=m.threads, runtime_version=m.runtime_version,
        space=space.describe(), statistic=m.statistic, n_keys=len(space.all_block_keys()),
        meta={"environment": m.environment, "protocol": m.protocol, "created": m.created, "source": source},
        status="complete", calibration=lut.calibration.to_dict() if lut.calibration else None)
    data = lut.to_json_dict(samples=True)["entries"]
    repo.add_entries(s, row.id, data)
    for arch, ms in measurements:
        repo.add_model_measurement(s, row.id, arch, {"count": 1, "mean_ms": ms, "std_ms": 0.0}, ms, source=source)
    return row


def lut_model(s: Session, lut_id: int, samples: bool = False) -> LUT:
    return LUT.from_json_dict(repo.load_lut(s, lut_id, samples=samples), f"LUT {lut_id}")


def prepared_fresh(st: AppState, lut_id: int) -> Prepared:
    """``prepared`` in its own read transaction, skipped while the copy is known to be current."""
    hit = st.predictors.fresh(lut_id)
    if hit is not None:
        return hit
    token = st.predictors.token()  # before the transaction: a change committed after it moves the token on
    with st.db.session() as s:
        return prepared(st, s, lut_id, token)


def prepared(st: AppState, s: Session, lut_id: int, token: int | None = None) -> Prepared:
    """The in-memory LUT for prediction, reloaded when the stored revision moved on.

    ``token``: the change watch's, read before ``s`` read anything (else None: the copy is then
    trusted for the TTL only), so that the copy is current for as long as the token stays.
    """
    rev = repo.lut_revision(s, lut_id)
    if rev is None:
        repo.get_lut(s, lut_id)  # raises the 404 naming the LUT
        raise AssertionError("unreachable")
    return st.predictors.get(lut_id, rev[0], lambda: lut_model(s, lut_id), token)


def enqueue_campaign(s: Session, lut: Lut, validation_models: int, seed: int) -> int:
    """One block job per key neither measured nor pending (building LUTs only), plus model jobs."""
    if validation_models < 0:
        raise InvalidArgumentError("validation_models: must be >= 0")
    space = space_for(lut.space)
    # the LUT's row lock queues concurrent campaigns of one LUT, so each sees the keys the other enqueued
    lut = repo.get_lut(s, lut.id, lock=True)
    created = 0
    if lut.status == "building":
        have = set(repo.lut_entries(s, lut.id)) | queue.pending_block_keys(s, lut.id)
        created += queue.enqueue(s, lut.id, "block", [k for k in space.all_block_keys() if k not in have])
    if validation_models:
        # a campaign run again measures only the models it has not measured or queued yet (the design is
        # deterministic in the seed, so the same archs come back)
        have_models = queue.pending_model_archs(s, lut.id) | {a for a, _, _ in repo.model_measurement_rows(s, lut.id)}
        archs = [space.format(a) for a in calibration_archs(space, validation_models, seed)]
        created += queue.enqueue(s, lut.id, "model", [a for a in archs if a not in have_models])
    return created


def calibrate(st: AppState, s: Session, lut_id: int, method: str = DEFAULT_METHOD, seed: int = 0,
              correct_sessions: bool = True) -> dict[str, Any]:
    """Fit the LUT's calibration on every stored whole-model measurement (the project's one fit,
    ``budgetnas.luts.calibration``: the same measurements give ``budgetnas validate``'s calibration)
    and store it; with 4 or more models also the held-out figures, cross-validated (each model judged by
    the same fit made without its fold).
    ``sessions`` says how the models' session compared with the LUT's by the reference workload
    (divided out with ``correct_sessions``, as ``validate`` does)."""
    check_method(method)
    lut = repo.get_lut(s, lut_id, lock=True)
    rows = repo.model_measurement_rows(s, lut_id)
    if len(rows) < 2:
        raise InvalidArgumentError(f"lut: LUT {lut_id} has {len(rows)} measured whole model(s); calibration needs 2")
    # the raw sums need no calibration: one stored before its bounds that no longer reads is replaced, not in the way
    base = LUT.from_json_dict({**repo.load_lut(s, lut_id), "calibration": None}, f"LUT {lut_id}")
    space = space_for(lut.space)
    predictor = LUTPredictor(base, space)
    names = [a for a, _, _ in rows]
    archs = [space.parse(a) for a in names]
    measured, sess = sessions(base, [r for _, _, r in rows], np.array([ms for _, ms, _ in rows]), correct_sessions)
    # the fit refuses measurements <= 0 ms and degenerate fits before anything is stored (422 naming the model)
    cal = fit_calibration(predictor, archs, measured, method, names)
    report: dict[str, Any] | None = None
    holdout_error = None if len(rows) >= MIN_HOLDOUT else f"{len(rows)} models; held-out figures need {MIN_HOLDOUT}"
    if holdout_error is None:
        try:
            h = holdout(predictor, archs, measured, seed, method, names, full=cal)  # the fit above, not twice
            report = h.to_dict(predictor.raw(archs), measured)
        except HoldoutError as exc:  # the calibration of every model stands; only its figures are missing
            holdout_error = str(exc)
    lut.calibration = cal.to_dict()
    lut.revision += 1
    s.flush()
    st.predictors.invalidate(lut_id)
    return {"calibration": cal.to_dict(), "method": method, "holdout": report, "holdout_error": holdout_error,
            "sessions": sess.to_dict()}


def validation(st: AppState, s: Session, lut_id: int) -> dict[str, Any]:
    """The LUT's measured whole models beside their predictions; ``corrected_ms`` is the measurement on
    the LUT session's scale (divided by the session ratio, the rule ``/calibrate`` fits by default)."""
    rows = repo.model_measurement_rows(s, lut_id)
    if not rows:
        repo.get_lut(s, lut_id)
        return {"models": [], "sessions": None}
    prep = prepared(st, s, lut_id)
    measured = np.array([ms for _, ms, _ in rows])
    corrected, sess = sessions(prep.lut, [r for _, _, r in rows], measured)
    preds = prep.predict([a for a, _, _ in rows], calibrated=True)
    return {"models": [{"arch": p["arch"], "measured_ms": ms, "corrected_ms": float(c), "raw_ms": p["raw_ms"],
                        "predicted_ms": p["latency_ms"]}
                       for p, (_, ms, _), c in zip(preds, rows, corrected, strict=True)],
            "sessions": sess.to_dict()}
