"""Hearing that a LUT revision may have changed, without a database round trip per question.

``watch_for(url).token()`` is a number that moves whenever another connection, in this process or
any other, may have changed a LUT's revision; ``None`` while that cannot be known (then ask the
database). A copy of a LUT confirmed against the database when the token was T is current for as
long as the token is still T. Read the token *before* the confirming read, so a change that
lands between the two moves the token past what was stored.

- SQLite: ``PRAGMA data_version`` on a connection of our own that never writes. It moves when any
  other connection commits (every process shares the file's WAL index in shared memory): a few
  microseconds, no I/O, and exact: a commit is seen by the next call after it returns.
- PostgreSQL: ``LISTEN`` on :data:`CHANNEL`, which a trigger of migration 0003 notifies when a
  LUT's revision moves or it is deleted, whoever wrote it. A daemon thread counts notifications
  and proves its connection alive every second; while the connection is down the token is
  ``None``, and a reconnect moves it (notifications sent meanwhile were lost). A commit is heard
  once its notification arrives (well under a millisecond on one host); until then a request may
  still get the previous revision. A link that dies silently is noticed within ~5 s (TCP keepalives
  and a user timeout), the bound on staleness in that case.
- Anything else (``sqlite://`` in memory, other dialects): no watch.
"""

from __future__ import annotations

import logging
import select
import sqlite3
import threading
import weakref
from typing import Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger("budgetnas.db")

CHANNEL = "budgetnas_lut_revision"  # migration 0003's trigger notifies it
RECONNECT_S = 1.0  # wait between attempts to re-establish the PostgreSQL listener
LISTENER_NAME = "budgetnas-lut-listener"  # its application_name in pg_stat_activity
PING_S = 1.0  # the listener proves its connection alive at least this often
# a peer that vanished without closing is noticed within seconds, not at the kernel's TCP timeout (minutes)
LIVENESS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1, "keepalives_count": 3,
            "tcp_user_timeout": 5000, "connect_timeout": 5}


class ChangeWatch(Protocol):
    def token(self) -> int | None: ...

    def close(self) -> None: ...


class SQLiteWatch:
    """``PRAGMA data_version`` of a private connection that never writes (opened on first use)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def token(self) -> int | None:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:  # the file went away or cannot be read: ask the database
                log.warning("LUT change watch on %s unavailable: %s", self.path, exc)
                self._close()
                return None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()


class PostgresWatch:
    """A count of :data:`CHANNEL` notifications, kept by a daemon thread (started on first use).

    The thread holds only a weak reference to this object and stops once it is gone or closed, so
    an app that is dropped without shutting down leaves no listening connection behind.
    """

    def __init__(self, url: str) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._count = 0
        self.listening = False
        self._started = False
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def token(self) -> int | None:
        if not self._started:
            with self._lock:
                if not self._started:
                    self._started = True
                    threading.Thread(target=_listen, args=(weakref.ref(self), self.conninfo, self._closed),
                                     daemon=True, name="lut-revision-listener").start()
        return self._count if self.listening else None

    def heard(self) -> None:
        self._count += 1  # one writer (the listener thread); readers only compare

    def close(self) -> None:
        self._closed.set()


def _listen(ref: weakref.ref[PostgresWatch], conninfo: str, closed: threading.Event) -> None:
    import psycopg
    from psycopg.conninfo import make_conninfo

    def on_notify(_: psycopg.Notify) -> None:  # called whenever the connection reads one, as it arrives
        watch = ref()
        if watch is not None:
            watch.heard()

    while not closed.is_set():
        try:
            info = make_conninfo(conninfo, application_name=LISTENER_NAME, **LIVENESS)
            with psycopg.connect(info, autocommit=True) as conn:
                conn.add_notify_handler(on_notify)
                conn.execute(f"LISTEN {CHANNEL}")
                watch = ref()
                if watch is None:
                    return
                watch.heard()  # whatever was sent while we were not listening is unknown: move on
                watch.listening = True
                del watch
                while not closed.is_set() and ref() is not None:
                    select.select([conn.fileno()], [], [], PING_S)
                    conn.execute("SELECT 1")  # reads what arrived (on_notify counts it) and proves the link alive
        except psycopg.Error as exc:
            watch = ref()
            if watch is None:
                return
            if watch.listening:
                log.warning("LUT change listener lost its connection (%s); reconnecting", exc)
            watch.listening = False
            del watch
            closed.wait(RECONNECT_S)


def watch_for(url: str) -> ChangeWatch | None:
    """The change watch of a database URL, or None where none applies."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database
        if not db or db == ":memory:" or db.startswith("file:") or u.query.get("mode") == "memory":
            return None
        return SQLiteWatch(db)
    if backend == "postgresql" and u.get_driver_name() in ("psycopg", "psycopg3"):
        return PostgresWatch(url)
    return None
