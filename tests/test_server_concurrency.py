"""Concurrent agents against one campaign over real HTTP (uvicorn on 127.0.0.1): each job done once."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
from sqlalchemy import func, select

from budgetnas.db.models import Job, LutEntry, ModelMeasurement
from budgetnas.db.session import Database
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

STATS = {"count": 5, "mean_ms": 2.0, "std_ms": 0.1, "median_ms": 2.0, "min_ms": 1.9, "samples_ms": [1.9, 2.0, 2.0, 2.1, 2.0]}
AGENTS = 20


def test_twenty_lessees_do_every_job_exactly_once(live, db_url) -> None:
    base = live.url
    token = httpx.post(f"{base}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    camp = httpx.post(f"{base}/v1/campaigns", json={"space": {"space": "ofa-mbv3", "resolution": 160}, "device": "rig",
                                                    "backend": "ort-cpu", "validation_models": 60, "seed": 2},
                      headers=ADMIN_H, timeout=60).json()
    n_keys = len(get_space("ofa-mbv3", resolution=160).all_block_keys())
    assert camp["jobs_created"] == n_keys + 60
    leased: Counter[int] = Counter()
    stored: Counter[int] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(AGENTS)

    def agent(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            start.wait()
            while True:
                r = c.post("/v1/jobs/lease", json={"device": "rig", "backend": "ort-cpu", "max_jobs": 2,
                                                   "lease_seconds": 600})
                if r.status_code != 200:
                    errors.append(f"lease {r.status_code} {r.text}")
                    return
                jobs = r.json()["jobs"]
                if not jobs:
                    return
                for j in jobs:
                    with lock:
                        leased[j["id"]] += 1
                    body = {"idempotency_key": f"{i}-{j['id']}", "stats": STATS}
                    for _ in range(2 if j["id"] % 5 == 0 else 1):  # some agents retry a result
                        r = c.post(f"/v1/jobs/{j['id']}/result", json=body)
                        if r.status_code != 200:
                            errors.append(f"result {r.status_code} {r.text}")
                            return
                        if r.json()["stored"]:
                            with lock:
                                stored[j["id"]] += 1

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(AGENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    total = n_keys + 60
    assert len(leased) == total and set(leased.values()) == {1}, "a job was leased twice or lost"
    assert len(stored) == total and set(stored.values()) == {1}, "a result was stored twice or lost"
    db = Database(db_url)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LutEntry)) == n_keys
        assert s.scalar(select(func.count()).select_from(ModelMeasurement)) == 60
        assert s.scalar(select(func.count()).select_from(Job).where(Job.state != "done")) == 0
    db.dispose()
    lut = httpx.get(f"{base}/v1/luts/{camp['lut_id']}").json()
    assert lut["status"] == "complete" and lut["n_measured"] == n_keys
