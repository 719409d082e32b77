"""Copies the local journal to the central database, at least once and without duplicates.

Rows go out in ``seq`` order, ``batch`` at a time, with ``INSERT ... ON CONFLICT DO NOTHING``
on the ``(site, seq)`` key; the local watermark (``forward_state``) advances only after the
central commit, so a crash or an outage at any point loses nothing and duplicates nothing.
All database work runs in a worker thread: a slow or dead central database never blocks the
event loop, and it never touches the journal writer (WAL readers do not block the writer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from controller.core.link import LinkState
from controller.core.views import ForwarderView
from controller.store import migrate
from controller.store.schema import forward_state_table, journal_table
from controller.store.sqlite import sqlite_engine, sqlite_url

log = logging.getLogger(__name__)

_SUPPORTED_BACKENDS = ("postgresql", "sqlite")


@dataclass(frozen=True, slots=True)
class _Cycle:
    shipped: int
    backlog: int
    watermark: int


class CentralUnavailableError(Exception):
    """The central database could not be reached; ``backlog`` rows are waiting locally."""

    def __init__(self, cause: BaseException, backlog: int, watermark: int) -> None:
        super().__init__(describe_error(cause))
        self.backlog = backlog
        self.watermark = watermark


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


class JournalForwarder:
    """Ships one site's local journal to the central database.

    ``run`` loops until cancelled: it ships a batch every ``interval_s`` (at once again while
    whole batches are waiting) and backs off exponentially, up to ``backoff_cap_s``, while the
    central database is unreachable. An outage is logged once when it starts and once when
    it ends.
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
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
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
        self.interval_s = interval_s
        self.batch = batch
        self.backoff_cap_s = max(backoff_cap_s, interval_s)
        self._connect_timeout_s = connect_timeout_s
        self._local: sa.Engine | None = None
        self._central: sa.Engine | None = None
        self._local_ready = False
        self._central_ready = False
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Future[_Cycle] | None = None
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
        the central database is unreachable and once closed; degraded when a cycle failed
        for another reason (a broken local file, a schema mismatch)."""
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
        """Wait for a copy in progress, then release the connections. Idempotent."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight])
        engines = [e for e in (self._local, self._central) if e is not None]
        self._local = self._central = None
        self._local_ready = self._central_ready = False
        for engine in engines:
            await asyncio.to_thread(engine.dispose)
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
            except Exception:
                shipped, ok = 0, False
                if not self._faulted:
                    self._faulted = True
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
            if self._inflight is not None and not self._inflight.done():
                # a cancelled caller left its copy running in the thread: never run two
                await asyncio.wait([self._inflight])
            inflight = asyncio.ensure_future(asyncio.to_thread(self._cycle))
            inflight.add_done_callback(_retrieve)
            self._inflight = inflight
            try:
                cycle = await asyncio.shield(inflight)
            except CentralUnavailableError as exc:
                self._on_outage(exc)
                return 0, False
            except Exception as exc:
                self._last_error = describe_error(exc)
                self._link = LinkState.DEGRADED
                raise
            self._on_success(cycle)
            return cycle.shipped, True

    def _on_outage(self, exc: CentralUnavailableError) -> None:
        self._connected = False
        self._link = LinkState.DOWN
        self._last_error = str(exc)
        self._backlog = exc.backlog
        self._watermark = exc.watermark
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "central journal %s unreachable (%s); keeping %d rows locally and retrying",
                self.target,
                exc,
                exc.backlog,
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

    def _cycle(self) -> _Cycle:
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
        try:
            central = self._central_engine()
            if rows:
                with central.begin() as cconn:
                    cconn.execute(_insert_ignoring_duplicates(central.dialect.name), rows)
            else:
                with central.connect() as cconn:
                    cconn.execute(sa.select(1))
        except Exception as exc:
            if is_outage(exc):
                raise CentralUnavailableError(exc, backlog, watermark) from exc
            raise
        if not rows:
            return _Cycle(shipped=0, backlog=backlog, watermark=watermark)
        new_watermark = int(rows[-1]["seq"])
        self._write_watermark(new_watermark)
        return _Cycle(shipped=len(rows), backlog=backlog - len(rows), watermark=new_watermark)

    def _local_engine(self) -> sa.Engine:
        if self._local is None:
            self._local = sqlite_engine(sqlite_url(self.local_path), create_parent=True)
        if not self._local_ready:
            migrate.upgrade(self._local)
            self._local_ready = True
        return self._local

    def _central_engine(self) -> sa.Engine:
        if self._central is None:
            self._central = self._make_central_engine()
        if not self._central_ready:
            migrate.upgrade(self._central)
            self._central_ready = True
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
        stmt = sa.select(forward_state_table.c.last_seq).where(
            forward_state_table.c.target == self.target
        )
        return int(conn.execute(stmt).scalar_one_or_none() or 0)

    def _count_after(self, conn: sa.Connection, watermark: int) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(journal_table)
            .where(journal_table.c.site == self.site, journal_table.c.seq > watermark)
        )
        return int(conn.execute(stmt).scalar_one())

    def _write_watermark(self, last_seq: int) -> None:
        """Advance (never lower) the watermark; lowering it is an operator's decision."""
        assert self._local is not None
        stmt = sqlite.insert(forward_state_table).values(
            target=self.target, last_seq=last_seq, updated_at=datetime.now(UTC)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[forward_state_table.c.target],
            set_={
                "last_seq": sa.func.max(forward_state_table.c.last_seq, stmt.excluded.last_seq),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        writer = self._local.execution_options(sqlite_begin="IMMEDIATE")
        with writer.begin() as conn:
            conn.execute(stmt)


def _retrieve(future: asyncio.Future[_Cycle]) -> None:
    """Mark an abandoned copy's outcome as seen; the next cycle reports the same state."""
    if not future.cancelled():
        future.exception()


def _insert_ignoring_duplicates(dialect: str) -> sa.Insert:
    if dialect == "postgresql":
        return postgresql.insert(journal_table).on_conflict_do_nothing(
            index_elements=[journal_table.c.site, journal_table.c.seq]
        )
    if dialect == "sqlite":
        return sqlite.insert(journal_table).on_conflict_do_nothing(
            index_elements=[journal_table.c.site, journal_table.c.seq]
        )
    raise ValueError(f"unsupported central database {dialect!r}")
