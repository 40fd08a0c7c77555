"""Heartbeats and results of several jobs per call (POST /v1/jobs/heartbeat, /v1/jobs/results), beside the
single-job routes: each result stored once, a refused batch stores nothing, bad input is a 422 naming the field."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from budgetnas.core.errors import DeviceUnavailableError, ServerRefusedError
from budgetnas.db.models import Job, LutEntry, ModelMeasurement
from budgetnas.db.queue import MAX_BATCH
from budgetnas.db.session import Database
from budgetnas.device_agents.agent import Agent, AgentConfig
from budgetnas.device_agents.backends import Backend, BackendOptions, JobSpec, Measured
from budgetnas.device_agents.rest import Rest
from budgetnas.device_agents.spool import Spool
from budgetnas.luts.lut import LatencyStats
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

STATS = {"count": 3, "mean_ms": 2.0, "std_ms": 0.1, "median_ms": 2.0, "min_ms": 1.9}


def register(c: Any, name: str) -> dict[str, str]:
    r = c.post("/v1/devices", json={"name": name}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def campaign(c: Any, device: str, models: int, backend: str = "b") -> int:
    r = c.post("/v1/campaigns", json={"space": {"space": "nb201"}, "device": device, "backend": backend,
                                      "validation_models": models, "seed": 1}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return int(r.json()["jobs_created"])


def lease(c: Any, tok: dict[str, str], device: str, n: int) -> list[dict[str, Any]]:
    r = c.post("/v1/jobs/lease", json={"device": device, "backend": "b", "max_jobs": n}, headers=tok)
    assert r.status_code == 200, r.text
    return list(r.json()["jobs"])


def items(jobs: list[dict[str, Any]], tag: str = "k") -> list[dict[str, Any]]:
    return [{"job": j["id"], "idempotency_key": f"{tag}{j['id']}", "stats": STATS} for j in jobs]


def stored_rows(db_url: str) -> int:
    db = Database(db_url)
    try:
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(LutEntry)) or 0) + int(
                s.scalar(select(func.count()).select_from(ModelMeasurement)) or 0)
    finally:
        db.dispose()


@pytest.fixture
def rig(client) -> tuple[Any, dict[str, str], dict[str, str]]:
    tok = register(client, "dev1")
    other = register(client, "dev2")
    campaign(client, "dev1", 4)
    campaign(client, "dev2", 2)
    return client, tok, other


def test_a_batch_of_results_is_stored_once_and_repeats_store_nothing(rig, db_url) -> None:
    c, tok, _ = rig
    jobs = lease(c, tok, "dev1", 6)
    assert len(jobs) == 6
    single = c.post(f"/v1/jobs/{jobs[0]['id']}/result", json={"idempotency_key": "one", "stats": STATS}, headers=tok)
    assert single.status_code == 200 and single.json()["stored"] is True  # the single-job route still works
    before = stored_rows(db_url)
    r = c.post("/v1/jobs/results", json={"results": items(jobs)}, headers=tok)
    assert r.status_code == 200, r.text
    out = r.json()["results"]
    assert [o["id"] for o in out] == [j["id"] for j in jobs]  # request order
    assert [o["stored"] for o in out] == [False] + [True] * 5 and {o["state"] for o in out} == {"done"}
    assert stored_rows(db_url) == before + 5
    again = c.post("/v1/jobs/results", json={"results": items(jobs, "other")}, headers=tok)
    assert again.status_code == 200 and not any(o["stored"] for o in again.json()["results"])
    assert stored_rows(db_url) == before + 5


@pytest.mark.parametrize(("body", "field"), [
    ({"results": []}, "results"),
    ({"results": [{"job": 1, "idempotency_key": "k", "stats": STATS}] * (MAX_BATCH + 1)}, "results"),
    ({"results": {"job": 1}}, "results"),
    ({"results": [{"job": "one", "idempotency_key": "k", "stats": STATS}]}, "results.0.job"),
    ({"results": [{"job": 0, "idempotency_key": "k", "stats": STATS}]}, "results.0.job"),
    ({"results": [{"job": 1, "idempotency_key": "", "stats": STATS}]}, "results.0.idempotency_key"),
    ({"results": [{"job": 1, "idempotency_key": "k", "stats": "fast"}]}, "results.0.stats"),
    ({"results": [{"job": 1, "stats": STATS}]}, "results.0.idempotency_key"),
])
def test_bad_result_batches_are_422_naming_the_field(rig, db_url, body: dict[str, Any], field: str) -> None:
    c, tok, _ = rig
    lease(c, tok, "dev1", 2)
    before = stored_rows(db_url)
    r = c.post("/v1/jobs/results", json=body, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text
    assert stored_rows(db_url) == before


def test_a_batch_naming_a_bad_job_is_refused_whole(rig, db_url) -> None:
    c, tok, other = rig
    mine = lease(c, tok, "dev1", 3)
    theirs = lease(c, other, "dev2", 1)
    before = stored_rows(db_url)
    cases = [
        (items(mine[:2]) + items(theirs), "results[2].job", "another device"),  # a job (and lease) of dev2
        ([*items(mine[:1]), {"job": 999_999, "idempotency_key": "x", "stats": STATS}], "results[1].job", "no job"),
        (items(mine[:2]) + items(mine[:1], "again"), "results[2].job", "results[0]"),  # named twice
        ([*items(mine[:1]), {**items(mine[1:2])[0], "stats": {**STATS, "median_ms": -1.0}}], "results[1].stats",
         "median_ms"),
    ]
    for body, field, why in cases:
        r = c.post("/v1/jobs/results", json={"results": body}, headers=tok)
        assert r.status_code == 422 and r.json()["detail"].startswith(field) and why in r.json()["detail"], r.text
    assert stored_rows(db_url) == before  # none of the valid items either
    db = Database(db_url)
    with db.session() as s:
        assert {s.get_one(Job, j["id"]).state for j in mine} == {"leased"}
    db.dispose()


def test_a_failed_job_in_a_batch_is_409_and_stores_nothing(rig, db_url) -> None:
    c, tok, _ = rig
    jobs = lease(c, tok, "dev1", 2)
    db = Database(db_url)
    with db.session(write=True) as s:
        s.get_one(Job, jobs[1]["id"]).state = "failed"
    db.dispose()
    before = stored_rows(db_url)
    r = c.post("/v1/jobs/results", json={"results": items(jobs)}, headers=tok)
    assert r.status_code == 409 and r.json()["detail"].startswith("results[1].job"), r.text
    assert stored_rows(db_url) == before


def test_batched_heartbeats_extend_each_lease_or_say_it_is_lost(rig) -> None:
    c, tok, other = rig
    jobs = lease(c, tok, "dev1", 3)
    refs = [{"job": j["id"], "lease_id": j["lease_id"]} for j in jobs]
    refs[1]["lease_id"] = "not-this-lease"
    r = c.post("/v1/jobs/heartbeat", json={"leases": refs, "lease_seconds": 120}, headers=tok)
    assert r.status_code == 200, r.text
    out = r.json()["leases"]
    assert [o["id"] for o in out] == [j["id"] for j in jobs]
    assert out[0]["lease_expires"] > jobs[0]["lease_expires"] and out[2]["lease_expires"] > jobs[2]["lease_expires"]
    assert "lease_id" in out[1]["lost"] and "lease_expires" not in out[1]
    theirs = lease(c, other, "dev2", 1)
    bad = c.post("/v1/jobs/heartbeat", json={"leases": [refs[0], {"job": theirs[0]["id"],
                                                                   "lease_id": theirs[0]["lease_id"]}]}, headers=tok)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("leases[1].job"), bad.text


@pytest.mark.parametrize(("body", "field"), [
    ({"leases": []}, "leases"),
    ({"leases": [{"job": 1, "lease_id": "x"}] * (MAX_BATCH + 1)}, "leases"),
    ({"leases": [{"job": 1}]}, "leases.0.lease_id"),
    ({"leases": [{"job": 1, "lease_id": ""}]}, "leases.0.lease_id"),
    ({"leases": [{"job": [1], "lease_id": "x"}]}, "leases.0.job"),
    ({"leases": [{"job": 1, "lease_id": "x"}], "lease_seconds": 0}, "lease_seconds"),
])
def test_bad_heartbeat_batches_are_422_naming_the_field(rig, body: dict[str, Any], field: str) -> None:
    c, tok, _ = rig
    r = c.post("/v1/jobs/heartbeat", json=body, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text


def test_twenty_batching_agents_do_every_job_exactly_once(live, db_url) -> None:
    base = live.url
    token = httpx.post(f"{base}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    camp = httpx.post(f"{base}/v1/campaigns", json={"space": {"space": "ofa-mbv3", "resolution": 160}, "device": "rig",
                                                    "backend": "ort-cpu", "validation_models": 60, "seed": 2},
                      headers=ADMIN_H, timeout=60).json()
    total = len(get_space("ofa-mbv3", resolution=160).all_block_keys()) + 60
    leased: Counter[int] = Counter()
    stored: Counter[int] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def agent(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            start.wait()
            while True:
                r = c.post("/v1/jobs/lease", json={"device": "rig", "backend": "ort-cpu", "max_jobs": 7})
                jobs = r.json()["jobs"] if r.status_code == 200 else []
                if r.status_code != 200 or not jobs:
                    if r.status_code != 200:
                        errors.append(f"lease {r.status_code} {r.text}")
                    return
                for attempt in range(2 if i % 4 == 0 else 1):  # some agents resend the whole batch
                    r = c.post("/v1/jobs/results", json={"results": items(jobs, f"{i}-{attempt}-")})
                    if r.status_code != 200:
                        errors.append(f"results {r.status_code} {r.text}")
                        return
                    with lock:
                        for o in r.json()["results"]:
                            stored[o["id"]] += int(o["stored"])
                with lock:
                    for j in jobs:
                        leased[j["id"]] += 1

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert len(leased) == total and set(leased.values()) == {1}, "a job was leased twice or lost"
    assert len(stored) == total and set(stored.values()) == {1}, "a result was stored twice or lost"
    assert stored_rows(db_url) == total
    lut = httpx.get(f"{base}/v1/luts/{camp['lut_id']}").json()
    assert lut["status"] == "complete"


# ---- the agent: batches where the server has them, single calls where it has not -----------------------
class _Instant(Backend):
    name, kind = "test-instant", "cpu"

    def __init__(self, fail_every: int = 0) -> None:
        super().__init__(BackendOptions())
        self.fail_every, self.n = fail_every, 0

    def facts(self) -> dict[str, Any]:
        return {"kind": "cpu"}

    def measure(self, job: JobSpec) -> Measured:
        self.n += 1
        if self.fail_every and self.n % self.fail_every == 0:
            raise DeviceUnavailableError("this one crashed")
        return Measured(LatencyStats.from_samples([1.0, 1.1, 1.2]), {})


class _CountingRest(Rest):
    """The agent's client, counting calls by route; ``batches=False`` answers the batched routes as an older
    server would (404)."""

    def __init__(self, server: str, token: str, batches: bool = True) -> None:
        super().__init__(server, token)
        self.calls: Counter[str] = Counter()
        self.batches = batches

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        route = "/".join("{id}" if p.isdigit() else p for p in path.split("/"))
        self.calls[route] += 1
        if not self.batches and route in ("/v1/jobs/results", "/v1/jobs/heartbeat"):
            raise ServerRefusedError(f"{method} {path}: HTTP 404: Not Found", 404)
        return super().call(method, path, body)


def _run(agent: Agent) -> None:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("batches", [True, False])
def test_the_agent_batches_where_the_server_can_and_loses_nothing_where_it_cannot(live, db_url, tmp_path,
                                                                                 batches: bool) -> None:
    token = httpx.post(f"{live.url}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    total = httpx.post(f"{live.url}/v1/campaigns", json={"space": {"space": "nb201"}, "device": "rig",
                                                         "backend": "test-instant", "validation_models": 30},
                       headers=ADMIN_H).json()["jobs_created"]
    rest = _CountingRest(live.url, token, batches)
    config = AgentConfig(server=live.url, token=token, name="rig", backend="test-instant", lease_seconds=0.6,
                         poll_s=0.05, max_backoff_s=0.2, idle_exit_s=0.5, spool=str(tmp_path / "spool"),
                         lease_batch=8)
    backend = _Instant(fail_every=7)
    agent = Agent(config, backend, rest)
    _run(agent)
    assert agent.done + agent.failed >= total and agent.failed > 0
    db = Database(db_url)
    try:
        with db.session() as s:
            states = Counter(s.scalars(select(Job.state)))
    finally:
        db.dispose()
    # every job done once, but the failed ones, which went back to the queue and were measured again
    assert states["done"] + states["failed"] == total and stored_rows(db_url) == states["done"]
    assert Spool(tmp_path / "spool").pending() == []
    if batches:
        # a lone result (a lease of one job, or the one result of a batch) takes the single-job route
        assert rest.calls["/v1/jobs/results"] > 0 and rest.calls["/v1/jobs/{id}/result"] <= rest.calls["/v1/jobs/lease"]
        assert rest.calls["/v1/jobs/results"] < agent.done / 2  # several results per call
    else:
        assert rest.calls["/v1/jobs/results"] == 1  # asked once, then the single-job route
        assert rest.calls["/v1/jobs/{id}/result"] == agent.done


class _Together(_Instant):
    """Measures a leased batch in one session (as the CPU and GPU profilers do); a batch holding a job it
    cannot measure fails whole, and that job alone fails when measured alone."""

    def __init__(self) -> None:
        super().__init__()
        self.together: Counter[str] = Counter()

    def measure_together(self, jobs: list[JobSpec]) -> dict[int, Measured]:
        self.together["calls"] += 1
        if any(job.id % 13 == 0 for job in jobs):
            raise DeviceUnavailableError("one of them crashed")
        self.together["jobs"] += len(jobs)
        return {job.id: Measured(LatencyStats.from_samples([2.0, 2.1]), {"measured_together": len(jobs)})
                for job in jobs}

    def measure(self, job: JobSpec) -> Measured:
        self.together["alone"] += 1
        if job.id % 13 == 0:
            raise DeviceUnavailableError("this one crashed")
        return super().measure(job)


def test_a_batch_is_measured_together_and_a_bad_job_fails_alone(live, db_url, tmp_path) -> None:
    token = httpx.post(f"{live.url}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    total = httpx.post(f"{live.url}/v1/campaigns", json={"space": {"space": "nb201"}, "device": "rig",
                                                         "backend": "test-instant", "validation_models": 10},
                       headers=ADMIN_H).json()["jobs_created"]
    config = AgentConfig(server=live.url, token=token, name="rig", backend="test-instant", lease_seconds=5,
                         poll_s=0.05, max_backoff_s=0.2, idle_exit_s=0.5, spool=str(tmp_path / "spool"),
                         lease_batch=4)
    backend = _Together()
    agent = Agent(config, backend, Rest(live.url, token))
    _run(agent)
    db = Database(db_url)
    try:
        with db.session() as s:
            states = Counter(s.scalars(select(Job.state)))
            bad = sum(1 for i in s.scalars(select(Job.id)) if i % 13 == 0)
    finally:
        db.dispose()
    assert states == {"done": total - bad, "failed": bad} and stored_rows(db_url) == total - bad
    # batches without a bad job came from one session; those with one were measured job by job
    assert backend.together["jobs"] > 0 and backend.together["alone"] > 0
    assert agent.done == total - bad
