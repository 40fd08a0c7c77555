"""Engines, sessions and migrations.

SQLite: WAL journal, a busy timeout, foreign keys on, and transactions started by us so that a
writing request can ``BEGIN IMMEDIATE`` (take the write lock up front instead of failing with
"database is locked" when it upgrades a read lock). PostgreSQL: a connection pool sized for a
threaded server; row locking (``FOR UPDATE SKIP LOCKED``) is done by the queries themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from budgetnas.core.errors import DatabaseUnavailableError, InvalidArgumentError

DB_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = DB_DIR / "alembic.ini"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    if not url or "://" not in url:
        raise InvalidArgumentError(f"database URL {url!r} must look like sqlite:///path.db or postgresql+psycopg://...")
    kw: dict[str, Any] = {"echo": echo}
    if is_sqlite(url):
        kw["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kw.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    try:
        engine = create_engine(url, **kw)
    except Exception as exc:  # unknown dialect/driver, malformed URL
        raise InvalidArgumentError(f"database URL {url!r}: {exc}") from None
    if is_sqlite(url):
        _sqlite_events(engine)
    return engine


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """One engine plus two session factories: reads, and writes (``BEGIN IMMEDIATE`` on SQLite)."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)
        # SQLite has one writer at a time; queueing this process's writers on a lock avoids the
        # busy handler's sleeps (other processes still wait through the busy timeout)
        self._write_lock = threading.Lock() if is_sqlite(url) else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        if write and self._write_lock is not None:
            with self._write_lock, self._write() as s, s.begin():
                yield s
            return
        with (self._write if write else self._read)() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def migrate(url: str | Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` with the packaged Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(DB_DIR / "migrations"))
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        try:
            conn = engine.connect()
        except (OperationalError, InterfaceError) as exc:  # the user's URL, not our bug: say which
            shown = engine.url.render_as_string(hide_password=True)
            raise DatabaseUnavailableError(f"database {shown} cannot be opened or reached: "
                                           f"{str(exc.orig or exc).strip().splitlines()[0]}") from None
        with conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
