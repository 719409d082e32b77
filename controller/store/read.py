"""Synchronous readers for a journal database (tests, the CLI, reports). Blocking.

The hub-wide readers at the end (:func:`read_hub`, :func:`read_open_parcels`) read the
central database that every site's forwarder ships to: each site's rows as far as they were
shipped, its open parcels folded from those rows and the alarms they leave active. They open
it read-only (:func:`open_read_only`) and say in one line why a source cannot be read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from controller.core.domain import EntryKind
from controller.store.chain import JournalSourceError, first_line, shown
from controller.store.openset import (
    ActiveHold,
    Fact,
    OpenParcel,
    OpenSet,
    load_holds,
    load_parcels,
)
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


# --- the whole hub, from the central database -------------------------------------------------

CONNECT_TIMEOUT_S: Final = 5
"""How long a hub-wide read waits to connect to PostgreSQL before saying it cannot."""
STATEMENT_TIMEOUT_S: Final = 300
"""The longest one statement of a hub-wide read may run on PostgreSQL."""
_FOLD_CHUNK: Final = 5_000


@dataclass(frozen=True, slots=True)
class SiteSummary:
    """One site's rows in a journal database: in the central one, as far as its forwarder
    has shipped them."""

    site: str
    rows: int
    last_seq: int
    newest_wall_time: datetime | None
    """When the site's journal wrote its newest row here (UTC): a forwarder that lags or
    is cut off shows as an old time."""

    @property
    def missing(self) -> int:
        """``seq`` numbers below ``last_seq`` that have no row: 0 in a sound copy, since a
        forwarder ships each site's rows in ``seq`` order."""
        return self.last_seq - self.rows


@dataclass(frozen=True, slots=True)
class JournalledAlarm:
    """An alarm whose newest journal row raises it (no row since has cleared it)."""

    site: str
    source: str
    line: str
    message: str
    since: datetime
    """UTC wall time of the row that raised it."""
    seq: int


@dataclass(frozen=True, slots=True)
class HubView:
    """The whole hub as one snapshot of a journal database shows it (see :func:`read_hub`)."""

    read_at: datetime
    sites: list[SiteSummary]
    alarms: list[JournalledAlarm]
    open_parcels: dict[str, int] | None
    """Open parcels per site (every site listed); None when they were not counted."""


def open_read_only(source: str | Path) -> sa.Engine:
    """An engine that only reads the journal database ``source``: a SQLite file (a path or a
    ``sqlite:///`` URL; never created) or a PostgreSQL URL (``postgresql://`` means psycopg;
    every transaction read-only, connecting bounded by :data:`CONNECT_TIMEOUT_S`).

    Raises :class:`JournalSourceError` for a bad URL, another database or a missing file.
    """
    text = str(source)
    if "://" not in text:
        path = Path(text)
        if not path.is_file():
            raise JournalSourceError(f"no journal database at {text!r}")
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True),
            poolclass=sa.pool.NullPool,
        )
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise JournalSourceError(f"not a database URL: {shown(text)}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return open_read_only(url.database or "")
    if backend != "postgresql":
        raise JournalSourceError(f"unsupported database {backend!r}: a SQLite file or PostgreSQL")
    if not url.host or not url.database:
        raise JournalSourceError(f"name the host and the database: {shown(text)}")
    timeout_ms = STATEMENT_TIMEOUT_S * 1000
    return sa.create_engine(
        url.set(drivername="postgresql+psycopg"),
        poolclass=sa.pool.NullPool,
        isolation_level="REPEATABLE READ",  # one snapshot for every part of a view
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "cargogate-central-view",
            # After the URL's own options (a hub in its own schema: -csearch_path=...).
            "options": " ".join(
                part
                for part in (
                    url.query.get("options"),
                    f"-c default_transaction_read_only=on -c statement_timeout={timeout_ms}",
                )
                if isinstance(part, str)
            ),
        },
    )


@contextmanager
def reading(source: str | Path) -> Iterator[sa.Connection]:
    """A read-only connection in one transaction (one snapshot) on a journal database.

    Raises :class:`JournalSourceError`, its message one line, when the source cannot be
    read: a bad URL, a missing file, an unreachable or refusing server, no journal there.
    """
    engine = open_read_only(source)
    try:
        with engine.connect() as conn, conn.begin():
            if not sa.inspect(conn).has_table(journal_table.name):
                raise JournalSourceError(
                    f"no journal table in {shown(source)}: not a CargoGate journal database "
                    "(or no forwarder has shipped to it yet)"
                )
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise JournalSourceError(f"cannot read {shown(source)}: {first_line(exc)}") from exc
    except ValueError as exc:  # a stored time or JSON value no writer stores (edited by hand)
        raise JournalSourceError(
            f"cannot read {shown(source)}: a row cannot be decoded ({first_line(exc)}); "
            "cargogate audit verify names it"
        ) from exc
    finally:
        engine.dispose()


def read_hub(
    source: str | Path, *, count_parcels: bool = True, parcels_since: datetime | None = None
) -> HubView:
    """Every site of a journal database, its active alarms and (with ``count_parcels``) its
    open parcels, all from one snapshot. Blocking; raises :class:`JournalSourceError`.

    ``parcels_since`` folds only rows written since then (a parcel opened before is not
    counted): see :func:`read_open_parcels`.
    """
    with reading(source) as conn:
        read_at = datetime.now(UTC)
        sites = site_summaries(conn)
        alarms = active_alarms(conn)
        parcels: dict[str, int] | None = None
        if count_parcels:
            folded = fold_open_parcels(conn, since=parcels_since)
            parcels = {s.site: len(folded.get(s.site, [])) for s in sites}
    return HubView(read_at=read_at, sites=sites, alarms=alarms, open_parcels=parcels)


def read_open_parcels(
    source: str | Path, site: str | None = None, since: datetime | None = None
) -> dict[str, list[OpenParcel]]:
    """Open parcels by site (of ``site`` only, if given), oldest first, folded from the
    journal rows. Blocking; raises :class:`JournalSourceError`.

    The central database keeps no open-parcel table (each site's journal keeps its own), so
    this is a pass over the rows that move parcels. ``since`` bounds it to rows written
    from then on, as a restarting controller's recovery horizon does: a parcel opened
    earlier and still open is not listed.
    """
    with reading(source) as conn:
        return fold_open_parcels(conn, site, since)


def read_history(source: str | Path, hawb: str, site: str | None = None) -> list[dict[str, Any]]:
    """Every row of ``hawb`` (at ``site`` only, if given) in ``(site, seq)`` order, as
    :func:`read_entries` gives rows: a parcel's history across the hub. Blocking; raises
    :class:`JournalSourceError`."""
    j = journal_table.c
    stmt = sa.select(journal_table).where(j.hawb == hawb)
    if site is not None:
        stmt = stmt.where(j.site == site)
    with reading(source) as conn:
        return [dict(row._mapping) for row in conn.execute(stmt.order_by(j.site, j.seq))]


def site_summaries(conn: sa.Connection) -> list[SiteSummary]:
    """Each site's row count, newest ``seq`` and that row's wall time, by site id."""
    j = journal_table.c
    per_site = (
        sa.select(
            j.site.label("site"),
            sa.func.count().label("rows"),
            sa.func.max(j.seq).label("last_seq"),
        )
        .group_by(j.site)
        .subquery()
    )
    stmt = (
        sa.select(per_site.c.site, per_site.c.rows, per_site.c.last_seq, j.wall_time)
        .join(journal_table, sa.and_(j.site == per_site.c.site, j.seq == per_site.c.last_seq))
        .order_by(per_site.c.site)
    )
    return [
        SiteSummary(
            site=str(row.site),
            rows=int(row.rows),
            last_seq=int(row.last_seq),
            newest_wall_time=row.wall_time,
        )
        for row in conn.execute(stmt)
    ]


def active_alarms(conn: sa.Connection, site: str | None = None) -> list[JournalledAlarm]:
    """Alarms whose newest row raises them, oldest first: each alarm row names its source in
    ``data["source"]`` and says ``active`` or ``cleared`` in ``state_to``."""
    j = journal_table.c
    stmt = sa.select(j.site, j.seq, j.wall_time, j.line, j.state_to, j.data).where(
        j.kind == EntryKind.ALARM.value
    )
    if site is not None:
        stmt = stmt.where(j.site == site)
    newest: dict[tuple[str, str], JournalledAlarm | None] = {}
    for row in conn.execution_options(yield_per=_FOLD_CHUNK).execute(stmt.order_by(j.site, j.seq)):
        data = row.data if isinstance(row.data, dict) else {}
        source = str(data.get("source") or row.line)
        raised = row.state_to == "active"
        newest[(row.site, source)] = (
            JournalledAlarm(
                site=row.site,
                source=source,
                line=row.line,
                message=str(data.get("message", "")),
                since=row.wall_time,
                seq=int(row.seq),
            )
            if raised
            else None
        )
    found = [alarm for alarm in newest.values() if alarm is not None]
    return sorted(found, key=lambda a: (a.since, a.site, a.seq))


def fold_open_parcels(
    conn: sa.Connection, site: str | None = None, since: datetime | None = None
) -> dict[str, list[OpenParcel]]:
    """Open parcels by site, folded (:class:`OpenSet`) from the rows that move parcels.

    Only rows that open a parcel or carry a command need their wall time and ``data`` (see
    :class:`Fact`); the others' stay in the database, undecoded (decision inputs are most of
    a journal's bytes).
    """
    j = journal_table.c
    detail = sa.or_(
        sa.and_(j.state_from == "", j.state_to != ""), j.kind == EntryKind.COMMAND.value
    )
    stmt = sa.select(
        j.site, j.seq, j.ts, sa.case((detail, j.wall_time)).label("wall_time"), j.kind, j.line,
        j.tracking_id, j.hawb, j.state_from, j.state_to, sa.case((detail, j.data)).label("data"),
    ).where(sa.or_(j.state_to != "", j.kind == EntryKind.COMMAND.value))  # fmt: skip
    if site is not None:
        stmt = stmt.where(j.site == site)
    if since is not None:
        stmt = stmt.where(j.wall_time >= since)
    sets: dict[str, OpenSet] = {}
    rows = conn.execution_options(yield_per=_FOLD_CHUNK).execute(stmt.order_by(j.site, j.seq))
    for row in rows:
        openset = sets.get(row[0])
        if openset is None:
            openset = sets[row[0]] = OpenSet(track_changes=False)
        openset.apply(Fact._make(row[1:]))  # the columns after site, in Fact's order
    return {
        name: sorted(openset.parcels.values(), key=lambda p: p.opened_seq)
        for name, openset in sets.items()
    }
