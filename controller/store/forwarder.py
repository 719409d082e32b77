"""Copies the local journal to the central database, at least once and without duplicates.

Rows go out in ``seq`` order, ``batch`` at a time, with ``INSERT ... ON CONFLICT DO NOTHING``
on the ``(site, seq)`` key; the local watermark (``forward_state``) advances only after the
central commit, so a crash or an outage at any point loses nothing and duplicates nothing.
All database work runs in a worker thread: a slow or dead central database never blocks the
event loop, and it never touches the journal writer (WAL readers do not block the writer).

Rows go out with their hash-chain columns as stored (:mod:`controller.store.chain`), so the
central copy verifies like the local journal.

Many sites share one central database, each under its own site id. A row the central copy
already holds is expected after a crash between the central commit and the watermark's write;
it is then compared with the local row, and a different one (two hosts forwarding under one
site id, or a journal started afresh under an old id) stops the copy with
:class:`SiteConflictError` before anything of the batch is committed: rows are never merged
or silently dropped. The watermark is kept per site and target (:func:`watermark_key`), so a
journal file that changed its site id ships the new site's rows from ``seq`` 1.

A central database that stops answering without closing the connection (a hung server, a
dropped network path that the kernel still acknowledges) never gives TCP a reason to fail.
So the forwarder watches its own calls: connecting is bounded by ``connect_timeout_s``, and a
call in progress that makes no progress for ``stall_timeout_s`` counts as a stall. A stall is
logged once, shows as link down with ``last_error`` "stalled: ...", and its connection's
socket is shut down under the hung call, which then fails at once; should the call still not
return, its thread (a daemon) is abandoned. ``aclose`` waits for a copy in progress at most
:data:`CLOSE_WAIT_S` before cutting it off the same way, so stopping a site waits seconds
on a hung network, not until TCP gives up, and no thread left behind keeps the process
from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import sqlalchemy as sa
from psycopg.errors import ConnectionTimeout
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from controller.core.link import LinkState
from controller.core.views import ForwarderView
from controller.store import chain, migrate
from controller.store.schema import forward_state_table, journal_table
from controller.store.sqlite import sqlite_engine, sqlite_url

log = logging.getLogger(__name__)

_SUPPORTED_BACKENDS = ("postgresql", "sqlite")
CLOSE_WAIT_S: Final = 2.0
"""How long ``aclose`` lets a copy in progress finish before cutting it off (it is shipped
again next time: the central insert ignores rows it already has)."""
_CUT_GRACE_S: Final = 0.5
"""How long a cut-off copy gets to return before its thread is abandoned."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Cycle:
    shipped: int
    backlog: int
    watermark: int


class SiteConflictError(Exception):
    """The central database holds a different row under this site's ``(site, seq)``.

    Two hosts forward under one site id, or this journal was started afresh under the id of
    one already shipped. Nothing of the batch was committed and the watermark stays where it
    was: the rows wait locally until a person decides (a distinct site id, or a cleaned-up
    central copy).
    """

    def __init__(
        self, site: str, seq: int, central_hash: str | None, local_hash: str | None
    ) -> None:
        super().__init__(
            f"site {site!r}: the central database already holds a different seq {seq} "
            f"(hash {_short(central_hash)}, this journal's {_short(local_hash)}); another host "
            f"forwards as {site!r} or this journal was started afresh; nothing shipped"
        )
        self.site = site
        self.seq = seq
        self.backlog = 0
        """Rows waiting locally (set by the copy that found the clash)."""
        self.watermark = 0


class CentralUnavailableError(Exception):
    """The central database could not be reached; ``backlog`` rows are waiting locally."""

    def __init__(self, cause: BaseException, backlog: int, watermark: int) -> None:
        stalled = is_stall(cause)
        super().__init__(("stalled: " if stalled else "") + describe_error(cause))
        self.stalled = stalled
        self.backlog = backlog
        self.watermark = watermark


@dataclass(eq=False)
class _Central:
    """One engine on the central database, and what the stall watchdog reads of it.

    The worker thread marks ``busy`` while it talks to the central database; every statement
    it starts or finishes moves ``progress_at`` (SQLAlchemy events). ``connections`` are the
    driver connections made, so a stalled call's socket can be shut down from the loop.
    """

    engine: sa.Engine
    migrated: bool = False
    busy: bool = False
    progress_at: float = 0.0
    backlog: int = 0
    """Rows waiting locally, as the copy in progress read them (what a stall reports)."""
    watermark: int = 0
    connections: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    def __post_init__(self) -> None:
        event.listen(self.engine, "connect", self._connected)
        event.listen(self.engine, "before_cursor_execute", self._progress)
        event.listen(self.engine, "after_cursor_execute", self._progress)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        if hasattr(dbapi_connection, "pgconn"):  # a socket to shut down (not SQLite's)
            self.connections.add(dbapi_connection)
        self._progress()

    def _progress(self, *_: Any) -> None:
        self.progress_at = time.monotonic()

    def begin(self, backlog: int, watermark: int) -> None:
        """The worker thread starts talking to the central database."""
        self.backlog, self.watermark = backlog, watermark
        self._progress()
        self.busy = True

    def idle_s(self) -> float | None:
        """Seconds since the call in progress last moved on; None when none is in progress."""
        return time.monotonic() - self.progress_at if self.busy else None

    def cut(self) -> None:
        """Shut down every connection's socket: a call hung on one fails at once."""
        for connection in list(self.connections):
            _shut_down(connection)


def target_name(central_url: str) -> str:
    """The watermark key for a central database: its URL without password, driver or query."""
    url = sa.make_url(central_url)
    bare = sa.URL.create(
        drivername=url.get_backend_name(),
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
    )
    return bare.render_as_string(hide_password=False)


def watermark_key(central_url: str, site: str) -> str:
    """The local watermark's key: the central database (:func:`target_name`) and the site.

    One journal file may hold rows of two site ids (a site renamed without a new file); each
    site's rows are shipped from their own watermark, never from the other's.
    """
    return f"{target_name(central_url)}#{site}"


def describe_error(exc: BaseException) -> str:
    """The first line of the driver's message, without SQLAlchemy's boilerplate."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(cause).__name__}: {first}"[:300]


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean "the central database is not reachable right now"."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | OSError | TimeoutError)


def is_stall(exc: BaseException) -> bool:
    """True for "the central database did not answer in time" (rather than refused it)."""
    cause = getattr(exc, "orig", None) or exc
    return isinstance(cause, ConnectionTimeout | TimeoutError)


class JournalForwarder:
    """Ships one site's local journal to the central database.

    ``run`` loops until cancelled: it ships a batch every ``interval_s`` (at once again while
    whole batches are waiting) and backs off exponentially, up to ``backoff_cap_s``, while the
    central database is unreachable. An outage (a stall included) is logged once when it
    starts and once when it ends. No call waits on the network for longer than
    ``connect_timeout_s`` to connect or ``stall_timeout_s`` without progress.
    """

    def __init__(
        self,
        local_path: Path,
        central_url: str,
        site: str,
        interval_s: float = 1.0,
        batch: int = 1000,
        *,
        backoff_cap_s: float = 30.0,
        connect_timeout_s: float = 2.0,
        stall_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        backend = sa.make_url(central_url).get_backend_name()
        if backend not in _SUPPORTED_BACKENDS:
            raise ValueError(
                f"central database must be one of {_SUPPORTED_BACKENDS}, got {backend!r}"
            )
        self.local_path = Path(local_path)
        self.central_url = central_url
        self.site = site
        self.target = target_name(central_url)
        self.watermark_key = watermark_key(central_url, site)
        self.interval_s = interval_s
        self.batch = batch
        self.backoff_cap_s = max(backoff_cap_s, interval_s)
        self._connect_timeout_s = connect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._local: sa.Engine | None = None
        self._central: _Central | None = None
        self._local_ready = False
        self._legacy_watermark = False  # adopted from a release that keyed it by target alone
        self._lock = asyncio.Lock()
        self._inflight: tuple[asyncio.Future[_Cycle], _Central] | None = None
        self._connected = False
        self._last_error: str | None = None
        self._backlog = 0
        self._shipped_total = 0
        self._watermark = 0
        self._outage_since: float | None = None
        self._faulted = False
        self._link = LinkState.CONNECTING

    @property
    def status(self) -> ForwarderView:
        return ForwarderView(
            connected=self._connected,
            last_error=self._last_error,
            backlog=self._backlog,
            shipped_total=self._shipped_total,
            watermark=self._watermark,
        )

    @property
    def link_state(self) -> LinkState:
        """Connecting until the first cycle; up after a shipped (or empty) cycle; down while
        the central database is unreachable or stalled (``status.last_error`` says which)
        and once closed; degraded when a cycle failed for another reason (a broken local
        file, a schema mismatch)."""
        return self._link

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def close(self) -> None:
        """The old name of :meth:`aclose`."""
        await self.aclose()

    async def aclose(self) -> None:
        """Let a copy in progress finish (cut off after :data:`CLOSE_WAIT_S`), then release
        the connections. Idempotent; returns within a few seconds whatever the network does."""
        if self._inflight is not None:
            await self._watch(*self._inflight, limit_s=CLOSE_WAIT_S)
        central, self._central = self._central, None
        engines = [e for e in (self._local, central.engine if central else None) if e is not None]
        self._local = None
        self._local_ready = False
        for engine in engines:  # a pooled connection to a hung server may not close quickly
            await asyncio.wait([_in_thread(engine.dispose, "journal-forwarder-close")], timeout=1)
        self._link = LinkState.DOWN

    async def forward_once(self) -> int:
        """Ship up to ``batch`` rows; return how many were committed centrally.

        An unreachable central database is not an error here: it returns 0 and shows in
        :attr:`status`. Other errors (a broken local file, a schema mismatch) propagate.
        """
        shipped, _ = await self._forward()
        return shipped

    async def run(self) -> None:
        """Forward until cancelled. Never raises except on cancellation."""
        failures = 0
        while True:
            try:
                shipped, ok = await self._forward()
            except Exception as exc:
                shipped, ok = 0, False
                if not self._faulted:
                    self._faulted = True
                    if isinstance(exc, SiteConflictError):  # a site's mistake, not a crash
                        log.error("journal forwarding to %s refused: %s", self.target, exc)
                    else:
                        log.exception("journal forwarding to %s failed; retrying", self.target)
            else:
                if ok and self._faulted:
                    self._faulted = False
                    log.info("journal forwarding to %s works again", self.target)
            if ok:
                failures = 0
                delay = 0.0 if shipped >= self.batch else self.interval_s
            else:
                failures += 1
                delay = min(self.backoff_cap_s, self.interval_s * 2 ** min(failures - 1, 30))
            await asyncio.sleep(delay)

    async def _forward(self) -> tuple[int, bool]:
        async with self._lock:
            if self._inflight is not None and not await self._watch(*self._inflight):
                # a cancelled caller's copy is still running and now stalls: never run two
                return 0, False
            central = self._central or self._new_central()
            work = _in_thread(lambda: self._cycle(central), f"journal-forwarder-{self.site}")
            self._inflight = work, central
            if not await self._watch(work, central):
                return 0, False
            try:
                cycle = work.result()
            except CentralUnavailableError as exc:
                self._on_outage(str(exc), exc.backlog, exc.watermark, stalled=exc.stalled)
                return 0, False
            except SiteConflictError as exc:  # nothing ships until a person decides
                self._connected = False  # so every view shows last_error, not "connected"
                self._backlog, self._watermark = exc.backlog, exc.watermark
                self._last_error = describe_error(exc)
                self._link = LinkState.DEGRADED
                raise
            except Exception as exc:
                self._last_error = describe_error(exc)
                self._link = LinkState.DEGRADED
                raise
            self._on_success(cycle)
            return cycle.shipped, True

    async def _watch(
        self, work: asyncio.Future[_Cycle], central: _Central, limit_s: float | None = None
    ) -> bool:
        """Wait for a copy; True once it has returned (its outcome is the caller's to read).

        False when it had to be cut off: its central call made no progress for
        ``stall_timeout_s`` (reported as a stall) or ``limit_s`` ran out. Cutting it shuts its
        sockets down and drops its engine, so the next copy connects afresh; the copy's own
        outcome is then left unread (it would only echo the cut).
        """
        loop = asyncio.get_running_loop()
        deadline = None if limit_s is None else loop.time() + limit_s
        tick = min(0.1, self.stall_timeout_s / 4)
        while not work.done():
            await asyncio.wait([work], timeout=tick)
            if work.done():
                return True
            idle = central.idle_s()
            stalled = idle is not None and idle >= self.stall_timeout_s
            if stalled or (deadline is not None and loop.time() >= deadline):
                if stalled:
                    self._on_stall(central)
                self._cut(central)
                await asyncio.wait([work], timeout=_CUT_GRACE_S)
                return False
        return True

    def _cut(self, central: _Central) -> None:
        """Cut off the copy using ``central`` and stop using its engine (disposed in the
        background once its calls return)."""
        central.cut()
        if self._central is central:
            self._central = None
            _in_thread(central.engine.dispose, "journal-forwarder-dispose")

    def _on_stall(self, central: _Central) -> None:
        message = f"stalled: no answer from the central database for {self.stall_timeout_s:g} s"
        self._on_outage(message, central.backlog, central.watermark, stalled=True)

    def _on_outage(self, message: str, backlog: int, watermark: int, *, stalled: bool) -> None:
        self._connected = False
        self._link = LinkState.DOWN
        self._last_error = message
        self._backlog = backlog
        self._watermark = watermark
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "central journal %s %s; keeping %d rows locally and retrying",
                self.target,
                message if stalled else f"unreachable ({message})",
                backlog,
            )

    def _on_success(self, cycle: _Cycle) -> None:
        self._connected = True
        self._link = LinkState.UP
        self._last_error = None
        self._backlog = cycle.backlog
        self._watermark = cycle.watermark
        self._shipped_total += cycle.shipped
        if self._outage_since is not None:
            lasted = time.monotonic() - self._outage_since
            self._outage_since = None
            log.info(
                "central journal %s reachable again after %.1f s; %d rows still to ship",
                self.target,
                lasted,
                cycle.backlog,
            )

    # --- worker thread ------------------------------------------------------------------

    def _cycle(self, central: _Central) -> _Cycle:
        """Read a batch locally, commit it centrally, then advance the local watermark."""
        local = self._local_engine()
        with local.connect() as conn:
            watermark = self._read_watermark(conn)
            rows = [
                dict(row._mapping)
                for row in conn.execute(
                    sa.select(journal_table)
                    .where(journal_table.c.site == self.site, journal_table.c.seq > watermark)
                    .order_by(journal_table.c.seq)
                    .limit(self.batch)
                )
            ]
            backlog = self._count_after(conn, watermark)
        central.begin(backlog, watermark)
        try:
            if not central.migrated:
                migrate.upgrade(central.engine)
                central.migrated = True
            if rows:
                self._ship(central.engine, rows)
            else:
                with central.engine.connect() as cconn:
                    cconn.execute(sa.select(1))
        except SiteConflictError as exc:
            exc.backlog, exc.watermark = backlog, watermark
            raise
        except Exception as exc:
            if is_outage(exc):
                raise CentralUnavailableError(exc, backlog, watermark) from exc
            raise
        finally:
            central.busy = False
        if not rows:
            return _Cycle(shipped=0, backlog=backlog, watermark=watermark)
        new_watermark = int(rows[-1]["seq"])
        self._write_watermark(local, new_watermark)
        return _Cycle(shipped=len(rows), backlog=backlog - len(rows), watermark=new_watermark)

    def _ship(self, engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
        """Commit ``rows`` centrally, or raise :class:`SiteConflictError`.

        A plain insert first: it commits only when no key was there, so every row is this
        journal's. Should any key be there (shipped before a crash, or another host's under
        this site id), that insert fails whole and a second transaction inserts the rest,
        skipping keys it finds, and compares each row it skipped with the local one.
        """
        try:
            with engine.begin() as cconn:
                cconn.execute(sa.insert(journal_table), rows)
            return
        except sa.exc.IntegrityError:
            pass  # the slow path below names what was there (or raises what else failed)
        with engine.begin() as cconn:
            insert = _insert_ignoring_duplicates(engine.dialect.name)
            inserted: set[int] = set(cconn.execute(insert, rows).scalars())
            if len(inserted) < len(rows):  # the same rows again, or a clash
                self._check_present(cconn, [r for r in rows if r["seq"] not in inserted])

    def _check_present(self, cconn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Raise :class:`SiteConflictError` unless the central copy holds exactly ``rows``
        (which it refused to insert again); in the batch's transaction, so a clash commits
        nothing."""
        j = journal_table.c
        seqs = [int(row["seq"]) for row in rows]
        stmt = sa.select(journal_table).where(
            j.site == self.site, j.seq >= min(seqs), j.seq <= max(seqs)
        )
        there = {int(row["seq"]): row for row in cconn.execute(stmt).mappings()}
        for row in rows:
            central_row = there.get(int(row["seq"]))
            if central_row is None or not _same_row(row, central_row):
                central_hash = None if central_row is None else central_row["hash"]
                raise SiteConflictError(self.site, int(row["seq"]), central_hash, row["hash"])

    def _local_engine(self) -> sa.Engine:
        if self._local is None:
            self._local = sqlite_engine(sqlite_url(self.local_path), create_parent=True)
        if not self._local_ready:
            migrate.upgrade(self._local)
            self._local_ready = True
        return self._local

    def _new_central(self) -> _Central:
        """An engine on the central database (no I/O yet: it connects on first use)."""
        self._central = _Central(self._make_central_engine())
        return self._central

    def _make_central_engine(self) -> sa.Engine:
        url = sa.make_url(self.central_url)
        if url.get_backend_name() == "sqlite":
            return sqlite_engine(url, create_parent=True)
        connect_args: dict[str, Any] = {
            "connect_timeout": max(1, round(self._connect_timeout_s)),
            "application_name": f"cargogate-forwarder-{self.site}"[:63],
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=1,
            max_overflow=1,
            pool_recycle=1800,
            connect_args=connect_args,
        )

    def _read_watermark(self, conn: sa.Connection) -> int:
        """This site's watermark for the target; a release before per-site watermarks kept
        one per target (its key the bare target name), which counts only where every row of
        the file is this site's (else this site ships from ``seq`` 1: the central insert
        ignores rows it has)."""
        f = forward_state_table.c
        stmt = sa.select(f.target, f.last_seq).where(
            f.target.in_([self.watermark_key, self.target])
        )
        marks = {str(row.target): int(row.last_seq) for row in conn.execute(stmt)}
        if self.watermark_key in marks:
            return marks[self.watermark_key]
        legacy = marks.get(self.target)
        if legacy is None:
            return 0
        j = journal_table.c
        # Two lookups on the primary key's leading column (one min-max select scans it all).
        lowest = conn.execute(sa.select(sa.func.min(j.site))).scalar()
        highest = conn.execute(sa.select(sa.func.max(j.site))).scalar()
        self._legacy_watermark = lowest == highest == self.site
        return legacy if self._legacy_watermark else 0

    def _count_after(self, conn: sa.Connection, watermark: int) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(journal_table)
            .where(journal_table.c.site == self.site, journal_table.c.seq > watermark)
        )
        return int(conn.execute(stmt).scalar_one())

    def _write_watermark(self, local: sa.Engine, last_seq: int) -> None:
        """Advance (never lower) the watermark; lowering it is an operator's decision. An
        adopted watermark of an older release is replaced by this site's, in one commit."""
        stmt = sqlite.insert(forward_state_table).values(
            target=self.watermark_key, last_seq=last_seq, updated_at=datetime.now(UTC)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[forward_state_table.c.target],
            set_={
                "last_seq": sa.func.max(forward_state_table.c.last_seq, stmt.excluded.last_seq),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        writer = local.execution_options(sqlite_begin="IMMEDIATE")
        with writer.begin() as conn:
            conn.execute(stmt)
            if self._legacy_watermark:
                f = forward_state_table.c
                conn.execute(sa.delete(forward_state_table).where(f.target == self.target))
        self._legacy_watermark = False


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned copy's outcome as seen; the next cycle reports the same state."""
    if not future.cancelled():
        future.exception()


def _in_thread(work: Callable[[], _T], name: str) -> asyncio.Future[_T]:
    """Run ``work`` in a new daemon thread; its outcome settles the returned future.

    Not :func:`asyncio.to_thread`: the default executor's threads are joined when the loop
    and the interpreter shut down, so one hung in a network call would keep a stopped
    process alive. A daemon thread can be abandoned.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    future.add_done_callback(_retrieve)

    def settle(result: _T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, exc = work(), None
        except BaseException as error:
            result, exc = None, error
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits
            loop.call_soon_threadsafe(settle, result, exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _shut_down(dbapi_connection: Any) -> None:
    """Shut a PostgreSQL connection's socket down for reading and writing: a call blocked on
    it sees the connection closed at once. Closing the descriptor is left to its owner."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return
    with contextlib.suppress(Exception):  # already closed, or not a socket any more
        sock = socket.socket(fileno=os.dup(pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def _insert_ignoring_duplicates(dialect: str) -> sa.Insert:
    """Insert rows, skipping those whose ``(site, seq)`` is there; returns the inserted seqs."""
    key = [journal_table.c.site, journal_table.c.seq]
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(journal_table).on_conflict_do_nothing(index_elements=key)
    elif dialect == "sqlite":
        stmt = sqlite.insert(journal_table).on_conflict_do_nothing(index_elements=key)
    else:
        raise ValueError(f"unsupported central database {dialect!r}")
    return stmt.returning(journal_table.c.seq)


def _same_row(local: Mapping[Any, Any], central: Mapping[Any, Any]) -> bool:
    """Whether two copies of a journal row agree on every audited field and the hash."""
    if local["hash"] != central["hash"]:
        return False
    try:
        return chain.canonical(local) == chain.canonical(central)
    except (TypeError, ValueError):  # a value no writer stores: not the row shipped
        return False


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]
