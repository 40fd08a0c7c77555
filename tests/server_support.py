"""Fixtures of the server and database tests: both databases, an app, a live uvicorn server.

Every test that takes ``db_url`` runs on SQLite (a fresh file) and on PostgreSQL (the database
``.ci/run`` starts; skipped when ``BUDGETNAS_TEST_PG_URL`` is unset, emptied before each test).
Import the fixtures into a test module with ``from tests.server_support import *``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import text

from budgetnas.db.models import Base
from budgetnas.db.session import make_engine, migrate
from budgetnas.lut_server.app import create_app
from budgetnas.lut_server.settings import Settings

ADMIN = "test-admin-token"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
PG_ENV = "BUDGETNAS_TEST_PG_URL"
_pg_migrated: list[str] = []

__all__ = ["ADMIN", "ADMIN_H", "app_transport", "client", "db_url", "live", "make_client", "pg_url", "start_live",
           "tiny_nb201_bundle"]


def _empty_pg(url: str) -> None:
    if url not in _pg_migrated:
        migrate(url)
        _pg_migrated.append(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'budgetnas.db'}"
        migrate(url)
        return url
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (.ci/run starts PostgreSQL and sets it)")
    _empty_pg(url)
    return url


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (.ci/run starts PostgreSQL and sets it)")
    _empty_pg(url)
    return url


def make_client(url: str, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(db_url=url, admin_token=ADMIN, **settings)))


def app_transport(app_client: TestClient) -> httpx.MockTransport:
    """The app in process as an httpx transport: a REST client under test without a live server."""

    def handle(request: httpx.Request) -> httpx.Response:
        r = app_client.request(request.method, str(request.url), headers=request.headers, content=request.content)
        headers = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
        return httpx.Response(r.status_code, headers=headers, content=r.content)

    return httpx.MockTransport(handle)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_live(url: str, **settings: Any) -> Live:
    app = create_app(Settings(db_url=url, admin_token=ADMIN, **settings))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return Live(server, thread, base)
        except httpx.HTTPError:
            time.sleep(0.05)
    server.should_exit = True
    raise RuntimeError("uvicorn did not start")


@pytest.fixture
def live(db_url: str) -> Iterator[Live]:
    srv = start_live(db_url)
    try:
        yield srv
    finally:
        srv.stop()


def tiny_nb201_bundle() -> bytes:
    """A real generator bundle, trained for a few iterations on nb201 with a synthetic cost model."""
    import numpy as np

    from budgetnas.generator.accuracy import prepare
    from budgetnas.generator.bundle import pack_bundle
    from budgetnas.generator.export import bundle_parts
    from budgetnas.generator.latency import CostModelOracle
    from budgetnas.generator.pnag import TrainConfig, train
    from budgetnas.luts.token_cost import CostTerm, TokenCostModel
    from budgetnas.spaces import get_space
    from tests.test_generator_accuracy import Synthetic

    sp = get_space("nb201")
    cost = np.array([0.0, 0.2, 1.0, 3.0, 0.4])
    oracle = CostModelOracle(sp, TokenCostModel(1.0, [CostTerm((e,), cost.copy()) for e in range(6)]))
    problem = prepare(sp, oracle, Synthetic(), max_queries=40, seed=0, epochs=10)
    trained = train(problem, TrainConfig(iterations=2, budgets=4, rows=4, batch=4))
    return pack_bundle(*bundle_parts(problem, trained))


def rewritten_bundle(data: bytes, **meta: object) -> bytes:
    """A copy of a generator bundle whose meta has ``meta``'s keys replaced (for bad-input tests)."""
    import io
    import json

    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays.pop("meta").tobytes().decode())
    m.update(meta)
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(m).encode(), np.uint8), **arrays)  # type: ignore[arg-type]
    return buf.getvalue()
