"""POST /v1/transfers and transferred predictions: a new device answered from the fleet's LUTs plus the
whole models its agent measured, flagged ``transferred`` with a band, superseded by its measured LUT."""

from __future__ import annotations

import numpy as np

from budgetnas.luts.transfer import spearman
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN, ADMIN_H

SP = get_space("nb201")


def fleet_tables() -> tuple[list[str], np.ndarray]:
    """300 nb201 archs on 3 synthetic devices (per-op costs), and a 4th (the new one) mixing two of them."""
    rng = np.random.default_rng(0)
    archs = sorted({SP.format(a) for a in SP.sample_many(300, 2)})
    feats = np.asarray([SP.features(SP.parse(a)) for a in archs], np.float64)
    costs = rng.lognormal(0.0, 0.7, size=(feats.shape[1], 3))
    costs = np.column_stack([costs, 0.6 * costs[:, 0] + 0.9 * costs[:, 1]])
    return archs, 4.0 + feats @ costs


def import_sources(client, archs: list[str], ms: np.ndarray) -> list[int]:
    ids = []
    for j in range(3):
        content = "arch_str,lat\n" + "\n".join(f"{a},{v:.5f}" for a, v in zip(archs, ms[:, j], strict=True))
        r = client.post("/v1/luts/import", json={"format": "arch-csv", "content": content, "column": "lat",
                                                 "device": f"src{j}"}, headers=ADMIN_H)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def lease_all(client, token: str, device: str) -> list[dict]:
    out = []
    while jobs := client.post("/v1/jobs/lease", json={"device": device, "backend": "ort-cpu", "max_jobs": 10},
                              headers={"Authorization": f"Bearer {token}"}).json()["jobs"]:
        out += jobs
    return out


def test_transfer_end_to_end_then_superseded(client) -> None:
    archs, ms = fleet_tables()
    sources = import_sources(client, archs, ms)
    token = client.post("/v1/devices", json={"name": "newdev", "facts": {}}, headers=ADMIN_H).json()["token"]
    r = client.post("/v1/transfers", json={"device": "newdev", "backend": "ort-cpu", "sources": sources,
                                           "measure": 8}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    tr = r.json()
    assert tr["jobs_created"] == 8 and len(set(tr["archs"])) == 8
    lut_id = tr["lut_id"]
    # nothing measured yet: a 422 that says why
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": archs[:2]})
    assert r.status_code == 422 and "transfer target with 0 measured" in r.json()["detail"]
    # the agent measures its whole-model jobs (its true latency: the source LUTs' predictions, mixed)
    truth_lut = {}
    for j, sid in enumerate(sources):
        preds = client.post("/v1/predict", json={"lut": sid, "archs": archs}).json()["predictions"]
        truth_lut[j] = np.asarray([p["latency_ms"] for p in preds])
    # the 4th device mixes the sources' op costs; in the LUTs' terms: 0.6 * src0 + 0.9 * src1 (constant aside)
    truth = 0.6 * truth_lut[0] + 0.9 * truth_lut[1]
    by_arch = dict(zip(archs, truth, strict=True))
    jobs = lease_all(client, token, "newdev")
    assert len(jobs) == 8 and all(job["kind"] == "model" for job in jobs)
    measured = {}
    for job in jobs:
        arch = SP.format(SP.parse(job["arch"]))
        v = by_arch.get(arch)
        if v is None:  # chosen among all 15,625 archs: ask the sources for its truth
            v = sum(w * client.post("/v1/predict", json={"lut": sid, "archs": [arch]}).json()["predictions"][0]
                    ["latency_ms"] for w, sid in zip((0.6, 0.9), sources[:2], strict=True))
        measured[arch] = v
        r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": f"k{job['id']}", "stats": {
            "count": 50, "mean_ms": v, "std_ms": 0.01 * v, "median_ms": v, "min_ms": v}},
            headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["stored"]
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": archs})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert all(p["transferred"] and p["sources"] == sources and p["low_ms"] <= p["latency_ms"] <= p["high_ms"]
               for p in preds)
    assert spearman(np.asarray([p["latency_ms"] for p in preds]), truth) > 0.95
    # the measured archs reproduce inside their band
    back = client.post("/v1/predict", json={"lut": lut_id, "archs": list(measured)}).json()["predictions"]
    inside = [p["low_ms"] <= measured[p["arch"]] <= p["high_ms"] for p in back]
    assert sum(inside) >= 7
    # a measured LUT arrives (every block key): it answers, no longer transferred
    r = client.post(f"/v1/luts/{lut_id}/campaign", json={}, headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["jobs_created"] == len(SP.all_block_keys())
    for job in lease_all(client, token, "newdev"):
        r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": f"b{job['id']}", "stats": {
            "count": 50, "mean_ms": 0.5, "std_ms": 0.01, "median_ms": 0.5, "min_ms": 0.5}},
            headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    assert client.get(f"/v1/luts/{lut_id}").json()["status"] == "complete"
    p = client.post("/v1/predict", json={"lut": lut_id, "archs": archs[:3]}).json()["predictions"]
    assert all(x.get("transferred") is None for x in p)


def test_transfer_bad_input(client) -> None:
    archs, ms = fleet_tables()
    sources = import_sources(client, archs, ms)
    client.post("/v1/devices", json={"name": "newdev", "facts": {}}, headers=ADMIN_H)
    base = {"device": "newdev", "backend": "ort-cpu", "sources": sources}
    r = client.post("/v1/transfers", json={**base, "measure": 1}, headers=ADMIN_H)
    assert r.status_code == 422 and "measure" in r.text
    r = client.post("/v1/transfers", json={**base, "sources": []}, headers=ADMIN_H)
    assert r.status_code == 422 and "sources" in r.text
    r = client.post("/v1/transfers", json={**base, "sources": [sources[0], sources[0]]}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("sources:")
    # a source of another space
    ofa = client.post("/v1/luts", json={"space": {"space": "ofa-mbv3", "width": 1.0, "resolution": 128},
                                        "device": "src0", "backend": "ort-cpu"}, headers=ADMIN_H)
    assert ofa.status_code == 201, ofa.text
    r = client.post("/v1/transfers", json={**base, "sources": [sources[0], ofa.json()["id"]]}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("sources:") and "space" in r.json()["detail"]
    # a source LUT that cannot predict every arch (nothing measured yet)
    empty = client.post("/v1/luts", json={"space": {"space": "nb201"}, "device": "src1", "backend": "x"},
                        headers=ADMIN_H).json()["id"]
    r = client.post("/v1/transfers", json={**base, "sources": [sources[0], empty]}, headers=ADMIN_H)
    assert r.status_code == 422 and "cannot predict every arch" in r.json()["detail"]
    r = client.post("/v1/transfers", json={**base, "sources": [9999]}, headers=ADMIN_H)
    assert r.status_code == 404
    r = client.post("/v1/transfers", json={**base, "device": "nobody"}, headers=ADMIN_H)
    assert r.status_code == 404
    assert client.post("/v1/transfers", json={**base, "measure": 5}).status_code == 401


def test_device_adapt_on_a_live_server(live, tmp_path, capsys) -> None:
    """The CLI on loopback: sources imported, `device adapt --server` enqueues, an agent (REST) measures,
    `budgetnas predict` answers flagged transferred; bad --from is one error line."""
    import httpx

    from budgetnas.cli.main import run

    archs, ms = fleet_tables()
    ids = []
    for j in range(3):
        f = tmp_path / f"src{j}.csv"
        f.write_text("arch_str,lat\n" + "\n".join(f"{a},{v:.5f}" for a, v in zip(archs, ms[:, j], strict=True)))
        assert run(["lut", "import", str(f), "--server", live.url, "--token", ADMIN, "--device", f"src{j}",
                    "--column", "lat"]) == 0
        ids.append(capsys.readouterr().out.split()[-1])
    assert run(["device", "register", "--name", "newdev", "--server", live.url, "--token", ADMIN]) == 0
    token = capsys.readouterr().out.split()[-1]
    srv = ["--server", live.url, "--token", ADMIN]
    assert run(["device", "adapt", "--device", "newdev", "--from", ",".join(ids), "--measure", "6",
                "--backend", "ort-cpu", *srv]) == 0
    lut_id = capsys.readouterr().out.split()[-1]
    h = {"Authorization": f"Bearer {token}"}
    jobs = httpx.post(f"{live.url}/v1/jobs/lease", json={"device": "newdev", "backend": "ort-cpu", "max_jobs": 10},
                      headers=h).json()["jobs"]
    assert len(jobs) == 6
    for j in jobs:  # the new device: 1.5x source 0
        p = httpx.post(f"{live.url}/v1/predict", json={"lut": int(ids[0]), "archs": [j["arch"]]}).json()
        v = 1.5 * p["predictions"][0]["latency_ms"]
        r = httpx.post(f"{live.url}/v1/jobs/{j['id']}/result", headers=h, json={
            "idempotency_key": f"k{j['id']}", "stats": {"count": 9, "mean_ms": v, "std_ms": 0.0, "median_ms": v,
                                                            "min_ms": v}})
        assert r.status_code == 200
    assert run(["predict", archs[0], archs[1], "--server", live.url, "--lut", lut_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.endswith("(transferred)") for line in out)
    # bad input: one error line, exit 2
    for args, needle in ((["--from", "src0,src1", "--measure", "4", "--backend", "x"], "source LUT ids"),
                         (["--from", ids[0], "--measure", "1", "--backend", "x"], "measure"),
                         (["--from", ids[0], "--measure", "4"], "--backend")):
        assert run(["device", "adapt", "--device", "newdev", *args, *srv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1
