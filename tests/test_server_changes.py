"""Warm predictions read nothing from the database, and still see a LUT another writer changed (budgetnas/db/changes.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from sqlalchemy import event, text, update

from budgetnas.db.changes import LISTENER_NAME, PostgresWatch, SQLiteWatch, watch_for
from budgetnas.db.models import Lut
from budgetnas.db.session import Database
from tests.conftest import shared_file
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H, make_client

HOUR = 3600.0  # a TTL that cannot be what makes a change seen


def nb201_lut(c: Any) -> tuple[int, str]:
    lines = shared_file("nb201", "nb201_bench.csv").read_text().splitlines()[:41]
    lut = c.post("/v1/luts/import", json={"format": "arch-csv", "content": "\n".join(lines),
                                           "column": "raspi4_latency_ms"}, headers=ADMIN_H).json()
    return int(lut["id"]), lines[1].split(",")[1]


@contextmanager
def statements(client: Any) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []
    engine = client.app.state.budgetnas.db.engine

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def predict(c: Any, lut: int, arch: str) -> float:
    r = c.post("/v1/predict", json={"lut": lut, "archs": [arch]})
    assert r.status_code == 200, r.text
    return float(r.json()["predictions"][0]["latency_ms"])


def eventually(cond: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def listening(c: Any) -> bool:
    return c.app.state.budgetnas.predictors.token() is not None


def test_a_warm_predict_runs_no_statement(db_url) -> None:
    with make_client(db_url, predict_revision_ttl=0) as c:
        lut, arch = nb201_lut(c)
        predict(c, lut, arch)
        assert eventually(lambda: listening(c))  # PostgreSQL: the listener is up
        predict(c, lut, arch)  # confirmed while listening
        with statements(c) as seen:
            for _ in range(20):
                predict(c, lut, arch)
        assert seen == []


def test_without_the_watch_and_a_ttl_of_0_every_predict_reads_the_revision(db_url) -> None:
    with make_client(db_url, predict_revision_ttl=0, predict_change_watch=False) as c:
        lut, arch = nb201_lut(c)
        predict(c, lut, arch)
        with statements(c) as seen:
            for _ in range(5):
                predict(c, lut, arch)
        assert sum("revision" in s for s in seen) == 5


def test_another_writer_changing_the_revision_is_seen_without_the_ttl(db_url) -> None:
    """As another worker, replica or tool would: a raw UPDATE through an engine of its own."""
    with make_client(db_url, predict_revision_ttl=HOUR) as c:
        lut, arch = nb201_lut(c)
        assert eventually(lambda: listening(c))
        before = predict(c, lut, arch)
        predict(c, lut, arch)
        cal = {"slope": 2.0, "intercept": 1.0, "n_models": 3, "rel_residual_std": 0.1}
        other = Database(db_url)
        try:
            with other.session(write=True) as s:
                s.execute(update(Lut).where(Lut.id == lut).values(calibration=cal, revision=Lut.revision + 1))
        finally:
            other.dispose()
        want = pytest.approx(2.0 * before + 1.0)
        if db_url.startswith("sqlite"):  # exact: the next request after the commit sees it
            assert predict(c, lut, arch) == want
        else:  # once the notification arrives
            assert eventually(lambda: predict(c, lut, arch) == want, 5.0)


def current_revision(c: Any, lut: int) -> int | None:
    """The revision of the app's current copy of the LUT; None while it holds none (e.g. a notification
    arrived between a predict and this look: the next predict loads the copy again)."""
    prepared = c.app.state.budgetnas.predictors.fresh(lut)
    return None if prepared is None else int(prepared.revision)


def held_revision(c: Any, lut: int) -> int:
    rev = current_revision(c, lut)
    assert rev is not None, "no current copy held"
    return rev


def test_two_apps_on_one_database_see_each_others_calibration(db_url) -> None:
    """Two app instances (as two uvicorn workers): a calibration through one is used by the other's next
    predict on SQLite, and once the notification arrives on PostgreSQL, with an hour's TTL."""
    with make_client(db_url, predict_revision_ttl=HOUR) as a, make_client(db_url, predict_revision_ttl=HOUR) as b:
        lut, arch = nb201_lut(a)
        assert eventually(lambda: listening(b))
        # a copy held and current: a late notification of the LUT's creation may move the token once more
        assert eventually(lambda: predict(b, lut, arch) > 0 and b.app.state.budgetnas.predictors.fresh(lut) is not None)
        rev = held_revision(b, lut)
        r = a.post(f"/v1/luts/{lut}/calibrate", headers=ADMIN_H)
        assert r.status_code == 200, r.text
        if db_url.startswith("sqlite"):
            predict(b, lut, arch)
            assert held_revision(b, lut) == rev + 1
        else:
            assert eventually(lambda: predict(b, lut, arch) > 0 and current_revision(b, lut) == rev + 1)


def test_a_lost_listener_falls_back_to_the_ttl_and_comes_back(pg_url) -> None:
    with make_client(pg_url, predict_revision_ttl=0) as c:
        lut, arch = nb201_lut(c)
        predict(c, lut, arch)
        assert eventually(lambda: listening(c))
        watch = cast(Any, c.app).state.budgetnas.predictors.watch
        assert isinstance(watch, PostgresWatch)
        first = watch.token()
        killer = Database(pg_url)
        with killer.session(write=True) as s:
            s.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n "
                           "AND pid <> pg_backend_pid()"), {"n": LISTENER_NAME})
        killer.dispose()
        assert eventually(lambda: watch.token() != first)  # down (None), then back with a moved token
        with statements(c) as seen:  # while down or just back, the copy is confirmed again (TTL 0)
            predict(c, lut, arch)
        assert sum("revision" in s for s in seen) == 1
        assert eventually(lambda: watch.token() is not None)
        predict(c, lut, arch)
        with statements(c) as seen:
            predict(c, lut, arch)
        assert seen == []


def test_watch_for_each_url() -> None:
    assert isinstance(watch_for("sqlite:////tmp/x.db"), SQLiteWatch)
    assert watch_for("sqlite://") is None
    assert watch_for("sqlite:///:memory:") is None
    assert isinstance(watch_for("postgresql+psycopg://u@127.0.0.1:1/db"), PostgresWatch)
    assert watch_for("mysql+pymysql://u@h/db") is None


def test_the_sqlite_token_moves_on_a_commit_by_another_process(tmp_path) -> None:
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "w.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    watch = SQLiteWatch(str(path))
    t0 = watch.token()
    assert watch.token() == t0  # nothing committed: the same token
    subprocess.run([sys.executable, "-c", f"import sqlite3; c = sqlite3.connect({str(path)!r}); "
                                          "c.execute('INSERT INTO t VALUES (1)'); c.commit()"], check=True)
    assert watch.token() != t0
    watch.close()
    con.close()


@pytest.mark.parametrize(("content", "ctype", "detail"), [
    (b"", "application/json", "body: Field required"),
    (b'{"lut": 1, "archs": ["a"]}', "text/plain", "body: Input should be a valid dictionary"),
    (b'{"lut": 1, "archs": ["a"]', "application/json", "body: malformed JSON at character 25"),
    (b'{"lut": "one", "archs": ["a"]}', "application/json", "lut: Input should be a valid integer"),
    (b'{"lut": 1099511627776, "archs": ["a"]}', "application/json", "lut: Input should be less than or equal"),
    (b'{"lut": 1, "archs": []}', "application/json", "archs: List should have at least 1 item"),
    (b'{"lut": 1, "archs": [7]}', "application/vnd.x+json", "archs.0: Input should be a valid string"),
    (b'{"lut": NaN, "archs": ["a"]}', "application/json", "lut: Input should be a finite number"),
    (b'[' * 100_000, "application/json", "body: malformed JSON"),
])
def test_predict_reads_its_body_as_fastapi_would_with_422s_naming_the_field(client, content: bytes, ctype: str,
                                                                            detail: str) -> None:
    r = client.post("/v1/predict", content=content, headers={"Content-Type": ctype})
    assert r.status_code == 422 and r.json()["detail"].startswith(detail), r.text


def test_predict_declares_its_body_in_the_schema(client) -> None:
    body = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    assert body["required"] and set(body["content"]["application/json"]["schema"]["required"]) == {"lut", "archs"}
