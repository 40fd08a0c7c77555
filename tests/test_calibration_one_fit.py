"""One calibration fit (``budgetnas.luts.calibration``): the server's ``/calibrate`` and ``budgetnas
validate`` give the same calibration for the same measurements, and the fit's own contract."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from budgetnas.core.errors import InvalidArgumentError, UnknownNameError
from budgetnas.luts.calibration import anchor_drift, apply, fit_calibration, folds, holdout, metrics, pick_anchors
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.profiler.fidelity import report_from
from budgetnas.profiler.protocol import Measurement, Protocol
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

N_MODELS = 12


LUT_REFERENCE_MS = 0.40  # the reference workload beside the LUT's blocks (agents time it around every job)


def nb201_lut(seed: int = 0) -> LUT:
    """Every nb201 block key at its own latency, so the stages' shares differ between models."""
    sp = get_space("nb201")
    rng = np.random.default_rng(seed)
    return LUT(LUTMeta(space=sp.describe(), device="dev1", backend="ort-cpu"),
               {k: dataclasses.replace(LatencyStats.from_samples(list(rng.uniform(0.01, 0.2, 3))),
                                       reference_ms=LUT_REFERENCE_MS * rng.uniform(0.98, 1.02))
                for k in sp.all_block_keys()})


def model_reference(arch: str) -> float:
    """The models' session ran ~1.3x slower than the LUT's (another job on the machine)."""
    return LUT_REFERENCE_MS * 1.3 * (1.0 + 0.01 * np.cos(sum(map(ord, arch))))


def stage_weighted(lut: LUT) -> Any:
    """A 'device' on which each stage runs at its own speed relative to the LUT, plus noise."""
    sp = get_space("nb201")
    pred = LUTPredictor(lut, sp)

    def measured(arch: str) -> float:
        g, _ = pred.group_sums([sp.parse(arch)])
        w = np.linspace(0.8, 1.6, g.shape[1])
        noise = 1.0 + 0.02 * np.sin(sum(map(ord, arch)))  # deterministic per arch
        return float(g[0] @ w * noise + 0.05)
    return measured


def serve_measurements(client: Any, lut: LUT, measured: Any) -> tuple[int, list[str]]:
    """Import the LUT, enqueue whole-model jobs, and post each one's measurement as an agent would."""
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())},
                    headers=ADMIN_H)
    assert r.status_code == 201, r.text
    lut_id = int(r.json()["id"])
    reg = client.post("/v1/devices", json={"name": "dev1", "facts": {"cpu": "x"}}, headers=ADMIN_H)
    tok = {"Authorization": f"Bearer {reg.json()['token']}"}
    r = client.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": N_MODELS, "seed": 3}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    jobs = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": N_MODELS},
                       headers=tok).json()["jobs"]
    assert len(jobs) == N_MODELS
    for j in jobs:
        ms = measured(j["arch"])
        stats = {"count": 3, "mean_ms": ms, "std_ms": 0.0, "median_ms": ms, "min_ms": ms,
                 "reference_ms": model_reference(j["arch"])}
        r = client.post(f"/v1/jobs/{j['id']}/result", json={"idempotency_key": f"k{j['id']}", "stats": stats},
                        headers=tok)
        assert r.status_code == 200, r.text
    return lut_id, [str(j["arch"]) for j in jobs]


def as_validate_measured(names: list[str], measured: Any) -> Measurement:
    """What ``budgetnas validate`` would have measured for these models (same statistic, no sessions)."""
    stats = {n: dataclasses.replace(LatencyStats.from_samples([measured(n)] * 3), reference_ms=model_reference(n))
             for n in names}
    return Measurement(stats=stats, overhead=LatencyStats.from_samples([0.0] * 3), protocol=Protocol.quick(),
                       wall_seconds=0.0)


@pytest.mark.parametrize("method,correct", [("grouped", True), ("affine", True), ("grouped", False)])
def test_server_calibrate_and_validate_fit_the_same_calibration(client: Any, method: str, correct: bool) -> None:
    lut = nb201_lut()
    measured = stage_weighted(lut)
    lut_id, names = serve_measurements(client, lut, measured)
    r = client.post(f"/v1/luts/{lut_id}/calibrate", json={"method": method, "seed": 5, "correct_sessions": correct},
                    headers=ADMIN_H)
    assert r.status_code == 200, r.text
    served = r.json()

    pred = LUTPredictor(lut, get_space("nb201"))
    raw = pred.raw([get_space("nb201").parse(n) for n in names])
    report = report_from(lut, names, raw, as_validate_measured(names, measured), seed=5, method=method,
                         correct_sessions=correct)
    assert served["calibration"] == report.calibration.to_dict()
    # both compared the sessions alike: the models' ran ~1.3x slower, divided out when asked
    d = report.to_dict()
    for k in ("reference_ms", "session_ratio", "models_with_reference", "sessions_corrected"):
        assert served["sessions"][k] == pytest.approx(d[k]), k
    assert served["sessions"]["session_ratio"] == pytest.approx(1.3, rel=0.03)
    assert served["sessions"]["sessions_corrected"] is correct
    assert served["sessions"]["models_with_reference"] == N_MODELS
    assert served["calibration"]["n_models"] == N_MODELS  # fitted on every model, as validate stores
    assert (len(served["calibration"].get("group_scales", {})) > 0) == (method == "grouped")
    # the held-out figures are the same too: same half, same fit, same metrics
    assert served["holdout"]["n_fit"] == d["n_fit"] and served["holdout"]["n_held_out"] == d["n_eval"]
    assert served["holdout"]["calibrated"] == d["calibrated"] and served["holdout"]["raw"] == d["raw"]
    # and the stored LUT now predicts with it
    assert client.get(f"/v1/luts/{lut_id}").json()["calibration"] == served["calibration"]


def test_the_grouped_fit_recovers_stage_speeds_better_than_affine() -> None:
    """On a device whose stages run at different speeds, the held-out error of the grouped fit is
    lower than the affine one's (the reason it is the default)."""
    lut = nb201_lut(1)
    sp = get_space("nb201")
    measured = stage_weighted(lut)
    archs = sp.sample_many(60, 0)
    y = np.array([measured(sp.format(a)) for a in archs])
    pred = LUTPredictor(lut, sp)
    g = holdout(pred, archs, y, seed=0, method="grouped")
    a = holdout(pred, archs, y, seed=0, method="affine")
    e = g.eval_idx
    assert metrics(g.predicted_ms[e], y[e])["rmspe"] < metrics(a.predicted_ms[e], y[e])["rmspe"]
    assert g.calibration.n_models == 60 and len(g.folds) == 5 and g.n_fit == 48
    # cross-validated: each model's prediction is the fit made without its fold, judged on it
    part = g.folds[2]
    rest = np.setdiff1d(np.arange(60), part)
    without = fit_calibration(pred, [archs[i] for i in rest], y[rest], "grouped")
    np.testing.assert_allclose(g.predicted_ms[part], apply(pred, without, [archs[i] for i in part]))


def test_bad_calibration_requests_are_refused_by_name(client: Any) -> None:
    lut = nb201_lut()
    lut_id, _ = serve_measurements(client, lut, stage_weighted(lut))
    before = client.get(f"/v1/luts/{lut_id}").json()["calibration"]
    for body, field in (({"method": "cubic"}, "method"), ({"seed": -1}, "seed"), ({"seed": "x"}, "seed"),
                        ({"method": None}, "method")):
        r = client.post(f"/v1/luts/{lut_id}/calibrate", json=body, headers=ADMIN_H)
        assert r.status_code == 422 and field in r.text, (body, r.text)
    assert client.get(f"/v1/luts/{lut_id}").json()["calibration"] == before  # nothing stored


def test_fit_contract() -> None:
    sp = get_space("nb201")
    lut = nb201_lut()
    pred = LUTPredictor(lut, sp)
    archs = sp.sample_many(6, 0)
    with pytest.raises(UnknownNameError, match="cubic"):
        fit_calibration(pred, archs, np.ones(6), method="cubic")
    with pytest.raises(InvalidArgumentError, match="6 models but 5"):
        fit_calibration(pred, archs, np.ones(5))
    with pytest.raises(InvalidArgumentError, match="needs 4"):
        holdout(pred, archs[:3], np.ones(3))
    with pytest.raises(InvalidArgumentError, match="2 folds or more"):
        holdout(pred, archs, np.arange(1.0, 7.0), k=1)
    parts = folds(7, 0)
    assert sorted(len(f) for f in parts) == [1, 1, 1, 2, 2]
    assert sorted(np.concatenate(parts).tolist()) == list(range(7))  # disjoint, and every model in one
    assert len(folds(3, 0)) == 3 and [len(f) for f in folds(12, 1, k=2)] == [6, 6]


def test_kendall_tau_is_scipys_tau_b() -> None:
    from scipy.stats import kendalltau

    from budgetnas.luts.calibration import kendall_tau

    rng = np.random.default_rng(0)
    for n in (2, 7, 600, 1100):  # across the row chunks
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        assert kendall_tau(x, y) == pytest.approx(float(kendalltau(x, y).statistic), abs=1e-12)
    xt, yt = np.round(rng.normal(size=300), 1), np.round(rng.normal(size=300), 1)  # ties in both
    assert kendall_tau(xt, yt) == pytest.approx(float(kendalltau(xt, yt).statistic), abs=1e-12)
    assert np.isnan(kendall_tau(np.ones(5), np.arange(5.0)))


def test_validation_answers_measurements_on_the_lut_sessions_scale(client: Any) -> None:
    lut = nb201_lut()
    lut_id, _ = serve_measurements(client, lut, stage_weighted(lut))
    assert client.post(f"/v1/luts/{lut_id}/calibrate", headers=ADMIN_H).status_code == 200
    d = client.get(f"/v1/luts/{lut_id}/validation").json()
    ratio = d["sessions"]["session_ratio"]
    assert d["sessions"]["sessions_corrected"] is True and ratio == pytest.approx(1.3, rel=0.03)
    for m in d["models"]:
        assert m["corrected_ms"] == pytest.approx(m["measured_ms"] / ratio)
    # the calibration was fitted to the corrected times: its predictions sit on them, not on the times as taken
    rel = [abs(m["predicted_ms"] / m["corrected_ms"] - 1) for m in d["models"]]
    assert np.median(rel) < 0.1


def test_a_model_without_a_reference_turns_the_correction_off(client: Any) -> None:
    lut = nb201_lut()
    measured = stage_weighted(lut)
    lut_id, _ = serve_measurements(client, lut, measured)
    tok = {"Authorization": f"Bearer {client.post('/v1/devices', json={'name': 'dev1'}, headers=ADMIN_H).json()['token']}"}
    r = client.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": N_MODELS + 1, "seed": 3},
                    headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["jobs_created"] == 1, r.text  # only the model not measured yet
    job = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": 5},
                      headers=tok).json()["jobs"]
    assert len(job) == 1
    ms = measured(job[0]["arch"])
    r = client.post(f"/v1/jobs/{job[0]['id']}/result", headers=tok, json={
        "idempotency_key": "no-ref", "stats": {"count": 3, "mean_ms": ms, "std_ms": 0.0, "median_ms": ms}})
    assert r.status_code == 200, r.text
    out = client.post(f"/v1/luts/{lut_id}/calibrate", headers=ADMIN_H).json()
    assert out["sessions"]["models_with_reference"] == N_MODELS and out["sessions"]["sessions_corrected"] is False


def test_a_campaign_run_again_queues_no_model_twice(client: Any) -> None:
    lut = nb201_lut()
    lut_id, _ = serve_measurements(client, lut, stage_weighted(lut))  # N_MODELS measured
    r = client.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": N_MODELS, "seed": 3}, headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["jobs_created"] == 0, r.text
    r = client.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": N_MODELS, "seed": 4}, headers=ADMIN_H)
    created = r.json()["jobs_created"]
    assert 0 < created <= N_MODELS
    again = client.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": N_MODELS, "seed": 4},
                        headers=ADMIN_H)
    assert again.json()["jobs_created"] == 0  # queued, not measured yet: still not twice


def test_a_fold_without_a_slope_keeps_the_calibration_of_every_model(client: Any) -> None:
    """Four models, three of them falling: the fit of all four is stored, and the fit without the
    fourth (its fold) has no slope, so the held-out figures are missing with the reason (not a 422
    that stores nothing)."""
    lut = nb201_lut(2)
    sp = get_space("nb201")
    pred = LUTPredictor(lut, sp)
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())},
                    headers=ADMIN_H)
    lut_id = int(r.json()["id"])
    tok = {"Authorization": f"Bearer {client.post('/v1/devices', json={'name': 'dev1'}, headers=ADMIN_H).json()['token']}"}
    r = client.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": 4, "seed": 3}, headers=ADMIN_H)
    jobs = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": 4},
                       headers=tok).json()["jobs"]
    archs = [j["arch"] for j in jobs]
    raw = pred.raw([sp.parse(a) for a in archs])
    # the three smallest fall gently as their raw sums grow; the largest rises steeply above them
    order = np.argsort(raw)
    base = 2.0 * float(raw[order[1]])
    measured = {archs[i]: base * (1.02 - 0.01 * k) for k, i in enumerate(order[:3])}
    measured[archs[order[3]]] = 4.0 * float(raw[order[3]])
    for j in jobs:
        ms = float(measured[j["arch"]])
        client.post(f"/v1/jobs/{j['id']}/result", headers=tok, json={
            "idempotency_key": f"k{j['id']}", "stats": {"count": 3, "mean_ms": ms, "std_ms": 0.0, "median_ms": ms}})
    out = client.post(f"/v1/luts/{lut_id}/calibrate", json={"method": "affine", "seed": 0}, headers=ADMIN_H)
    assert out.status_code == 200, out.text
    d = out.json()
    assert d["holdout"] is None and "without a fold of 1" in d["holdout_error"]
    assert d["calibration"]["n_models"] == 4 and d["calibration"]["slope"] > 0
    assert client.get(f"/v1/luts/{lut_id}").json()["calibration"] == d["calibration"]


def test_anchors_spread_over_the_measured_range_fastest_and_slowest_included() -> None:
    ms = [3.0, 1.0, 2.5, 9.0, 4.0, 2.0, 7.0]
    picks = pick_anchors(ms, 3)
    assert picks == [0, 1, 3]  # 1.0, 3.0 and 9.0 ms: the fastest, the middle and the slowest, by index
    assert pick_anchors(ms, 99) == list(range(len(ms)))  # more asked than measured: every model
    with pytest.raises(InvalidArgumentError, match="anchors: need at least 1, got 0"):
        pick_anchors(ms, 0)


def test_anchor_drift_is_the_median_of_now_over_as_fitted() -> None:
    d = anchor_drift([2.2, 1.1, 3.6], [2.0, 1.0, 3.0])  # x1.1, x1.1, x1.2: one anchor disturbed
    assert d.ratios == pytest.approx((1.1, 1.1, 1.2)) and d.ratio == pytest.approx(1.1)
    assert d.to_dict() == {"ratio": pytest.approx(1.1), "anchors": 3, "min": pytest.approx(1.1),
                           "max": pytest.approx(1.2)}
    with pytest.raises(InvalidArgumentError, match="2 times now for 1 as fitted"):
        anchor_drift([1.0, 2.0], [1.0])
    with pytest.raises(InvalidArgumentError, match="0 times now for 0 as fitted"):
        anchor_drift([], [])
    for now, fitted, what in (([float("nan")], [1.0], "now is nan"), ([1.0], [0.0], "as fitted is 0.0"),
                              ([1.0], [True], "as fitted is True")):
        with pytest.raises(InvalidArgumentError, match=f"a time {what}"):
            anchor_drift(now, fitted)
