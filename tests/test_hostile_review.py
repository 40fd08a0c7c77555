"""Hostile input a review of issue 16's fixes found (calibration, free text, resolution spaces, leases).

Every REST test runs on SQLite and PostgreSQL (the ``client``/``db_url`` fixtures): the bad request
is a 422 naming what is wrong, nothing is stored, and the LUT keeps working afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from spaces import get_space
from spaces.lut import LUT, LatencyStats, LUTMeta
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

NB201 = {"space": "nb201"}


def agent(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(c: Any, name: str = "dev1") -> dict[str, str]:
    r = c.post("/v1/devices", json={"name": name, "facts": {"cpu": "x"}}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return agent(r.json()["token"])


def import_nb201(c: Any, entry_samples_ms: list[float], device: str = "dev1") -> int:
    sp = get_space("nb201")
    lut = LUT(LUTMeta(space=sp.describe(), device=device, backend="ort-cpu"),
              {k: LatencyStats.from_samples(entry_samples_ms) for k in sp.all_block_keys()})
    r = c.post("/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def measure_models(c: Any, tok: dict[str, str], lut_id: int, n: int, median_ms: float) -> list[str]:
    """Enqueue ``n`` whole models of a LUT and post each one's result (every time ``median_ms``)."""
    r = c.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": n, "seed": 3}, headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["jobs_created"] == n, r.text
    jobs = c.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": n},
                  headers=tok).json()["jobs"]
    assert len(jobs) == n and all(j["kind"] == "model" for j in jobs)
    stats = {"count": 2, "mean_ms": median_ms, "std_ms": 0.0, "median_ms": median_ms, "min_ms": median_ms}
    for j in jobs:
        r = c.post(f"/v1/jobs/{j['id']}/result", json={"idempotency_key": f"k{j['id']}", "stats": stats},
                   headers=tok)
        assert r.status_code == 200, r.text
    return [str(j["arch"]) for j in jobs]


# ---- calibration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("entry_ms,measured_ms,needle", [
    ([1.0, 2.0], 0.0, "measured latency is 0.0 ms"),  # a model that took 0 ms: relative residuals divide by it
    ([0.0, 0.0], 5.0, "raw LUT sum is 0 ms"),  # every raw sum 0: no slope (y / 0)
])
def test_a_degenerate_calibration_is_a_422_and_stores_nothing(client, entry_ms: list[float], measured_ms: float,
                                                              needle: str) -> None:
    tok = register(client)
    lut_id = import_nb201(client, entry_ms)
    archs = measure_models(client, tok, lut_id, 3, measured_ms)
    r = client.post(f"/v1/luts/{lut_id}/calibrate", headers=ADMIN_H)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("calibration: ") and needle in detail, detail
    if measured_ms == 0.0:
        assert repr(archs[0]) in detail  # names the model
    # nothing stored: the LUT still has no calibration and still predicts, exports and validates
    assert client.get(f"/v1/luts/{lut_id}").json()["calibration"] is None
    exported = client.get(f"/v1/luts/{lut_id}/export")
    assert exported.status_code == 200 and LUT.from_json_text(exported.text).calibration is None
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": archs})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text
    assert client.get(f"/v1/luts/{lut_id}/validation").status_code == 200
