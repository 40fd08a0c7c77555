"""The REST v1 contract (docs/rest.md) on SQLite and PostgreSQL, through FastAPI's TestClient."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy import func, select, update

from budgetnas.db.models import Job, Lut, LutEntry
from budgetnas.db.session import Database
from budgetnas.luts.lut import LUT, Calibration, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.spaces import get_space
from tests.conftest import shared_file
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H, make_client

NB201 = {"space": "nb201"}
STATS = {"count": 3, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0, "min_ms": 0.9, "samples_ms": [0.9, 1.0, 1.1]}


def register(c, name="dev1", facts=None) -> dict:
    r = c.post("/v1/devices", json={"name": name, "facts": facts or {"cpu": "x"}}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return r.json()


def agent(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def import_ofa(c, res=224, device="note10") -> dict:
    text = shared_file("ofa_note10_lut", f"{res}_lookup_table.yaml").read_text()
    r = c.post("/v1/luts/import", json={"format": "ofa-yaml", "content": text, "device": device}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return r.json()


def nb201_campaign(c, device="dev1", backend="ort-cpu", validation_models=0) -> dict:
    r = c.post("/v1/campaigns", json={"space": NB201, "device": device, "backend": backend,
                                      "validation_models": validation_models, "seed": 1}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return r.json()


def test_health_metrics_and_dashboard(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "db": "ok"}
    client.get("/v1/luts")
    text = client.get("/metrics").text
    assert 'budgetnas_http_requests_total{method="GET",route="/v1/luts",status="200"} 1' in text
    assert "budgetnas_http_request_seconds_bucket" in text
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "budgetnas dashboard" in page.text


def test_devices_register_rotate_heartbeat(client) -> None:
    first = register(client, "pixel", {"os": "android"})
    second = register(client, "pixel", {"os": "android 15"})
    assert first["id"] == second["id"] and first["token"] != second["token"]
    # the rotated-out token stops working, the new one works for its own device only
    assert client.post("/v1/devices/pixel/heartbeat", json={}, headers=agent(first["token"])).status_code == 401
    r = client.post("/v1/devices/pixel/heartbeat", json={"facts": {"battery": 90}}, headers=agent(second["token"]))
    assert r.status_code == 200 and r.json()["last_heartbeat"]
    other = register(client, "laptop")
    r = client.post("/v1/devices/pixel/heartbeat", json={}, headers=agent(other["token"]))
    assert r.status_code == 403 and "pixel" in r.json()["detail"]
    devs = client.get("/v1/devices").json()["devices"]
    assert [d["name"] for d in devs] == ["pixel", "laptop"]
    assert devs[0]["facts"] == {"os": "android 15", "battery": 90} and "token" not in devs[0]


def test_ofa_yaml_import_predicts_exact_sum_of_means(client) -> None:
    lut = import_ofa(client)
    assert lut["status"] == "complete" and lut["n_keys"] == 96 and lut["coverage"] == 1.0
    raw = yaml.safe_load(shared_file("ofa_note10_lut", "224_lookup_table.yaml").read_text())
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    archs = [sp.format(a) for a in sp.sample_many(200, seed=3)]
    r = client.post("/v1/predict", json={"lut": lut["id"], "archs": archs})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["arch"] for p in preds] == archs
    for p in preds:
        expected = sum(raw[k]["mean"] for k in sp.block_keys(sp.parse(p["arch"])))
        assert p["latency_ms"] == pytest.approx(expected, rel=1e-12)
        assert p["raw_ms"] == pytest.approx(expected, rel=1e-12)
        assert p["low_ms"] < p["latency_ms"] < p["high_ms"]
    # the same numbers as budgetnas.luts.lut.LUTPredictor, band included
    ref = LUT.from_ofa_yaml(shared_file("ofa_note10_lut", "224_lookup_table.yaml").read_text(),
                            LUTMeta(space=sp.describe(), device="x", backend="y"))
    for p, q in zip(preds, LUTPredictor(ref, sp).predict([sp.parse(a) for a in archs]), strict=True):
        assert (p["low_ms"], p["high_ms"]) == pytest.approx((q.low_ms, q.high_ms), rel=1e-12)
    # OFA's dict form is accepted and canonicalised; breakdown lists every block
    d = json.dumps(sp.to_ofa_dict(sp.parse(archs[0])))
    r = client.post("/v1/predict", json={"lut": lut["id"], "archs": [d], "breakdown": True}).json()
    assert r["predictions"][0]["arch"] == archs[0]
    blocks = r["predictions"][0]["blocks"]
    assert [b["key"] for b in blocks] == sp.block_keys(sp.parse(archs[0]))
    assert sum(b["ms"] for b in blocks) == pytest.approx(preds[0]["latency_ms"], rel=1e-12)


def test_export_roundtrip_entries_and_identity_conflict(client) -> None:
    lut = import_ofa(client, res=160)
    text = shared_file("ofa_note10_lut", "160_lookup_table.yaml").read_text()
    again = yaml.safe_load(client.get(f"/v1/luts/{lut['id']}/export?format=ofa-yaml").text)
    assert again == yaml.safe_load(text)
    js = client.get(f"/v1/luts/{lut['id']}/export", params={"format": "json"}).json()
    parsed = LUT.from_json_dict(js)
    assert parsed.meta.statistic == "mean" and parsed.meta.device == "note10" and len(parsed.entries) == 96
    entries = client.get(f"/v1/luts/{lut['id']}/entries").json()["entries"]
    assert len(entries) == 96 and {"key", "mean_ms", "std_ms", "count"} <= set(entries[0])
    # the identical LUT again: 409 naming the existing id; nothing new stored
    r = client.post("/v1/luts/import", json={"format": "ofa-yaml", "content": text, "device": "note10"}, headers=ADMIN_H)
    assert r.status_code == 409 and f"id {lut['id']}" in r.json()["detail"]
    # our JSON re-imports as a new LUT when the runtime version differs
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(js), "runtime_version": "v2"},
                    headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["meta"]["runtime_version"] == "v2"
    assert len(client.get("/v1/luts").json()["luts"]) == 2


def test_arch_csv_import_fits_blocks(client) -> None:
    lines = shared_file("nb201", "nb201_bench.csv").read_text().splitlines()[:301]
    r = client.post("/v1/luts/import", json={"format": "arch-csv", "content": "\n".join(lines),
                                             "column": "pixel3_latency_ms", "device": "pixel3"}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    lut = r.json()
    assert lut["meta"]["space"]["space"] == "nb201" and lut["status"] == "complete"
    models = client.get(f"/v1/luts/{lut['id']}/validation").json()["models"]
    assert len(models) == 300
    # a least-squares fit: the sums explain most of the measured variance (R^2)
    y = [m["measured_ms"] for m in models]
    mean = sum(y) / len(y)
    ss_res = sum((m["raw_ms"] - m["measured_ms"]) ** 2 for m in models)
    assert 1 - ss_res / sum((v - mean) ** 2 for v in y) > 0.8
    cal = client.post(f"/v1/luts/{lut['id']}/calibrate", headers=ADMIN_H)
    assert cal.status_code == 200 and cal.json()["calibration"]["n_models"] == 300
    assert client.get(f"/v1/luts/{lut['id']}").json()["calibration"]["n_models"] == 300


def test_a_campaigns_statistic_defaults_by_backend_and_is_kept(client) -> None:
    register(client)

    def stat(lut_id: int) -> str:
        return client.get(f"/v1/luts/{lut_id}").json()["meta"]["statistic"]

    assert stat(nb201_campaign(client)["lut_id"]) == "median"  # the default
    body = {"space": NB201, "device": "dev1", "backend": "torch-cpu", "statistic": "p90", "validation_models": 1}
    r = client.post("/v1/campaigns", json=body, headers=ADMIN_H)
    assert r.status_code == 201 and stat(r.json()["lut_id"]) == "p90"
    before = client.get(f"/v1/luts/{r.json()['lut_id']}").json()["progress"]
    r = client.post("/v1/campaigns", json={**body, "statistic": "min", "validation_models": 9}, headers=ADMIN_H)
    assert r.status_code == 409 and "statistic 'min'" in r.json()["detail"] and "'p90'" in r.json()["detail"], r.text
    lut_id = client.post("/v1/campaigns", json={**body, "statistic": None}, headers=ADMIN_H).json()["lut_id"]
    assert client.get(f"/v1/luts/{lut_id}").json()["progress"] == before  # left out: the LUT's own, nothing new


def test_campaign_lease_result_idempotent_completes_lut(client, db_url) -> None:
    dev = register(client)
    camp = nb201_campaign(client, validation_models=2)
    sp = get_space("nb201")
    n_keys = len(sp.all_block_keys())
    assert camp["jobs_created"] == n_keys + 2
    # enqueuing again creates nothing: every key is pending
    assert nb201_campaign(client)["jobs_created"] == 0
    tok = agent(dev["token"])
    r = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "other"}, headers=tok)
    assert r.status_code == 200 and r.json() == {"jobs": []}
    done: set[str] = set()
    model_jobs = []
    while True:
        jobs = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": 5},
                           headers=tok).json()["jobs"]
        if not jobs:
            break
        for j in jobs:
            assert j["attempts"] == 1 and j["space"]["space"] == "nb201" and j["lut_id"] == camp["lut_id"]
            body = {"idempotency_key": f"k{j['id']}", "stats": STATS, "environment": {"host": "h"}}
            r = client.post(f"/v1/jobs/{j['id']}/result", json=body, headers=tok)
            assert r.status_code == 200 and r.json()["stored"] is True
            again = client.post(f"/v1/jobs/{j['id']}/result", json={**body, "idempotency_key": "other"}, headers=tok)
            assert again.status_code == 200 and again.json()["stored"] is False and again.json()["state"] == "done"
            if j["kind"] == "block":
                done.add(j["key"])
            else:
                model_jobs.append(j)
    assert done == set(sp.all_block_keys()) and len(model_jobs) == 2
    lut = client.get(f"/v1/luts/{camp['lut_id']}").json()
    assert lut["status"] == "complete" and lut["n_measured"] == n_keys
    assert lut["progress"] == {"queued": 0, "leased": 0, "done": n_keys + 2, "failed": 0}
    assert lut["meta"]["environment"] == {"host": "h"}
    db = Database(db_url)
    with db.session() as s:  # stored exactly once
        assert s.scalar(select(func.count()).select_from(LutEntry)) == n_keys
    db.dispose()
    # a complete LUT predicts; an arch of the space sums its keys' statistic (the default: median)
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    p = client.post("/v1/predict", json={"lut": camp["lut_id"], "archs": [arch]}).json()["predictions"][0]
    assert p["latency_ms"] == pytest.approx(len(sp.blocks(sp.parse(arch))) * STATS["median_ms"])
    exported = LUT.from_json_dict(client.get(f"/v1/luts/{camp['lut_id']}/export").json())
    assert exported.entries[sp.all_block_keys()[0]].samples_ms == (0.9, 1.0, 1.1)
    # the two model jobs measured whole models: calibration can be fitted from them
    assert len(client.get(f"/v1/luts/{camp['lut_id']}/validation").json()["models"]) == 2


def test_fail_retries_until_cap_and_release_does_not_count(client) -> None:
    dev = register(client)
    nb201_campaign(client)
    tok = agent(dev["token"])
    lease = {"device": "dev1", "backend": "ort-cpu"}
    job = client.post("/v1/jobs/lease", json=lease, headers=tok).json()["jobs"][0]
    r = client.post(f"/v1/jobs/{job['id']}/release", json={"lease_id": job["lease_id"]}, headers=tok).json()
    assert r == {"id": job["id"], "state": "queued", "attempts": 0}
    r = client.post(f"/v1/jobs/{job['id']}/fail", json={"error": "late"}, headers=tok)
    assert r.status_code == 409 and "not leased" in r.json()["detail"]
    assert client.post(f"/v1/jobs/{job['id']}/release", json={"lease_id": job["lease_id"]},
                       headers=tok).status_code == 409
    states = []
    for attempt in (1, 2, 3):
        j = client.post("/v1/jobs/lease", json=lease, headers=tok).json()["jobs"][0]
        assert j["id"] == job["id"] and j["attempts"] == attempt
        r = client.post(f"/v1/jobs/{j['id']}/fail", json={"error": "boom", "output": "trace", "lease_id": j["lease_id"]},
                        headers=tok)
        states.append(r.json()["state"])
    assert states == ["queued", "queued", "failed"]
    r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "x", "stats": STATS}, headers=tok)
    assert r.status_code == 409
    nxt = client.post("/v1/jobs/lease", json=lease, headers=tok).json()["jobs"][0]
    assert nxt["id"] != job["id"]


def test_expired_lease_is_reclaimed_and_late_result_accepted(client, db_url) -> None:
    dev = register(client)
    nb201_campaign(client)
    tok = agent(dev["token"])
    lease = {"device": "dev1", "backend": "ort-cpu", "lease_seconds": 30}
    job = client.post("/v1/jobs/lease", json=lease, headers=tok).json()["jobs"][0]
    hb = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"lease_seconds": 120, "lease_id": job["lease_id"]},
                     headers=tok)
    assert hb.status_code == 200 and hb.json()["lease_expires"] > job["lease_expires"]
    db = Database(db_url)
    with db.session(write=True) as s:  # let the lease run out
        s.execute(update(Job).where(Job.id == job["id"]).values(lease_expires=datetime.now(UTC) - timedelta(seconds=1)))
    r = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"lease_id": job["lease_id"]}, headers=tok)
    assert r.status_code == 409 and "lost" in r.json()["detail"]
    again = client.post("/v1/jobs/lease", json=lease, headers=tok).json()["jobs"][0]
    assert again["id"] == job["id"] and again["attempts"] == 2
    # the first holder's late result still counts (the job is not done); the second one's is a repeat
    r1 = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "a", "stats": STATS}, headers=tok)
    r2 = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "b", "stats": STATS}, headers=tok)
    assert (r1.json()["stored"], r2.json()["stored"]) == (True, False)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LutEntry)) == 1
    db.dispose()


def test_agent_tokens_are_scoped_to_their_device(client) -> None:
    a, b = register(client, "a"), register(client, "b")
    nb201_campaign(client, device="a")
    r = client.post("/v1/jobs/lease", json={"device": "a", "backend": "ort-cpu"}, headers=agent(b["token"]))
    assert r.status_code == 403 and "device" in r.json()["detail"]
    job = client.post("/v1/jobs/lease", json={"device": "a", "backend": "ort-cpu"}, headers=agent(a["token"])).json()
    jid = job["jobs"][0]["id"]
    for path, body in ((f"/v1/jobs/{jid}/result", {"idempotency_key": "x", "stats": STATS}),
                       (f"/v1/jobs/{jid}/fail", {"error": "e"}), (f"/v1/jobs/{jid}/heartbeat", {}),
                       (f"/v1/jobs/{jid}/release", None)):
        r = client.post(path, json=body, headers=agent(b["token"]))
        assert r.status_code == 403, path
    # the admin token may act for any device
    r = client.post(f"/v1/jobs/{jid}/result", json={"idempotency_key": "x", "stats": STATS}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["stored"]


def test_accuracy_upsert_and_query(client) -> None:
    sp = get_space("nb201")
    archs = [sp.format(a) for a in sp.sample_many(3, seed=0)]
    recs = [{"arch": a, "dataset": "cifar10", "metric": "top1", "value": 90.0 + i, "source": "nb201"}
            for i, a in enumerate(archs)]
    r = client.post("/v1/accuracy", json={"space": "nb201", "records": recs}, headers=ADMIN_H)
    assert r.json() == {"inserted": 3, "updated": 0}
    recs[0]["value"] = 50.0
    r = client.post("/v1/accuracy", json={"space": "nb201", "records": recs}, headers=ADMIN_H)
    assert r.json() == {"inserted": 0, "updated": 1}
    got = client.get("/v1/accuracy", params={"space": "nb201", "dataset": "cifar10", "limit": 2}).json()
    assert got["total"] == 3 and len(got["records"]) == 2 and got["records"][0]["value"] == 50.0
    assert client.get("/v1/accuracy", params={"dataset": "imagenet"}).json() == {"records": [], "total": 0}


def test_artifacts_by_sha256(client) -> None:
    dev = register(client)
    data = b"\x00onnx-bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    assert client.put(f"/v1/artifacts/{'0' * 64}", content=data, headers=agent(dev["token"])).status_code == 400
    r = client.put(f"/v1/artifacts/{sha}", content=data, headers=agent(dev["token"]))
    assert r.status_code == 201 and r.json()["created"] is True
    assert client.put(f"/v1/artifacts/{sha}", content=data, headers=ADMIN_H).json()["created"] is False
    assert client.get(f"/v1/artifacts/{sha}").content == data
    assert client.get(f"/v1/artifacts/{'1' * 64}").status_code == 404
    assert client.put(f"/v1/artifacts/{sha}", content=data).status_code == 401


def test_reads_can_require_a_token(db_url) -> None:
    with make_client(db_url, reads_require_token=True) as c:
        assert c.get("/v1/luts").status_code == 401
        assert c.get("/v1/luts", headers=ADMIN_H).status_code == 200
        tok = register(c)["token"]
        assert c.get("/v1/devices", headers=agent(tok)).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_missing_keys_are_a_422_naming_them(client) -> None:
    sp = get_space("nb201")
    keys = sp.all_block_keys()
    partial = LUT(LUTMeta(space=sp.describe(), device="d", backend="b"),
                  {k: LatencyStats.from_samples([1.0, 1.1]) for k in keys if not k.startswith("nor_conv_3x3")})
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(partial.to_json_dict())},
                    headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["coverage"] < 1
    arch = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"  # the conv is live: node 3 reads node 1
    r = client.post("/v1/predict", json={"lut": r.json()["id"], "archs": [arch]})
    assert r.status_code == 422
    body = r.json()
    assert body["missing_keys"] and all(k.startswith("nor_conv_3x3") for k in body["missing_keys"])
    assert body["missing_keys"][0] in body["detail"]


def _counts(db_url: str) -> tuple[int, int, int]:
    db = Database(db_url)
    with db.session() as s:
        out = (s.scalar(select(func.count()).select_from(Lut)), s.scalar(select(func.count()).select_from(LutEntry)),
               s.scalar(select(func.count()).select_from(Job)))
    db.dispose()
    return out  # type: ignore[return-value]


BAD = [
    # (method, path, json or raw bytes, auth, status, text the detail must contain)
    ("post", "/v1/predict", b"{not json", None, 422, "body: malformed JSON"),
    ("post", "/v1/predict", {"lut": "one", "archs": ["x"]}, None, 422, "lut"),
    ("post", "/v1/predict", {"lut": 1, "archs": "x"}, None, 422, "archs"),
    ("post", "/v1/predict", {"lut": 1, "archs": []}, None, 422, "archs"),
    ("post", "/v1/predict", {"lut": 999, "archs": ["x"]}, None, 404, "lut"),
    ("post", "/v1/predict", {"lut": "{lut}", "archs": ["w1.2_r224|k3e3,k3e3|k9e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"]},
     None, 422, "archs[0]: unit 2 layer 1 kernel"),
    ("post", "/v1/predict", {"lut": "{lut}", "archs": ["w1.2_r160|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"]},
     None, 422, "archs[0]: resolution 160"),
    ("post", "/v1/predict", {"lut": "{lut}", "archs": ["w1.2_r224|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"] * 10_001},
     None, 422, "archs: 10001"),
    ("post", "/v1/luts/import", {"format": "ofa-yaml", "content": "a: [1"}, "admin", 422, "content"),
    ("post", "/v1/luts/import", {"format": "xml", "content": "x"}, "admin", 422, "format"),
    ("post", "/v1/luts/import", {"format": "json", "content": "{}"}, "admin", 422, "content"),
    ("post", "/v1/luts/import", {"format": "ofa-yaml", "content": "x: {count: 1, mean: 1, std: 0}"}, "admin", 422, "content"),
    ("post", "/v1/luts/import", {"format": "ofa-yaml", "content": "x: 1"}, None, 401, "authorization"),
    ("post", "/v1/luts/import", {"format": "ofa-yaml", "content": "x: 1"}, "bad", 401, "authorization"),
    ("post", "/v1/luts", {"space": {"space": "nb201"}, "device": "ghost", "backend": "b"}, "admin", 404, "device"),
    ("post", "/v1/luts", {"space": {"space": "nope"}, "device": "dev1", "backend": "b"}, "admin", 422, "nope"),
    ("post", "/v1/luts", {"space": {"space": "ofa-mbv3", "resolution": 230}, "device": "dev1", "backend": "b"},
     "admin", 422, "space: resolution 230"),
    ("post", "/v1/luts", {"space": {"space": "nb201", "bogus": 1}, "device": "dev1", "backend": "b"}, "admin", 422, "space"),
    ("post", "/v1/campaigns", {"space": {"space": "nb201"}, "device": "ghost", "backend": "b"}, "admin", 404, "device"),
    ("post", "/v1/campaigns", {"space": {"space": "nb201"}, "device": "dev1", "backend": "b", "batch": "many"},
     "admin", 422, "batch"),
    ("post", "/v1/jobs/lease", {"device": "ghost", "backend": "b"}, "admin", 404, "device"),
    ("post", "/v1/jobs/lease", {"device": "dev1", "backend": "b"}, "bad", 401, "authorization"),
    ("post", "/v1/jobs/lease", {"device": "dev1", "backend": "b", "max_jobs": 0}, "admin", 422, "max_jobs"),
    ("post", "/v1/jobs/999/result", {"idempotency_key": "k", "stats": STATS}, "admin", 404, "job"),
    ("post", "/v1/jobs/999/result", {"idempotency_key": "k", "stats": "fast"}, "admin", 422, "stats"),
    ("post", "/v1/devices", {"name": ""}, "admin", 422, "name"),
    ("post", "/v1/devices", {"name": "x", "facts": []}, "admin", 422, "facts"),
    ("post", "/v1/accuracy", {"space": "nb201", "records": [{"arch": "bad", "dataset": "c", "value": 1}]},
     "admin", 422, "records[0].arch"),
    ("post", "/v1/accuracy", {"space": "nb201", "records": [{"arch": "bad", "dataset": "c", "value": "high"}]},
     "admin", 422, "records.0.value"),
    ("get", "/v1/luts/999", None, None, 404, "lut"),
    ("get", "/v1/luts/{lut}/export?format=xml", None, None, 422, "format"),
    ("post", "/v1/generate", {"checkpoint": "none", "budget": 10}, None, 404, "checkpoint"),
    ("post", "/v1/checkpoints", {"name": "c", "bundle": "!!"}, "admin", 422, "bundle"),
]


@pytest.mark.parametrize("method,path,body,auth,status,needle", BAD, ids=[f"{b[1]}-{b[4]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(client, db_url, method, path, body, auth, status,
                                                                needle) -> None:
    register(client, "dev1")
    lut_id = import_ofa(client)["id"]
    before = _counts(db_url)
    headers = {"Authorization": f"Bearer {auth}"} if auth == "bad" else ADMIN_H if auth == "admin" else {}
    path = path.replace("{lut}", str(lut_id))
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace('"{lut}"', str(lut_id)))
    kw = {"content": body, "headers": {**headers, "content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body, "headers": headers}
    r = client.request(method.upper(), path, **kw)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert _counts(db_url) == before


def test_oversized_body_is_413(db_url) -> None:
    with make_client(db_url, max_body_bytes=4096) as c:
        r = c.post("/v1/predict", json={"lut": 1, "archs": ["x" * 5000]})
        assert r.status_code == 413 and "body" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(10):
                yield b" " * 1000
        r = c.post("/v1/luts/import", content=chunks(), headers={**ADMIN_H, "content-type": "application/json"})
        assert r.status_code == 413


def test_import_is_one_transaction(client, db_url) -> None:
    """A failure half way (a duplicate key inside one upload) leaves no LUT behind."""
    register(client, "dev1")
    sp = get_space("nb201")
    lut = LUT(LUTMeta(space=sp.describe(), device="dev1", backend="b"),
              {k: LatencyStats.from_samples([1.0, 2.0]) for k in sp.all_block_keys()})
    d = lut.to_json_dict()
    text = json.dumps(d)
    dup = text.replace('"entries": {', '"entries": {' + json.dumps(sp.all_block_keys()[0]) + ': '
                       + json.dumps(d["entries"][sp.all_block_keys()[0]]) + ", ", 1)
    bad = json.loads(text)  # an extra key outside the space fails only after every entry was read
    bad["entries"]["stem-input:1x1x1-output:1x1x1"] = bad["entries"][sp.all_block_keys()[0]]
    before = _counts(db_url)
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(bad)}, headers=ADMIN_H)
    assert r.status_code == 422 and "not block keys" in r.json()["detail"]
    assert _counts(db_url) == before
    r = client.post("/v1/luts/import", json={"format": "json", "content": dup}, headers=ADMIN_H)
    assert r.status_code == 422 and f"duplicate key {sp.all_block_keys()[0]!r}" in r.json()["detail"]
    assert _counts(db_url) == before
    assert client.post("/v1/luts/import", json={"format": "json", "content": text}, headers=ADMIN_H).status_code == 201


def _calibrated(client, lut_id: int, cal: dict, arch: str) -> float:
    """``cal`` applied to ``arch`` over the stored LUT, computed here (``budgetnas.luts.calibration.apply``)."""
    from budgetnas.luts.calibration import apply

    lut = LUT.from_json_dict(client.get(f"/v1/luts/{lut_id}/export").json())
    sp = get_space("nb201")
    return float(apply(LUTPredictor(lut, sp), Calibration.from_dict(cal), [sp.parse(arch)])[0])


def test_prediction_cache_follows_calibration(client) -> None:
    """The in-memory LUT is replaced when the stored LUT changes (here: a new calibration)."""
    lines = shared_file("nb201", "nb201_bench.csv").read_text().splitlines()[:41]
    lut = client.post("/v1/luts/import", json={"format": "arch-csv", "content": "\n".join(lines),
                                               "column": "raspi4_latency_ms"}, headers=ADMIN_H).json()
    arch = lines[1].split(",")[1]
    before = client.post("/v1/predict", json={"lut": lut["id"], "archs": [arch]}).json()["predictions"][0]
    assert before["latency_ms"] == before["raw_ms"]
    cal = client.post(f"/v1/luts/{lut['id']}/calibrate", headers=ADMIN_H).json()["calibration"]
    after = client.post("/v1/predict", json={"lut": lut["id"], "archs": [arch]}).json()["predictions"][0]
    assert after["latency_ms"] == pytest.approx(_calibrated(client, lut["id"], cal, arch)) != before["latency_ms"]
    raw = client.post("/v1/predict", json={"lut": lut["id"], "archs": [arch], "calibrated": False}).json()
    assert raw["predictions"][0]["latency_ms"] == before["latency_ms"]


def test_importing_the_app_does_not_import_torch() -> None:
    code = ("import sys; import budgetnas.lut_server.app, budgetnas.lut_server.routes.checkpoints; "
            "budgetnas.lut_server.app.create_app; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_replicas_sharing_a_database_see_lut_changes(db_url) -> None:
    """Two app instances (as two workers or replicas) on one database: a calibration made through one
    changes the other's predictions (revision checked on every request with a TTL of 0)."""
    lines = shared_file("nb201", "nb201_bench.csv").read_text().splitlines()[:41]
    with make_client(db_url, predict_revision_ttl=0) as a, make_client(db_url, predict_revision_ttl=0) as b:
        lut = a.post("/v1/luts/import", json={"format": "arch-csv", "content": "\n".join(lines),
                                               "column": "raspi4_latency_ms"}, headers=ADMIN_H).json()
        arch = lines[1].split(",")[1]
        before = b.post("/v1/predict", json={"lut": lut["id"], "archs": [arch]}).json()["predictions"][0]
        cal = a.post(f"/v1/luts/{lut['id']}/calibrate", headers=ADMIN_H).json()["calibration"]
        after = b.post("/v1/predict", json={"lut": lut["id"], "archs": [arch]}).json()["predictions"][0]
        assert after["latency_ms"] == pytest.approx(_calibrated(a, lut["id"], cal, arch))
        assert after["latency_ms"] != before["latency_ms"]
