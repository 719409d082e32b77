"""Synchronous readers for a journal database (tests, the CLI, reports). Blocking."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from controller.store.openset import ActiveHold, OpenParcel, load_holds, load_parcels
from controller.store.schema import ForwardState, journal_table
from controller.store.sqlite import sqlite_engine


def open_engine(source: str | Path | sa.Engine) -> tuple[sa.Engine, bool]:
    """An engine for ``source`` and whether the caller owns it (and must dispose of it).

    A Path or a ``sqlite:///`` URL must name an existing file: reading never creates one.
    """
    if isinstance(source, sa.Engine):
        return source, False
    url = sa.make_url(f"sqlite:///{source}" if isinstance(source, Path) else source)
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).exists():
            raise FileNotFoundError(f"no journal database at {url.database!r}")
        return sqlite_engine(url), True
    return sa.create_engine(url, poolclass=sa.pool.NullPool), True


def chain_head(conn: sa.Connection, site: str) -> tuple[int, str | None]:
    """The highest ``seq`` written for ``site`` and its ``hash``: ``(0, None)`` when the site
    has no rows, a None hash when the newest row is unsealed (it predates the chain)."""
    j = journal_table.c
    stmt = sa.select(j.seq, j.hash).where(j.site == site).order_by(j.seq.desc()).limit(1)
    head: sa.Row[int, str | None] | None = conn.execute(stmt).first()
    if head is None:
        return 0, None
    seq, digest = head
    return seq, digest


def read_entries(
    source: str | Path | sa.Engine,
    site: str | None = None,
    after_seq: int = 0,
    limit: int | None = None,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Journal rows in ``(site, seq)`` order, as dicts keyed by column name; ``since``
    keeps rows written at or after that UTC time.

    ``reasons`` is a list of ints, ``data`` a dict and ``wall_time`` a UTC datetime.
    """
    stmt = sa.select(journal_table).where(journal_table.c.seq > after_seq)
    if site is not None:
        stmt = stmt.where(journal_table.c.site == site)
    if since is not None:
        stmt = stmt.where(journal_table.c.wall_time >= since)
    stmt = stmt.order_by(journal_table.c.site, journal_table.c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    engine, owned = open_engine(source)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]
    finally:
        if owned:
            engine.dispose()


def count_entries(source: str | Path | sa.Engine, site: str | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(journal_table)
    if site is not None:
        stmt = stmt.where(journal_table.c.site == site)
    engine, owned = open_engine(source)
    try:
        with engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())
    finally:
        if owned:
            engine.dispose()


def read_watermarks(source: str | Path | sa.Engine) -> dict[str, int]:
    """``target -> last_seq`` from the ``forward_state`` table."""
    engine, owned = open_engine(source)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(ForwardState.target, ForwardState.last_seq))
            return dict(rows.all())
    finally:
        if owned:
            engine.dispose()


def read_open_set(
    source: str | Path | sa.Engine, site: str
) -> tuple[list[OpenParcel], list[ActiveHold]]:
    """The open parcels (in opening order) and active holds of ``site``, read in one
    transaction so both come from the same committed state of the journal."""
    engine, owned = open_engine(source)
    try:
        with engine.connect() as conn, conn.begin():
            return load_parcels(conn, site), load_holds(conn, site)
    finally:
        if owned:
            engine.dispose()
