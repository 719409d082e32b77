"""The forwarder: ships the local journal to a central database exactly once, across outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.core.domain import EntryKind, JournalEntry
from controller.core.link import LinkState
from controller.core.reasons import Reason
from controller.store import chain
from controller.store.forwarder import (
    JournalForwarder,
    SiteConflictError,
    target_name,
    watermark_key,
)
from controller.store.journal import SqliteJournal
from controller.store.read import count_entries, read_entries, read_watermarks
from tests.support import max_loop_lag

SITE = "HUB1"
FORWARDER_LOG = "controller.store.forwarder"


def entry(tracking_id: int) -> JournalEntry:
    return JournalEntry(
        ts=500.0 + tracking_id,
        kind=EntryKind.DECISION,
        line="L1",
        tracking_id=tracking_id,
        hawb=f"H{tracking_id:08d}",
        destination="inspection",
        lane=2,
        reasons=(Reason.RISK_RED,),
        policy_version="p1",
        data={"score": tracking_id / 10, "nested": {"ok": True}},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def central_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central' / 'central.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    async with SqliteJournal(tmp_path / "local" / "journal.sqlite", SITE) as j:
        yield j


class TcpProxy:
    """A loopback TCP relay that a test can stop (dropping every connection) and restart.

    With ``blackhole`` set it accepts connections and never answers: a hung central server.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._transports.add(writer.transport)
        try:
            if self.blackhole:
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self._transports.add(up_writer.transport)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@pytest.fixture
async def proxied_pg(pg_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """(proxy, URL of the test's PostgreSQL database reached through the proxy)."""
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        via = url.set(host="127.0.0.1", port=proxy.port)
        yield proxy, via.render_as_string(hide_password=False)
    finally:
        if proxy._server is not None:
            await proxy.stop()


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition that another task or thread makes true (no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def drain(forwarder: JournalForwarder) -> int:
    total = 0
    while shipped := await forwarder.forward_once():
        total += shipped
    return total


def forwarder_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == FORWARDER_LOG and r.levelno == level]


async def test_ships_every_row_verbatim(journal: SqliteJournal, central_url: str) -> None:
    for start in range(0, 250, 25):
        await journal.write([entry(i) for i in range(start, start + 25)])
    async with JournalForwarder(journal.path, central_url, SITE, batch=100) as forwarder:
        assert [await forwarder.forward_once() for _ in range(4)] == [100, 100, 50, 0]
        status = forwarder.status
    assert status.connected
    assert status.last_error is None
    assert (status.backlog, status.shipped_total, status.watermark) == (0, 250, 250)
    assert read_entries(central_url) == read_entries(journal.path)
    assert read_watermarks(journal.path) == {watermark_key(central_url, SITE): 250}


async def test_idempotent_when_repeated_or_watermark_reset(
    journal: SqliteJournal, central_url: str
) -> None:
    await journal.write([entry(i) for i in range(40)])
    async with JournalForwarder(journal.path, central_url, SITE, batch=15) as forwarder:
        assert await drain(forwarder) == 40
        assert await drain(forwarder) == 0

    local = sqlite3.connect(journal.path)
    local.execute("DELETE FROM forward_state")
    local.commit()
    local.close()

    await journal.write([entry(i) for i in range(40, 45)])
    async with JournalForwarder(journal.path, central_url, SITE, batch=15) as forwarder:
        assert await drain(forwarder) == 45  # shipped again, ignored centrally
    rows = read_entries(central_url)
    assert [r["seq"] for r in rows] == list(range(1, 46))
    assert count_entries(central_url) == 45


async def test_sites_share_one_central_database(tmp_path: Path, central_url: str) -> None:
    for site in ("HUB1", "HUB2"):
        async with SqliteJournal(tmp_path / site / "journal.sqlite", site) as journal:
            await journal.write([entry(i) for i in range(10)])
        async with JournalForwarder(journal.path, central_url, site) as forwarder:
            assert await drain(forwarder) == 10
    assert count_entries(central_url, site="HUB1") == 10
    assert count_entries(central_url, site="HUB2") == 10


async def test_a_second_journal_under_a_shipped_site_id_is_refused_not_merged(
    tmp_path: Path, central_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hosts forwarding as one site (or a journal started afresh under an old id): the
    central copy keeps the first one's rows, nothing of the second is shipped or marked
    shipped, and the forwarder says why instead of counting the clash as shipped."""
    caplog.set_level(logging.INFO, logger=FORWARDER_LOG)
    first, second = tmp_path / "host1" / "journal.sqlite", tmp_path / "host2" / "journal.sqlite"
    async with SqliteJournal(first, SITE) as journal:
        await journal.write([entry(i) for i in range(10)])
    async with SqliteJournal(second, SITE) as journal:
        await journal.write([entry(i) for i in range(100, 112)])
    async with JournalForwarder(first, central_url, SITE) as forwarder:
        assert await drain(forwarder) == 10
    shipped = read_entries(central_url)

    async with JournalForwarder(second, central_url, SITE, interval_s=0.02) as forwarder:
        with pytest.raises(SiteConflictError, match="seq 1") as raised:
            await forwarder.forward_once()
        assert f"another host forwards as {SITE!r}" in str(raised.value)
        assert forwarder.link_state is LinkState.DEGRADED
        assert forwarder.status.last_error is not None
        assert forwarder.status.last_error.startswith("SiteConflictError")
        assert forwarder.status.shipped_total == 0

        task = asyncio.create_task(forwarder.run())  # keeps refusing; says so once
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert read_entries(central_url) == shipped  # the first host's rows, untouched
    assert count_entries(central_url) == 10  # none of the second's 11th and 12th either
    assert read_watermarks(second) == {}
    refusals = forwarder_records(caplog, logging.ERROR)
    assert len(refusals) == 1
    assert refusals[0].exc_info is None  # a site's mistake, told in one line
    assert "refused" in refusals[0].getMessage()


async def test_a_row_shipped_again_must_match_the_central_copy(
    journal: SqliteJournal, central_url: str
) -> None:
    """Rows re-shipped after a crash (the watermark not yet written) are compared, not
    trusted: a central row edited meanwhile stops the copy instead of being taken as sent."""
    await journal.write([entry(i) for i in range(6)])
    async with JournalForwarder(journal.path, central_url, SITE) as forwarder:
        assert await drain(forwarder) == 6
    engine = sa.create_engine(central_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE journal SET hawb = 'EDITED' WHERE seq = 4"))
    engine.dispose()
    local = sqlite3.connect(journal.path)
    local.execute("DELETE FROM forward_state")  # as if the watermark's write was lost
    local.commit()
    local.close()
    await journal.write([entry(6)])
    async with JournalForwarder(journal.path, central_url, SITE) as forwarder:
        with pytest.raises(SiteConflictError, match="seq 4"):
            await forwarder.forward_once()
    assert count_entries(central_url) == 6  # the batch's new row was not committed either


async def test_each_site_in_a_journal_file_ships_from_its_own_watermark(
    tmp_path: Path, central_url: str
) -> None:
    """A site renamed without a new journal file: the new id's rows start at seq 1 again and
    must not be skipped as if the old id's watermark covered them."""
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, "OLD-ID") as journal:
        await journal.write([entry(i) for i in range(20)])
    async with JournalForwarder(path, central_url, "OLD-ID") as forwarder:
        assert await drain(forwarder) == 20
    async with SqliteJournal(path, "NEW-ID") as journal:
        await journal.write([entry(i) for i in range(5)])
    async with JournalForwarder(path, central_url, "NEW-ID") as forwarder:
        assert await drain(forwarder) == 5
    assert read_entries(central_url, site="NEW-ID") == read_entries(path, site="NEW-ID")
    assert read_watermarks(path) == {
        watermark_key(central_url, "OLD-ID"): 20,
        watermark_key(central_url, "NEW-ID"): 5,
    }


async def test_a_watermark_of_an_older_release_goes_on_where_it_stood(
    journal: SqliteJournal, central_url: str
) -> None:
    """Releases before per-site watermarks kept one per central database: a file of one
    site takes it over (its rows are not shipped all over again) and drops the old key."""
    await journal.write([entry(i) for i in range(30)])
    async with JournalForwarder(journal.path, central_url, SITE, batch=20) as forwarder:
        assert await forwarder.forward_once() == 20
    local = sqlite3.connect(journal.path)
    local.execute("UPDATE forward_state SET target = ?", (target_name(central_url),))
    local.commit()
    local.close()
    async with JournalForwarder(journal.path, central_url, SITE) as forwarder:
        assert await drain(forwarder) == 10
    assert read_watermarks(journal.path) == {watermark_key(central_url, SITE): 30}
    assert read_entries(central_url) == read_entries(journal.path)


async def test_an_older_watermark_in_a_file_of_two_sites_is_not_trusted(
    tmp_path: Path, central_url: str
) -> None:
    """Whose rows an old per-database watermark counted is unknown once a file holds two
    sites: each ships from seq 1 (rows the central copy has are compared and skipped)."""
    path = tmp_path / "journal.sqlite"
    for site in ("OLD-ID", "NEW-ID"):
        async with SqliteJournal(path, site) as journal:
            await journal.write([entry(i) for i in range(8)])
    async with JournalForwarder(path, central_url, "OLD-ID") as forwarder:
        assert await drain(forwarder) == 8
    local = sqlite3.connect(path)
    local.execute("UPDATE forward_state SET target = ?", (target_name(central_url),))
    local.commit()
    local.close()
    async with JournalForwarder(path, central_url, "NEW-ID") as forwarder:
        assert await drain(forwarder) == 8
    async with JournalForwarder(path, central_url, "OLD-ID") as forwarder:
        assert await drain(forwarder) == 8  # shipped again, found equal, nothing doubled
    assert read_entries(central_url) == read_entries(path)
    assert [(c.site, c.entries, c.ok) for c in chain.verify(central_url)] == [
        ("NEW-ID", 8, True),
        ("OLD-ID", 8, True),
    ]


async def test_run_keeps_shipping_until_cancelled(journal: SqliteJournal, tmp_path: Path) -> None:
    central = f"sqlite:///{tmp_path / 'central.sqlite'}"
    async with JournalForwarder(journal.path, central, SITE, interval_s=0.02, batch=7) as fwd:
        task = asyncio.create_task(fwd.run())
        for i in range(5):
            await journal.write([entry(i * 10 + k) for k in range(10)])
            await asyncio.sleep(0.01)
        await wait_until(lambda: fwd.status.shipped_total >= 50)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert count_entries(central) == 50
    assert fwd.status.backlog == 0


async def test_target_name_hides_the_password() -> None:
    name = target_name("postgresql+psycopg://audit:s3cret@db.example:5433/central?sslmode=require")
    assert "s3cret" not in name
    assert name == "postgresql://audit@db.example:5433/central"


@pytest.mark.postgres
async def test_outage_and_recovery(
    journal: SqliteJournal,
    proxied_pg: tuple[TcpProxy, str],
    pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARDER_LOG)
    proxy, central = proxied_pg
    async with JournalForwarder(journal.path, central, SITE, batch=25) as forwarder:
        await journal.write([entry(i) for i in range(20)])
        assert await drain(forwarder) == 20

        await proxy.stop()
        started = time.perf_counter()
        for i in range(20, 50):
            await journal.write([entry(i)])
        assert time.perf_counter() - started < 2.0, "the journal waited on the central outage"
        assert journal.last_seq == 50

        for _ in range(3):
            assert await forwarder.forward_once() == 0
        status = forwarder.status
        assert not status.connected
        assert status.last_error
        assert status.backlog == 30
        assert status.shipped_total == 20
        assert len(forwarder_records(caplog, logging.WARNING)) == 1
        assert forwarder_records(caplog, logging.INFO) == []

        await proxy.start()
        assert proxy.port == sa.make_url(central).port
        assert await drain(forwarder) == 30
        status = forwarder.status
        assert status.connected
        assert status.last_error is None
        assert (status.backlog, status.shipped_total) == (0, 50)

    assert read_entries(pg_url) == read_entries(journal.path)
    assert len(forwarder_records(caplog, logging.WARNING)) == 1
    recoveries = forwarder_records(caplog, logging.INFO)
    assert len(recoveries) == 1
    assert "reachable again" in recoveries[0].getMessage()


@pytest.mark.postgres
async def test_run_rides_out_an_outage(
    journal: SqliteJournal, proxied_pg: tuple[TcpProxy, str], pg_url: str
) -> None:
    proxy, central = proxied_pg
    fwd = JournalForwarder(journal.path, central, SITE, interval_s=0.02, backoff_cap_s=0.1)
    async with fwd:
        task = asyncio.create_task(fwd.run())
        await journal.write([entry(i) for i in range(10)])
        await wait_until(lambda: fwd.status.shipped_total >= 10)
        await proxy.stop()
        await journal.write([entry(i) for i in range(10, 20)])
        await wait_until(lambda: not fwd.status.connected)
        await proxy.start()
        await wait_until(lambda: fwd.status.shipped_total >= 20)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert read_entries(pg_url) == read_entries(journal.path)


@pytest.mark.postgres
async def test_hung_central_does_not_block_the_event_loop(
    journal: SqliteJournal, proxied_pg: tuple[TcpProxy, str]
) -> None:
    """A server that accepts and never answers costs the connect timeout, in a thread."""
    proxy, central = proxied_pg
    await journal.write([entry(1)])
    async with JournalForwarder(journal.path, central, SITE, connect_timeout_s=2) as forwarder:
        assert await forwarder.forward_once() == 1
        await proxy.stop()
        proxy.blackhole = True
        await proxy.start()
        await journal.write([entry(2)])

        took = 0.0

        async def forward_into_the_void() -> None:
            nonlocal took
            started = time.perf_counter()
            async with asyncio.timeout(15):
                assert await forwarder.forward_once() == 0
            took = time.perf_counter() - started

        worst = await max_loop_lag(forward_into_the_void, tick_s=0.01)
        assert not forwarder.status.connected
        assert forwarder.status.backlog == 1
    assert 1.0 < took < 10.0
    assert worst < 0.1, f"event loop stalled for {worst * 1000:.0f} ms"
