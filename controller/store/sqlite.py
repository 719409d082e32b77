"""SQLite engines for the journal: WAL, synchronous=FULL, explicit transactions, a busy timeout.

The stdlib driver's implicit transaction handling is switched off; SQLAlchemy's ``begin``
emits ``BEGIN`` itself, so DDL is transactional and a commit is a real, fsynced commit.
Engines made with ``execution_options(sqlite_begin="IMMEDIATE")`` take the write lock when
the transaction starts, so writers wait on the busy timeout instead of failing mid-way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

BUSY_TIMEOUT_S = 10.0


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_engine(
    url: str | sa.URL | Path,
    *,
    create_parent: bool = False,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
) -> sa.Engine:
    """An engine on a SQLite file. Connects lazily; ``create_parent`` makes missing folders."""
    if isinstance(url, Path):
        url = sqlite_url(url)
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite":
        raise ValueError(f"not a SQLite URL: {url.render_as_string(hide_password=True)}")
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise ValueError(f"the journal needs a SQLite file, got {database or '(memory)'!r}")
    if create_parent:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _on_begin(connection: sa.Connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"sqlite_begin must be DEFERRED, IMMEDIATE or EXCLUSIVE, got {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")
