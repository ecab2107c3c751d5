"""Engine and session factory for SQLite (one machine) and PostgreSQL (scale)."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        # No pre-ping: it costs a round trip per transaction, which under load
        # was a large share of a lease operation. After a database restart the
        # first use of each stale connection fails once and the pool is
        # invalidated; recycling bounds how old a connection can get.
        pool_pre_ping=False,
        pool_recycle=1800,
        pool_timeout=30,
        echo=echo,
    )


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    u = make_url(url)
    if u.database and u.database != ":memory:":
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=64,
        max_overflow=0,
        pool_timeout=60,
    )
    turn = FairLock()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions start
        # (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes can fail at once
        # with "database is locked" when another writer got there first (the
        # busy timeout does not apply to lock upgrades). Taking the write lock
        # up front makes concurrent writers queue instead; the in-process
        # FairLock makes them queue in arrival order, where SQLite's own busy
        # handler polls with growing sleeps and starved some of 50 clients
        # for seconds. Other processes still coordinate through busy_timeout.
        turn.acquire()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turn.release()
            raise

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: Any) -> None:
        turn.release()

    return engine


class FairLock:
    """A FIFO lock: ``release`` hands ownership to the longest waiter."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._owner: int | None = None

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                raise RuntimeError("a thread opened a second SQLite transaction inside its first one")
            if self._owner is None:
                self._owner = me
                return
            ready = threading.Event()
            self._waiters.append(ready)
        ready.wait()
        with self._mutex:
            self._owner = me

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                return  # a rollback of a transaction that never began here
            if self._waiters:
                self._owner = -1  # reserved for the woken waiter
                self._waiters.popleft().set()
            else:
                self._owner = None


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
