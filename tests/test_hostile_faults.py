"""Hostile faults of issue 16 (items 6, 7, 8): races, lost credentials and unauthenticated uploads.

Each test runs on SQLite and on PostgreSQL (``db_url``) with real concurrency or a live server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from budgetnas.core.errors import ServerError
from budgetnas.db import queue, repo
from budgetnas.db.models import Job, LutEntry
from budgetnas.db.session import ALEMBIC_INI, DB_DIR, Database, migrate
from budgetnas.device_agents.agent import Agent, AgentConfig
from budgetnas.device_agents.backends import Backend, BackendOptions, JobSpec, Measured
from budgetnas.device_agents.spool import Spool
from budgetnas.luts.lut import LatencyStats
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H, start_live

# ---- item 6: concurrent campaigns of one LUT enqueue each key once -------------------------------
ROUNDS, POSTERS = 12, 8


def _post_at_once(base: str, path: str, body: dict[str, object], n: int) -> list[tuple[int, dict[str, object]]]:
    """``n`` threads, each with its own connection, post ``body`` at the same moment."""
    answers: list[tuple[int, dict[str, object]]] = []
    lock, start = threading.Lock(), threading.Barrier(n)

    def post() -> None:
        with httpx.Client(base_url=base, headers=ADMIN_H, timeout=60) as c:
            start.wait()
            r = c.post(path, json=body)
            with lock:
                answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def test_concurrent_campaigns_enqueue_each_key_once(live, db_url) -> None:
    base = live.url
    assert httpx.post(f"{base}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).status_code == 201
    space = {"space": "ofa-mbv3", "resolution": 160}
    n_keys = len(get_space("ofa-mbv3", resolution=160).all_block_keys())
    db = Database(db_url)
    try:
        for rnd in range(ROUNDS):
            body = {"space": space, "device": "rig", "backend": "ort-cpu", "runtime_version": f"r{rnd}"}
            if rnd % 2:  # odd rounds race on a LUT that exists, even ones also on creating it
                assert httpx.post(f"{base}/v1/luts", json=body, headers=ADMIN_H).status_code == 201
            answers = _post_at_once(base, "/v1/campaigns", body, POSTERS)
            with db.session() as s:
                keys = Counter(s.scalars(select(Job.key).where(Job.kind == "block", Job.lut_id.in_(
                    [a["lut_id"] for _, a in answers if "lut_id" in a]))))
            assert len(keys) == n_keys and set(keys.values()) == {1}, (rnd, keys.most_common(2))
            # every poster is told about the one LUT (created or reused): no conflict, no 500
            assert [code for code, _ in answers] == [201] * POSTERS, (rnd, answers)
            assert len({a["lut_id"] for _, a in answers}) == 1, (rnd, answers)
            assert sum(int(str(a["jobs_created"])) for _, a in answers) == n_keys, (rnd, answers)
    finally:
        db.dispose()

def _lut_with_device(db: Database) -> int:
    sp = get_space("nb201")
    with db.session(write=True) as s:
        dev = repo.register_device(s, "rig", {}, repo.token_hash("t"))
        return repo.create_lut(s, device=dev, backend="b", batch=1, threads=1, runtime_version="1",
                               space=sp.describe(), statistic="median", n_keys=len(sp.all_block_keys()), meta={}).id


def test_the_database_refuses_a_second_active_job_of_one_key(db_url) -> None:
    db = Database(db_url)
    try:
        lut_id = _lut_with_device(db)
        key = get_space("nb201").all_block_keys()[0]
        with db.session(write=True) as s:
            queue.enqueue(s, lut_id, "block", [key])
        with pytest.raises(IntegrityError), db.session(write=True) as s:
            queue.enqueue(s, lut_id, "block", [key])
        with db.session(write=True) as s:  # a failed job does not count: its key may be enqueued again
            s.execute(update(Job).values(state="failed"))
            assert queue.enqueue(s, lut_id, "block", [key]) == 1
    finally:
        db.dispose()


def test_migration_0002_fails_stored_duplicates_keeping_the_leased_one(db_url) -> None:
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(DB_DIR / "migrations"))
    db = Database(db_url)
    try:
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        lut_id = _lut_with_device(db)
        k1, k2 = get_space("nb201").all_block_keys()[:2]
        with db.session(write=True) as s:
            queue.enqueue(s, lut_id, "block", [k1, k1, k1, k2, k2])
            s.execute(update(Job).where(Job.id == 2).values(state="leased"))
        migrate(db_url)
        with db.session() as s:
            states = {i: st for i, st in s.execute(select(Job.id, Job.state).order_by(Job.id))}
            assert states == {1: "failed", 2: "leased", 3: "failed", 4: "queued", 5: "failed"}
            assert "duplicate" in str(s.scalar(select(Job.error).where(Job.id == 1)))
    finally:
        migrate(db_url)
        db.dispose()


# ---- item 7: a result measured while the device was re-registered is kept, then sent ----------------
class _TimedBackend(Backend):
    """Measures instantly; ``during`` runs inside the first measurement (what happens meanwhile)."""

    name, kind = "test-timed", "cpu"

    def __init__(self, run: int, during: Callable[[], None] | None = None) -> None:
        super().__init__(BackendOptions())
        self.run, self.during = run, during

    def facts(self) -> dict[str, Any]:
        return {"kind": "cpu", "run": self.run}

    def measure(self, job: JobSpec) -> Measured:
        if self.during is not None:
            self.during()
            self.during = None
        return Measured(LatencyStats.from_samples([1.0, 1.1, 1.2, 1.1]), {"agent_run": self.run})


def _agent_run(agent: Agent) -> None:
    """``agent.run()`` in this (main) thread, leaving pytest's own signal handlers as they were."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_result_measured_while_the_token_rotates_is_kept_and_sent_later(live, db_url, tmp_path, caplog) -> None:
    base = live.url
    token1 = httpx.post(f"{base}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    camp = httpx.post(f"{base}/v1/campaigns", json={"space": {"space": "nb201"}, "device": "rig",
                                                    "backend": "test-timed"}, headers=ADMIN_H).json()
    rotated: list[str] = []

    def reregister() -> None:  # someone registers the device again while its agent measures
        rotated.append(httpx.post(f"{base}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"])

    spool = tmp_path / "spool.jsonl"

    def config(token: str, max_jobs: int) -> AgentConfig:
        return AgentConfig(server=base, token=token, name="rig", backend="test-timed", lease_seconds=30,
                           poll_s=0.05, max_backoff_s=0.2, idle_exit_s=5, max_jobs=max_jobs, spool=str(spool))

    with caplog.at_level(logging.INFO, logger="budgetnas.agent"), pytest.raises(ServerError) as err:
        _agent_run(Agent(config(token1, 3), _TimedBackend(1, reregister)))
    pending = Spool(spool).pending()
    assert [r["kind"] for r in pending] == ["result"], "the measurement was dropped"
    assert "no longer accepts this agent's token" in str(err.value)
    assert "1 record(s) stay in the spool" in str(err.value)
    assert "kept unsent in the spool" in caplog.text and "dropped" not in caplog.text
    job_id = pending[0]["job"]
    assert httpx.get(f"{base}/v1/luts/{camp['lut_id']}").json()["n_measured"] == 0

    # the agent again, with the device's current token: the kept result goes first, then new work
    _agent_run(Agent(config(rotated[0], 1), _TimedBackend(2)))
    assert Spool(spool).pending() == []
    db = Database(db_url)
    try:
        with db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.state == "done"
            assert (job.result or {})["environment"]["agent_run"] == 1  # the first run's measurement
            assert s.scalar(select(func.count()).select_from(LutEntry)) == 2
    finally:
        db.dispose()


# ---- item 8: uploads are authenticated before their body is read ------------------------------------
ANNOUNCED = 256 << 20  # within the upload limit: the old code waited for all of it before checking the token


def _answer_to_a_body_never_sent(url: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Send the head of a large upload and 64 KiB of its body, then wait (5 s at most) for the answer."""
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, "Content-Length": str(ANNOUNCED),
                                                   "Content-Type": "application/octet-stream", **headers}.items())
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + b"\0" * (64 << 10))
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return 0, "no answer within 5 s: the server was reading the body first"
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1].decode()


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.mark.parametrize(("method", "path", "who"), [
    ("PUT", "/v1/artifacts/" + "0" * 64, "nobody"),
    ("PUT", "/v1/artifacts/" + "0" * 64, "stranger"),
    ("POST", "/v1/checkpoints", "nobody"),
    ("POST", "/v1/checkpoints", "stranger"),
    ("POST", "/v1/checkpoints", "agent"),  # checkpoints take the admin token only
])
def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(live, method, path, who) -> None:
    token = httpx.post(f"{live.url}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    headers = {"nobody": {}, "stranger": {"Authorization": "Bearer not-a-token"},
               "agent": {"Authorization": f"Bearer {token}"}}[who]
    status, body = _answer_to_a_body_never_sent(live.url, method, path, headers)
    assert status == 401, body
    assert "authorization" in json.loads(body)["detail"]
    assert httpx.get(f"{live.url}/v1/checkpoints").json()["checkpoints"] == []


def test_upload_size_limit_is_413_announced_or_streamed(db_url) -> None:
    srv = start_live(db_url, max_upload_bytes=64 << 10)
    try:
        token = httpx.post(f"{srv.url}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
        agent_h = {"Authorization": f"Bearer {token}"}
        small, big = b"a" * (60 << 10), b"b" * (70 << 10)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.put(f"/v1/artifacts/{hashlib.sha256(small).hexdigest()}", content=small, headers=agent_h)
            assert r.status_code == 201 and r.json()["size"] == len(small)
            r = c.put(f"/v1/artifacts/{hashlib.sha256(big).hexdigest()}", content=big, headers=agent_h)
            assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]

            def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on the stream
                for _ in range(70):
                    yield b"c" * 1024
            r = c.put(f"/v1/artifacts/{'1' * 64}", content=chunks(), headers=agent_h)
            assert r.status_code == 413
            r = c.post("/v1/checkpoints", content=chunks(), headers={**ADMIN_H, "content-type": "application/json"})
            assert r.status_code == 413
            assert c.get(f"/v1/artifacts/{hashlib.sha256(big).hexdigest()}").status_code == 404
    finally:
        srv.stop()


def test_checkpoint_body_errors_name_the_field(client) -> None:
    """The checkpoint route parses its own body (after auth): the errors are those of every other route."""
    r = client.post("/v1/checkpoints", content=b'{"name": ', headers={**ADMIN_H, "content-type": "application/json"})
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]
    r = client.post("/v1/checkpoints", json={"name": "x"}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("bundle: ")
    r = client.post("/v1/checkpoints", json={"name": "x" * 300, "bundle": "AAAA"}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("name: ")
    r = client.post("/v1/checkpoints", content=b"[" * 100_000, headers={**ADMIN_H, "content-type": "application/json"})
    assert r.status_code == 422
