"""Hostile input (issue 16, items 1, 2, 3, 9, 12): no payload or stored value breaks the service.

Every test runs on SQLite and PostgreSQL (the ``client``/``db_url`` fixtures). Each one sends what an
attacker with at most an agent token (or none) would send, checks the answer is a 4xx naming the
field, and that stored data and later reads are as they were.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import update

import budgetnas.lut_server.predictor as predictor
from budgetnas.core.jsonlimits import MAX_BYTES, MAX_DEPTH, json_problem, shown_json
from budgetnas.db.models import Device, Lut
from budgetnas.db.session import Database
from budgetnas.lut_server.params import BoundedJson
from budgetnas.lut_server.routes import ROUTERS
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta
from budgetnas.spaces import get_space
from budgetnas.spaces.ofa_mbv3 import _canonical_parse
from tests.request_types import unchecked
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H, make_client, rewritten_bundle, tiny_nb201_bundle

NB201 = {"space": "nb201"}
STATS = {"count": 3, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0, "min_ms": 0.9, "samples_ms": [0.9, 1.0, 1.1]}


def deep(n: int) -> dict[str, Any]:
    v: dict[str, Any] = {}
    for _ in range(n):
        v = {"a": v}
    return v


def agent(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(c: Any, name: str = "dev1", facts: dict[str, Any] | None = None) -> dict[str, Any]:
    r = c.post("/v1/devices", json={"name": name, "facts": facts or {"cpu": "x"}}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return dict(r.json())


def campaign(c: Any, device: str = "dev1", backend: str = "ort-cpu") -> dict[str, Any]:
    r = c.post("/v1/campaigns", json={"space": NB201, "device": device, "backend": backend}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return dict(r.json())


def lease(c: Any, token: str, device: str = "dev1") -> dict[str, Any]:
    jobs = c.post("/v1/jobs/lease", json={"device": device, "backend": "ort-cpu"}, headers=agent(token)).json()["jobs"]
    assert jobs
    return dict(jobs[0])


def synthetic_lut(c: Any, space: dict[str, Any], device: str = "imported") -> int:
    sp = get_space(space["space"], **{k: v for k, v in space.items() if k != "space"})
    lut = LUT(LUTMeta(space=sp.describe(), device=device, backend="b"),
              {k: LatencyStats.from_samples([1.0, 2.0]) for k in sp.all_block_keys()})
    r = c.post("/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


# ---- the one bounded-JSON check ------------------------------------------------------------------
def test_json_problem_walks_any_depth_without_recursion() -> None:
    assert json_problem(deep(MAX_DEPTH - 1)) is None
    assert "deeper than" in str(json_problem(deep(MAX_DEPTH)))
    assert "deeper than" in str(json_problem(deep(100_000)))  # far past the recursion limit
    assert "bytes" in str(json_problem({"x": "y" * MAX_BYTES}))
    assert "not a JSON number" in str(json_problem({"x": [float("nan")]}))
    assert json_problem({"x": [1, 2.5, "s", None, True, {"y": []}]}) is None
    assert shown_json(deep(300)) == {"withheld": f"the stored value is not shown: nested deeper than {MAX_DEPTH} levels"}


def _json_kind(tp: Any, origin: Any) -> str | None:
    return "leaf" if tp is Any or tp is dict or origin is dict else None


def _open_json(tp: Any, bounded: bool, where: str) -> list[str]:
    """Where in a request type a free-form JSON value (dict, Any) is not checked by BoundedJson."""
    return unchecked(tp, BoundedJson, _json_kind, bounded, where)


def test_every_free_form_json_field_of_every_request_model_is_bounded() -> None:
    """One validator (BoundedJson) on every dict-typed field of every request body: none is left open."""
    bodies = [p.field_info.annotation for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)
              for p in route.dependant.body_params]
    assert len(bodies) >= 14
    assert [w for b in bodies for w in _open_json(b, False, str(b))] == []
    # the check itself sees an open field
    assert _open_json(dict[str, Any] | None, False, "x") == ["x"]


# ---- item 1: an environment nested ~300 deep ------------------------------------------------------
def test_deep_or_huge_environment_is_refused_before_anything_is_stored(client) -> None:
    dev = register(client)
    camp = campaign(client)
    job = lease(client, dev["token"])
    for env, what in ((deep(300), "nested deeper than"), ({"log": "x" * (MAX_BYTES + 1)}, "bytes of JSON")):
        r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k", "stats": STATS,
                                                               "environment": env}, headers=agent(dev["token"]))
        assert r.status_code == 422 and r.json()["detail"].startswith("environment: ") and what in r.json()["detail"]
    r = client.get(f"/v1/luts/{camp['lut_id']}")
    assert r.status_code == 200 and r.json()["n_measured"] == 0 and r.json()["progress"]["leased"] == 1
    assert client.get("/v1/luts").status_code == 200
    # a bounded environment is stored and shown as sent
    env = {"runner": {"name": "ort", "version": "1.2"}}
    r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k", "stats": STATS, "environment": env},
                    headers=agent(dev["token"]))
    assert r.status_code == 200 and client.get(f"/v1/luts/{camp['lut_id']}").json()["meta"]["environment"] == env


def test_a_bad_value_already_stored_does_not_break_lut_or_device_listings(client, db_url) -> None:
    dev = register(client)
    camp = campaign(client)
    db = Database(db_url)
    with db.session(write=True) as s:  # as a server before these bounds could have stored them
        s.execute(update(Lut).where(Lut.id == camp["lut_id"]).values(meta={"environment": deep(300), "source": "x"}))
        s.execute(update(Device).where(Device.id == dev["id"]).values(facts=deep(300)))
    db.dispose()
    withheld = shown_json(deep(300))
    for path in ("/v1/luts", f"/v1/luts/{camp['lut_id']}"):
        r = client.get(path)
        assert r.status_code == 200, path
        lut = r.json()["luts"][0] if path == "/v1/luts" else r.json()
        assert lut["meta"]["environment"] == withheld
    r = client.get("/v1/devices")
    assert r.status_code == 200 and r.json()["devices"][0]["facts"] == withheld


# ---- item 2: device facts nested deep --------------------------------------------------------------
def test_deep_facts_on_heartbeat_are_refused_and_the_device_list_stays_up(client) -> None:
    dev = register(client, facts={"cpu": "x"})
    tok = agent(dev["token"])
    r = client.post("/v1/devices/dev1/heartbeat", json={"facts": deep(300)}, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith("facts: nested deeper than")
    r = client.post("/v1/devices/dev1/heartbeat", headers={**tok, "content-type": "application/json"},
                    content=b'{"facts": {"t": NaN}}')
    assert r.status_code == 422 and r.json()["detail"] == "facts: nan is not a JSON number"
    r = client.get("/v1/devices")
    assert r.status_code == 200 and r.json()["devices"][0]["facts"] == {"cpu": "x"}
    assert r.json()["devices"][0]["last_heartbeat"] is None  # nothing was written


def test_heartbeat_facts_cannot_grow_the_stored_facts_past_the_bound(client) -> None:
    dev = register(client)
    tok = agent(dev["token"])
    chunk = "x" * (MAX_BYTES // 3)
    for i in range(2):
        assert client.post("/v1/devices/dev1/heartbeat", json={"facts": {f"k{i}": chunk}}, headers=tok).status_code == 200
    r = client.post("/v1/devices/dev1/heartbeat", json={"facts": {"k2": chunk}}, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith("facts (merged with the stored facts): ")
    assert set(client.get("/v1/devices").json()["devices"][0]["facts"]) == {"cpu", "k0", "k1"}


@pytest.mark.parametrize("depth", [255, 300])
def test_register_with_deep_facts_neither_commits_nor_rotates_the_token(client, depth: int) -> None:
    dev = register(client)
    r = client.post("/v1/devices", json={"name": "dev1", "facts": deep(depth)}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("facts: nested deeper than")
    r = client.post("/v1/devices", json={"name": "dev2", "facts": deep(depth)}, headers=ADMIN_H)
    assert r.status_code == 422
    assert client.post("/v1/devices/dev1/heartbeat", json={}, headers=agent(dev["token"])).status_code == 200
    assert [d["name"] for d in client.get("/v1/devices").json()["devices"]] == ["dev1"]


@pytest.mark.parametrize("path,body,field", [
    ("/v1/luts", {"space": {"space": "nb201", "x": deep(40)}, "device": "dev1", "backend": "b"}, "space"),
    ("/v1/campaigns", {"space": {"space": "nb201", "x": deep(40)}, "device": "dev1", "backend": "b"}, "space"),
    ("/v1/luts/import", {"format": "json", "content": "{}", "space": deep(40)}, "space"),
])
def test_every_admin_json_field_is_bounded_too(client, path: str, body: dict[str, Any], field: str) -> None:
    register(client)
    r = client.post(path, json=body, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: nested deeper than"), r.text
    assert client.get("/v1/luts").json()["luts"] == []


def test_stats_nested_deep_are_refused(client) -> None:
    dev = register(client)
    campaign(client)
    job = lease(client, dev["token"])
    r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k", "stats": {**STATS, "x": deep(300)}},
                    headers=agent(dev["token"]))
    assert r.status_code == 422 and r.json()["detail"].startswith("stats: nested deeper than")


def test_imported_lut_file_environment_is_bounded(client) -> None:
    sp = get_space("nb201")
    lut = LUT(LUTMeta(space=sp.describe(), device="d", backend="b"),
              {k: LatencyStats.from_samples([1.0, 2.0]) for k in sp.all_block_keys()})
    data = lut.to_json_dict()
    data["meta"]["environment"] = {"big": "x" * (MAX_BYTES + 1)}
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(data)}, headers=ADMIN_H)
    assert r.status_code == 422 and "environment" in r.json()["detail"], r.text
    assert client.get("/v1/luts").json()["luts"] == [] and client.get("/v1/devices").json()["devices"] == []


@pytest.fixture(scope="module")
def bundle() -> bytes:
    return tiny_nb201_bundle()


def test_checkpoint_meta_is_bounded(client, bundle: bytes) -> None:
    bad = base64.b64encode(rewritten_bundle(bundle, extra=deep(300))).decode()
    r = client.post("/v1/checkpoints", json={"name": "deep", "bundle": bad}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("bundle: meta: nested deeper than"), r.text
    assert client.get("/v1/checkpoints").json()["checkpoints"] == []


# ---- item 3: canonical, bounded caches behind the open /v1/predict ---------------------------------
def _spellings(arch: str, n: int) -> list[str]:
    """n distinct spellings of one ofa-mbv3 architecture (leading zeros, outer blanks)."""
    head, *units = arch.split("|")
    out = []
    for i in range(n):
        zeros = "0" * (i % 3)
        u = [",".join(t.replace("k", "k" + zeros, 1) for t in unit.split(",")) for unit in units]
        out.append(" " * (i // 3) + "|".join([head.replace("_r", "_r" + zeros), *u]))
    return out


def test_predict_spellings_share_one_canonical_cache_entry(client) -> None:
    lut_id = synthetic_lut(client, {"space": "ofa-mbv3", "width": 1.2, "resolution": 224})
    sp = get_space("ofa-mbv3")
    arch = sp.format(sp.sample_many(1, seed=5)[0])
    assert client.post("/v1/predict", json={"lut": lut_id, "archs": [arch]}).status_code == 200
    prep = client.app.state.budgetnas.predictors.fresh(lut_id) or client.app.state.budgetnas.predictors._items[lut_id][0]
    before = (len(prep.arch_rows), len(prep.fast.learnt), len(prep.fast.layers), _canonical_parse.cache_info().currsize)
    spelt = _spellings(arch, 300)
    assert len(set(spelt)) == 300
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": spelt})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert {p["arch"] for p in preds} == {arch} and len({p["latency_ms"] for p in preds}) == 1
    after = (len(prep.arch_rows), len(prep.fast.learnt), len(prep.fast.layers), _canonical_parse.cache_info().currsize)
    # at most the one canonical string is new (the walk parses a stripped canonical spelling)
    assert after[0] <= before[0] + 1 and after[1:3] == before[1:3] and after[3] <= before[3] + 1
    assert all(k == sp.format(sp.parse(k)) for k in prep.arch_rows)
    assert all(t == tok for (_, _, t), (tok, _) in prep.fast.layers.items())


def test_predict_arch_cache_is_bounded(client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictor, "ARCH_CACHE_SIZE", 10)
    lut_id = synthetic_lut(client, NB201)
    sp = get_space("nb201")
    archs = [sp.format(a) for a in sp.sample_many(40, seed=2)]
    spelt = [a.replace("~0", "~00") for a in archs]  # nb201 has no fast path: every arch is walked
    assert client.post("/v1/predict", json={"lut": lut_id, "archs": spelt}).status_code == 200
    prep = client.app.state.budgetnas.predictors._items[lut_id][0]
    assert len(prep.arch_rows) == 10 and all(k in archs for k in prep.arch_rows)


def test_metrics_labels_are_bounded_by_what_the_server_knows(client) -> None:
    for i in range(5):
        client.request(f"X{i}", "/nowhere")
    text = client.get("/metrics").text
    assert "X0" not in text and 'method="other",route="unmatched"' in text


def test_generator_bundles_in_memory_are_bounded(client, bundle: bytes) -> None:
    from budgetnas.lut_server.routes.checkpoints import GENERATORS_KEPT

    b64 = base64.b64encode(bundle).decode()
    for i in range(GENERATORS_KEPT + 2):
        ck = client.post("/v1/checkpoints", json={"name": f"g{i}", "bundle": b64}, headers=ADMIN_H).json()
        assert client.post("/v1/generate", json={"checkpoint": ck["id"], "budget": 1.0}).status_code == 200
    assert len(client.app.state.budgetnas.generators) == GENERATORS_KEPT


# ---- item 9: more 500s -------------------------------------------------------------------------------
@pytest.mark.parametrize("space,field", [
    ({"space": "ofa-mbv3", "width": "abc"}, "width"), ({"space": "nb201", "channels": "16"}, "channels"),
    ({"space": "nb201", "channels": 2.5}, "channels"), ({"space": "nb201", "cells": True}, "cells"),
    ({"space": "nb201", "resolution": [32]}, "resolution"), ({"space": "ofa-mbv3", "resolution": 224.5}, "resolution"),
    ({"space": "ofa-mbv3", "num_classes": "10"}, "num_classes"),
])
def test_wrongly_typed_space_parameters_are_422_naming_them(client, space: dict[str, Any], field: str) -> None:
    register(client)
    for path in ("/v1/luts", "/v1/campaigns"):
        r = client.post(path, json={"space": space, "device": "dev1", "backend": "b"}, headers=ADMIN_H)
        assert r.status_code == 422 and r.json()["detail"].startswith("space: ") and field in r.json()["detail"], r.text
    assert client.get("/v1/luts").json()["luts"] == []


def test_import_content_nested_deeply_is_422(client) -> None:
    for fmt, content in (("json", "[" * 100_000 + "]" * 100_000), ("ofa-yaml", "[" * 5_000 + "]" * 5_000)):
        r = client.post("/v1/luts/import", json={"format": fmt, "content": content}, headers=ADMIN_H)
        assert r.status_code == 422 and r.json()["detail"].startswith("content"), (fmt, r.text)


def test_odd_digits_in_ids_and_arch_strings(client) -> None:
    for path in ("/v1/luts/١٢", "/v1/luts/²", "/v1/luts/" + "9" * 5000, "/v1/jobs/١/heartbeat"):
        r = client.get(path) if "jobs" not in path else client.post(path, json={}, headers=ADMIN_H)
        assert r.status_code == 422, path
    for ref in ("²", "١٢", "9" * 30, 10**40):
        r = client.post("/v1/generate", json={"checkpoint": ref, "budget": 1.0})
        assert r.status_code in (404, 422) and "checkpoint" in r.json()["detail"], ref
    lut_id = synthetic_lut(client, {"space": "ofa-mbv3", "width": 1.2, "resolution": 224})
    tail = "|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"
    for arch in ("w1.2_r" + "9" * 5000 + tail, "w1.2_r２２４" + tail, "w1.2_r224|k٣e3,k3e3" + tail[10:],
                 "w1.2_r224|k" + "3" * 5000 + "e3,k3e3" + tail[10:], "{" + "[" * 100_000, '{"ks": 1' + "0" * 5000 + "}",
                 json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": "abc"}),
                 json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "w": "abc"})):
        r = client.post("/v1/predict", json={"lut": lut_id, "archs": [arch]})
        assert r.status_code == 422 and r.json()["detail"].startswith("archs[0]: "), (arch[:40], r.text)


# ---- item 12: minor ------------------------------------------------------------------------------
def test_metrics_needs_a_token_when_reads_do(db_url: str) -> None:
    with make_client(db_url, reads_require_token=True) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=ADMIN_H).status_code == 200
        assert c.get("/healthz").status_code == 200  # the probe stays open


def test_only_the_lease_holder_extends_or_releases_a_lease(client) -> None:
    dev = register(client)
    campaign(client)
    tok = agent(dev["token"])
    mine, theirs = lease(client, dev["token"]), lease(client, dev["token"])  # two agents of one device
    assert mine["lease_id"] != theirs["lease_id"]
    r = client.post(f"/v1/jobs/{mine['id']}/heartbeat", json={"lease_id": theirs["lease_id"]}, headers=tok)
    assert r.status_code == 409 and "lease_id" in r.json()["detail"]
    r = client.post(f"/v1/jobs/{mine['id']}/heartbeat", json={"lease_seconds": 600}, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith("lease_id: ")
    r = client.post(f"/v1/jobs/{mine['id']}/release", json={"lease_id": theirs["lease_id"]}, headers=tok)
    assert r.status_code == 409
    job = client.post(f"/v1/jobs/{mine['id']}/heartbeat", json={"lease_id": mine["lease_id"], "lease_seconds": 600},
                      headers=tok)
    assert job.status_code == 200 and job.json()["lease_expires"] > mine["lease_expires"]
    assert client.post(f"/v1/jobs/{theirs['id']}/heartbeat", json={}, headers=ADMIN_H).status_code == 200  # admin
    r = client.post(f"/v1/jobs/{mine['id']}/release", json={"lease_id": mine["lease_id"]}, headers=tok)
    assert r.status_code == 200 and r.json()["state"] == "queued"


def test_backend_length_is_the_columns_on_both_databases(client) -> None:
    register(client)
    long = "b" * 101
    for path in ("/v1/luts", "/v1/campaigns"):
        r = client.post(path, json={"space": NB201, "device": "dev1", "backend": long}, headers=ADMIN_H)
        assert r.status_code == 422 and r.json()["detail"].startswith("backend: "), r.text
    r = client.post("/v1/luts", json={"space": NB201, "device": "dev1", "backend": "b" * 100}, headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["meta"]["backend"] == "b" * 100
