"""The local audit journal: a SQLite file written by one thread with group commit.

:class:`SqliteJournal` implements :class:`controller.core.ports.Journal`. ``write`` hands its
entries to the writer thread and returns once they are committed with ``synchronous=FULL``
(durable). The writer gathers everything queued within ``group_commit_ms`` into one
transaction, so many concurrent writers share one fsync. No database call ever runs on the
event loop. The same transaction updates the open parcels and active holds the rows imply
(:mod:`controller.store.openset`), so start-up recovery never has to fold the journal.

The writer also seals each row into the site's hash chain (:mod:`controller.store.chain`):
it alone assigns ``seq``, so it alone knows the previous row's hash. It carries the chain on
from the newest row when the file is reopened, and starts it (from the genesis value) after
rows that predate the chain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa

from controller.core.domain import JournalEntry
from controller.store import migrate
from controller.store.chain import GENESIS, entry_hash
from controller.store.openset import TableKeeper
from controller.store.read import chain_head
from controller.store.rows import entry_to_row
from controller.store.schema import journal_table
from controller.store.sqlite import sqlite_engine, sqlite_url

log = logging.getLogger(__name__)

MAX_BATCH_ROWS: Final = 10_000


class JournalError(Exception):
    """The journal could not make entries durable; the caller must treat them as unwritten."""


class JournalClosedError(JournalError):
    """``write`` was called on a journal that is not open."""


@dataclass(slots=True)
class _Request:
    rows: list[dict[str, Any]]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


_STOP: Final = object()


class SqliteJournal:
    """The durable local journal of one site. Use as ``async with SqliteJournal(...) as j``.

    ``seq`` is assigned here, contiguous per site and continued when the file is reopened;
    only one journal may write a given file at a time.
    """

    def __init__(
        self,
        path: Path,
        site: str,
        group_commit_ms: float = 2.0,
        *,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        if group_commit_ms < 0:
            raise ValueError(f"group_commit_ms must be >= 0, got {group_commit_ms}")
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        self.path = Path(path)
        self.site = site
        self.url = sqlite_url(self.path)
        self._window_s = group_commit_ms / 1000.0
        self._max_batch_rows = max_batch_rows
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._gate = threading.Lock()  # orders "accepting" against queueing
        self._next_seq = 1
        self._last_hash = GENESIS  # the hash of row next_seq - 1; writer thread only
        self._commits = 0
        self._rows_written = 0
        self._failed_batches = 0
        self._tables = TableKeeper(site)  # open parcels and holds; writer thread only

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Migrate the file (creating it and its folders) and start the writer thread."""
        if self._thread is not None:
            raise RuntimeError("journal already started")
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(migrate.upgrade, self.url)
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name=f"journal-writer-{self.site}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise
        with self._gate:
            self._accepting = True

    async def close(self) -> None:
        """Commit everything already written, then stop the writer. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        with self._gate:
            if self._accepting:
                self._accepting = False
                self._queue.put(_STOP)
        await asyncio.to_thread(thread.join)
        self._thread = None

    # --- the port -----------------------------------------------------------------------

    async def write(self, entries: list[JournalEntry]) -> None:
        """Return once every entry is committed to disk. Must not block the event loop.

        Raises ValueError/TypeError for an entry that cannot be stored (nothing is queued),
        :class:`JournalClosedError` when the journal is not open, and :class:`JournalError`
        when the commit failed (none of the entries is stored). Cancelling the caller does
        not withdraw entries already handed over.
        """
        if not entries:
            return
        rows = [entry_to_row(entry) for entry in entries]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._gate:
            if not self._accepting:
                raise JournalClosedError(f"journal {self.path} is not open")
            self._queue.put(_Request(rows, future, loop))
        await future

    # --- figures for KPIs and tests -----------------------------------------------------

    @property
    def commits(self) -> int:
        """Transactions committed since start (one per group of writes)."""
        return self._commits

    @property
    def rows_written(self) -> int:
        return self._rows_written

    @property
    def failed_batches(self) -> int:
        return self._failed_batches

    @property
    def writing(self) -> bool:
        """Whether the writer thread is running (it stops only on close or a fatal error)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the newest committed entry (0 when the site has none)."""
        return self._next_seq - 1

    # --- the writer thread --------------------------------------------------------------

    def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        try:
            engine, conn, (last, last_hash) = self._open()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self._next_seq = last + 1
        self._last_hash = last_hash
        ready.set_result(last)
        batch: list[_Request] = []
        try:
            while True:
                batch, stop = self._gather()
                if batch:
                    self._commit(conn, batch)
                batch = []
                if stop:
                    return
        except BaseException as exc:
            log.exception("journal writer for %s stopped", self.path)
            for request in batch:
                _settle(request, exc)
            self._fail_remaining(exc)
        finally:
            conn.close()
            engine.dispose()

    def _open(self) -> tuple[sa.Engine, sa.Connection, tuple[int, str]]:
        """The writer's engine and connection, and the newest ``seq`` of this site with its
        hash; loads the site's open parcels into the table keeper in the same read."""
        engine = sqlite_engine(self.url)
        try:
            conn = engine.execution_options(sqlite_begin="IMMEDIATE").connect()
            try:
                with conn.begin():
                    self._tables.load(conn)
                    last, last_hash = chain_head(conn, self.site)
                    if last and last_hash is None:
                        log.info(
                            "journal %s: the hash chain of %s starts at seq %d (the rows "
                            "before it predate the chain and stay unsealed)",
                            self.path,
                            self.site,
                            last + 1,
                        )
                    return engine, conn, (last, last_hash or GENESIS)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            engine.dispose()
            raise

    def _gather(self) -> tuple[list[_Request], bool]:
        """Wait for a request, then collect more for up to the group-commit window."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, _Request)
        batch = [first]
        rows = len(first.rows)
        deadline = time.monotonic() + self._window_s
        while rows < self._max_batch_rows:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Request)
            batch.append(item)
            rows += len(item.rows)
        return batch, False

    def _commit(self, conn: sa.Connection, batch: list[_Request]) -> None:
        wall_time = datetime.now(UTC)
        seq, prev = self._next_seq, self._last_hash
        rows: list[dict[str, Any]] = []
        try:
            for request in batch:
                for row in request.rows:
                    full = {**row, "site": self.site, "seq": seq, "wall_time": wall_time}
                    full["prev_hash"] = prev
                    full["hash"] = prev = entry_hash(full)
                    rows.append(full)
                    seq += 1
            with conn.begin():
                conn.execute(sa.insert(journal_table), rows)
                self._tables.apply(conn, rows)  # open parcels and holds, in step
        except Exception as exc:
            self._tables.discard()  # it may be ahead of the rolled-back tables
            self._failed_batches += 1
            log.error("journal commit of %d rows to %s failed: %s", len(rows), self.path, exc)
            for request in batch:
                _settle(request, exc)
            return
        self._next_seq, self._last_hash = seq, prev
        self._commits += 1
        self._rows_written += len(rows)
        for request in batch:
            _settle(request, None)

    def _fail_remaining(self, exc: BaseException) -> None:
        with self._gate:
            self._accepting = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request):
                _settle(item, exc)


def _settle(request: _Request, exc: BaseException | None) -> None:
    """Resolve a waiting writer's future from the writer thread."""

    def resolve() -> None:
        if request.future.done():
            return
        if exc is None:
            request.future.set_result(None)
        else:
            error = JournalError(f"journal commit failed: {exc}")
            error.__cause__ = exc
            request.future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
        request.loop.call_soon_threadsafe(resolve)
