"""The audit log adapter: searches the journal table of a SQLite file or a PostgreSQL database.

:class:`SqlAuditLog` implements :class:`controller.core.ports.AuditLog` for the web console
(track and trace, the alarm history, the supervisors' audit search). Every filter runs in
SQL, so a page costs one count and one bounded select however large the journal grows.
Queries are blocking SQLAlchemy run in worker threads, never on the event loop, and at most
``max_concurrent`` of them at a time: the controller's intake and forwarder share those
threads, and a burst of console searches must not starve them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa

from controller.core.audit import MAX_LIMIT, AuditPage, AuditQuery, AuditRecord
from controller.core.domain import EntryKind
from controller.store.schema import journal_table
from controller.store.sqlite import sqlite_engine

"""The most records one page may hold, whatever the caller asks for."""

_SUPPORTED_BACKENDS: Final = ("postgresql", "sqlite")
_EMPTY: Final = AuditPage(records=(), total=0)
_J = journal_table.c


class SqlAuditLog:
    """Searches one site's journal (``site=None``: every site in a central database).

    ``source`` is a SQLite file (a Path, a plain path string or a ``sqlite:///`` URL) or a
    PostgreSQL URL. A SQLite file that does not exist yet reads as an empty journal and is
    never created here: the console may start before the controller writes its first row.
    One engine serves the object's life; ``close``/``aclose`` (or ``async with``) dispose it.
    On PostgreSQL every transaction is read-only and each statement is cut off after
    ``statement_timeout_s``, so a careless search cannot hold the central database.
    """

    def __init__(
        self,
        source: str | Path,
        site: str | None,
        *,
        max_concurrent: int = 2,
        statement_timeout_s: float = 30.0,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        if statement_timeout_s <= 0:
            raise ValueError(f"statement_timeout_s must be > 0, got {statement_timeout_s}")
        self.url = _url(source)
        backend = self.url.get_backend_name()
        if backend not in _SUPPORTED_BACKENDS:
            raise ValueError(f"audit source must be one of {_SUPPORTED_BACKENDS}, got {backend!r}")
        self.site = site
        self._sqlite_path: Path | None = None
        if backend == "sqlite":
            database = self.url.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                raise ValueError(
                    f"the audit log needs a SQLite file, got {database or '(memory)'!r}"
                )
            self._sqlite_path = Path(database)
        self._statement_timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._engine: sa.Engine | None = None
        self._closed = False
        self._lock = threading.Lock()  # engine creation and disposal, from worker threads
        self._slots = asyncio.Semaphore(max_concurrent)

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def close(self) -> None:
        """Dispose of the engine (blocking). Idempotent; searching afterwards is an error."""
        with self._lock:
            self._closed = True
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    async def aclose(self) -> None:
        """:meth:`close` off the event loop."""
        await asyncio.to_thread(self.close)

    # --- the port -----------------------------------------------------------------------

    async def search(self, query: AuditQuery) -> AuditPage:
        """Matching entries, newest first (``seq`` descending), and how many match in all.

        ``limit`` is capped at :data:`MAX_LIMIT`. Raises ValueError for a negative limit or
        offset and for naive ``since``/``until`` (journal times are UTC). A search cancelled
        by its caller still holds its slot until its worker thread finishes, so abandoned
        searches cannot pile up behind the concurrency limit.
        """
        _check(query)
        if self._closed:
            raise RuntimeError("the audit log is closed")
        await self._slots.acquire()
        try:
            work = asyncio.ensure_future(asyncio.to_thread(self._search, query))
        except BaseException:
            self._slots.release()
            raise
        work.add_done_callback(self._finished)
        return await asyncio.shield(work)

    def _finished(self, work: asyncio.Future[AuditPage]) -> None:
        self._slots.release()
        if not work.cancelled():
            work.exception()  # an abandoned search's error is not worth a loop warning

    # --- worker thread ------------------------------------------------------------------

    def _search(self, query: AuditQuery) -> AuditPage:
        engine = self._engine_or_none()
        if engine is None:
            return _EMPTY
        where = self._conditions(query)
        count = sa.select(sa.func.count()).select_from(journal_table).where(*where)
        limit = min(query.limit, MAX_LIMIT)
        try:
            with engine.connect() as conn, conn.begin():  # one snapshot: count and page agree
                total = int(conn.execute(count).scalar_one())
                if limit == 0 or query.offset >= total:
                    return AuditPage(records=(), total=total)
                page = (
                    sa.select(journal_table)
                    .where(*where)
                    .order_by(_J.seq.desc(), _J.site)
                    .limit(limit)
                    .offset(query.offset)
                )
                rows = conn.execute(page).all()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            if not self._has_journal(engine):
                return _EMPTY  # the journal is being created (or central not yet migrated)
            raise
        return AuditPage(records=tuple(_record(row._mapping) for row in rows), total=total)

    def _engine_or_none(self) -> sa.Engine | None:
        """The engine, made on first need; None while the SQLite file does not exist (the
        file is checked before every connection, since connecting would create it)."""
        if self._sqlite_path is not None and not self._sqlite_path.exists():
            return None
        with self._lock:
            if self._closed:
                raise RuntimeError("the audit log is closed")
            if self._engine is None:
                self._engine = self._make_engine()
            return self._engine

    def _make_engine(self) -> sa.Engine:
        if self._sqlite_path is not None:
            return sqlite_engine(self.url)
        options = (
            f"-c default_transaction_read_only=on -c statement_timeout={self._statement_timeout_ms}"
        )
        return sa.create_engine(
            self.url,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=2,
            pool_recycle=1800,
            isolation_level="REPEATABLE READ",  # count and page from one snapshot
            connect_args={
                "connect_timeout": 5,
                "application_name": f"cargogate-audit-{self.site or 'all'}"[:63],
                "options": options,
            },
        )

    @staticmethod
    def _has_journal(engine: sa.Engine) -> bool:
        with engine.connect() as conn:
            return sa.inspect(conn).has_table(journal_table.name)

    def _conditions(self, query: AuditQuery) -> list[sa.ColumnElement[bool]]:
        """The WHERE clause: every field of the query, in SQL. Empty values leave it open."""
        where: list[sa.ColumnElement[bool]] = []
        if self.site is not None:
            where.append(_J.site == self.site)
        if query.since is not None:
            where.append(_J.wall_time >= query.since)
        if query.until is not None:
            where.append(_J.wall_time < query.until)
        if query.kinds:
            where.append(_J.kind.in_([EntryKind(kind).value for kind in query.kinds]))
        if query.line:
            where.append(_J.line == query.line)
        if query.hawb:
            where.append(_J.hawb == query.hawb)
        if query.tracking_id is not None:
            where.append(_J.tracking_id == query.tracking_id)
        if query.reason is not None:
            where.append(_has_reason(int(query.reason)))
        if query.user:
            where.append(_J.data["user"].as_string() == query.user)
        if query.text:
            where.append(_data_contains(query.text))
        if query.before_seq is not None:
            where.append(_J.seq < query.before_seq)
        return where


def _has_reason(code: int) -> sa.ColumnElement[bool]:
    """Rows whose ``reasons`` list holds ``code``: a LIKE on the serialised JSON, in SQL.

    The text is normalised first: whitespace dropped and both brackets turned into commas,
    so ``[30, 305]`` reads ``,30,305,``. Every code then sits between two commas and the
    pattern ``%,30,%`` cannot match 305, 130 or -30. The list holds integers only (written
    by :func:`controller.store.rows.entry_to_row`), so no string can contain a comma. The
    same expression works on SQLite (JSON stored as TEXT) and PostgreSQL (``json`` cast to
    its text), without either dialect's JSON functions.
    """
    text: sa.ColumnElement[str] = sa.cast(_J.reasons, sa.Text)
    for blank in (" ", "\t", "\n", "\r"):
        text = sa.func.replace(text, blank, "")
    text = sa.func.replace(sa.func.replace(text, "[", ","), "]", ",")
    return text.like(f"%,{code},%")


def _data_contains(needle: str) -> sa.ColumnElement[bool]:
    """``data``'s JSON text contains ``needle``, ignoring case (ASCII case on SQLite).

    The journal stores JSON with non-ASCII characters, quotes and backslashes escaped, so
    the needle is matched both as typed and as JSON would escape it. Wildcards in the
    needle are escaped: ``50%`` means those three characters. Note that object keys are
    part of the text too (``source`` matches every alarm).
    """
    text = sa.cast(_J.data, sa.Text)
    forms = {needle, json.dumps(needle)[1:-1]}
    return sa.or_(*(text.icontains(form, autoescape=True) for form in sorted(forms)))


def _check(query: AuditQuery) -> None:
    if query.limit < 0:
        raise ValueError(f"limit must be >= 0, got {query.limit}")
    if query.offset < 0:
        raise ValueError(f"offset must be >= 0, got {query.offset}")
    for name in ("since", "until"):
        value = getattr(query, name)
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} {value!r} is naive: give a timezone-aware time")


def _url(source: str | Path) -> sa.URL:
    """A Path or a plain path string names a SQLite file; anything with ``://`` is a URL."""
    if isinstance(source, Path) or "://" not in source:
        return sa.make_url(f"sqlite:///{source}")
    return sa.make_url(source)


def _record(row: Any) -> AuditRecord:
    """A journal row as a record; an unknown ``kind`` (a newer release's row) is an error
    naming the row, never a silently dropped audit entry."""
    try:
        kind = EntryKind(row["kind"])
    except ValueError:
        raise ValueError(
            f"journal row {row['site']}/{row['seq']} has unknown kind {row['kind']!r}"
        ) from None
    data = row["data"]
    return AuditRecord(
        seq=int(row["seq"]),
        wall_time=row["wall_time"],
        ts=float(row["ts"]),
        kind=kind,
        line=row["line"],
        tracking_id=int(row["tracking_id"]),
        hawb=row["hawb"],
        state_from=row["state_from"],
        state_to=row["state_to"],
        destination=row["destination"],
        lane=None if row["lane"] is None else int(row["lane"]),
        reasons=tuple(int(code) for code in row["reasons"] or ()),
        policy_version=row["policy_version"],
        data=data if isinstance(data, dict) else {},
    )
