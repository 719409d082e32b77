"""The forwarder against a central database that stops answering without closing the link.

A hung server (or a network path the kernel still acknowledges) never makes TCP fail: the
forwarder must notice by itself, say so once, keep the rows, stop on time when asked to, and
ship everything once a real server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from controller.core.link import LinkState
from controller.store import chain
from controller.store.forwarder import JournalForwarder, watermark_key
from controller.store.journal import SqliteJournal
from controller.store.read import read_entries, read_watermarks
from tests.test_forwarder import FORWARDER_LOG, SITE, entry, forwarder_records, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[1]
THREAD = f"journal-forwarder-{SITE}"


class FreezingProxy:
    """A loopback relay to PostgreSQL that can freeze like a hung server.

    Frozen, it accepts connections and relays nothing either way, keeping every socket open:
    the kernel still acknowledges, so the client's TCP stack never gives up. Thawed, it
    resets what was caught frozen (as a restarted server would) and relays again.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._answering = asyncio.Event()
        self._answering.set()
        self._caught: list[asyncio.WriteTransport] = []
        self._open: set[asyncio.WriteTransport] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._answering.clear()

    def thaw(self) -> None:
        for transport in self._caught:
            transport.abort()
        self._caught.clear()
        self._answering.set()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._open):
            transport.abort()
        self._answering.set()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pair: list[asyncio.WriteTransport] = [writer.transport]
        self._open.add(writer.transport)
        try:
            if not self._answering.is_set():
                await self._hang(pair)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            pair.append(up_writer.transport)
            self._open.add(up_writer.transport)
            await asyncio.gather(
                self._pipe(reader, up_writer, pair), self._pipe(up_reader, writer, pair)
            )
        except OSError:
            pass
        finally:
            for transport in pair:
                transport.abort()
                self._open.discard(transport)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: list[asyncio.WriteTransport],
    ) -> None:
        while data := await reader.read(65536):
            if not self._answering.is_set():
                await self._hang(pair)  # the request is swallowed: no answer, no reset
                return
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    async def _hang(self, pair: list[asyncio.WriteTransport]) -> None:
        self._caught.extend(pair)
        await self._answering.wait()


@pytest.fixture
async def frozen_pg(pg_url: str) -> AsyncIterator[tuple[FreezingProxy, str]]:
    """(proxy, URL of the test's PostgreSQL database reached through the proxy)."""
    url = sa.make_url(pg_url)
    proxy = FreezingProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    finally:
        await proxy.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """The port of a server that accepts connections and never reads or answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()
        await server.wait_closed()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    async with SqliteJournal(tmp_path / "local" / "journal.sqlite", SITE) as j:
        yield j


def link_of(fwd: JournalForwarder) -> LinkState:
    return fwd.link_state


def forwarder_thread_alive() -> bool:
    return any(t.name == THREAD and t.is_alive() for t in threading.enumerate())


async def test_a_server_that_never_answers_is_a_stall_logged_once(
    journal: SqliteJournal, silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARDER_LOG)
    central = f"postgresql+psycopg://cargogate@127.0.0.1:{silent_server}/central"
    await journal.write([entry(i) for i in range(3)])
    fwd = JournalForwarder(
        journal.path, central, SITE, interval_s=0.05, backoff_cap_s=0.1, stall_timeout_s=1.0
    )
    async with asyncio.timeout(10):
        assert await fwd.forward_once() == 0
    status = fwd.status
    assert not status.connected
    assert status.last_error is not None
    assert status.last_error.startswith("stalled")
    assert status.backlog == 3
    assert fwd.link_state is LinkState.DOWN

    task = asyncio.create_task(fwd.run())  # keeps retrying into the silence
    await asyncio.sleep(1.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    await fwd.aclose()
    assert time.perf_counter() - started < 5.0
    warnings = forwarder_records(caplog, logging.WARNING)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "stalled" in warnings[0].getMessage()
    assert read_watermarks(journal.path) == {}


@pytest.mark.postgres
async def test_a_link_that_freezes_is_cut_reported_once_and_nothing_is_lost(
    journal: SqliteJournal,
    frozen_pg: tuple[FreezingProxy, str],
    pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARDER_LOG)
    proxy, central = frozen_pg
    async with JournalForwarder(journal.path, central, SITE, batch=10, stall_timeout_s=1.0) as fwd:
        await journal.write([entry(i) for i in range(15)])
        assert await fwd.forward_once() == 10
        assert await fwd.forward_once() == 5

        proxy.freeze()
        await journal.write([entry(i) for i in range(15, 25)])
        started = time.perf_counter()
        assert await fwd.forward_once() == 0  # hangs on the pooled connection: cut after 1 s
        took = time.perf_counter() - started
        assert 0.9 < took < 3.0, f"took {took:.1f} s"
        status = fwd.status
        assert not status.connected
        assert status.last_error == "stalled: no answer from the central database for 1 s"
        assert (status.backlog, status.shipped_total, status.watermark) == (10, 15, 15)
        assert fwd.link_state is LinkState.DOWN
        await wait_until(lambda: not forwarder_thread_alive(), 5.0)  # the cut ended it

        assert await fwd.forward_once() == 0  # a new connection, accepted and never answered
        assert len(forwarder_records(caplog, logging.WARNING)) == 1

        proxy.thaw()

        async def shipped_all() -> None:
            while fwd.status.shipped_total < 25:
                await fwd.forward_once()

        async with asyncio.timeout(15):
            await shipped_all()
        assert fwd.status.connected
        assert link_of(fwd) is LinkState.UP
    assert read_entries(pg_url) == read_entries(journal.path)
    assert read_watermarks(journal.path) == {watermark_key(central, SITE): 25}
    assert [(c.site, c.entries, c.ok) for c in chain.verify(pg_url)] == [(SITE, 25, True)]
    assert len(forwarder_records(caplog, logging.WARNING)) == 1
    recoveries = forwarder_records(caplog, logging.INFO)
    assert [r.getMessage() for r in recoveries if "reachable again" in r.getMessage()]


@pytest.mark.postgres
async def test_close_returns_promptly_while_a_copy_hangs(
    journal: SqliteJournal, frozen_pg: tuple[FreezingProxy, str]
) -> None:
    """Closing cuts a hung copy off after a bounded wait, even before it counts as a stall."""
    proxy, central = frozen_pg
    fwd = JournalForwarder(journal.path, central, SITE, interval_s=0.05, stall_timeout_s=60)
    await journal.write([entry(1)])
    assert await fwd.forward_once() == 1
    proxy.freeze()
    await journal.write([entry(2)])
    task = asyncio.create_task(fwd.run())
    await asyncio.sleep(0.5)
    assert forwarder_thread_alive(), "the copy should hang on the frozen link"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    await fwd.aclose()
    took = time.perf_counter() - started
    assert took < 5.0, f"close took {took:.1f} s"
    await wait_until(lambda: not forwarder_thread_alive(), 5.0)
    assert fwd.link_state is LinkState.DOWN


CHILD = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    from pathlib import Path
    from controller.store.forwarder import JournalForwarder
    from controller.store.journal import SqliteJournal
    from tests.test_forwarder import SITE, entry

    async def main(path: Path, central: str) -> None:
        async with SqliteJournal(path, SITE) as journal:
            await journal.write([entry(1)])
            fwd = JournalForwarder(path, central, SITE, interval_s=0.05, stall_timeout_s=60)
            async with fwd:
                assert await fwd.forward_once() == 1
                print("shipped", flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                await journal.write([entry(2)])
                task = asyncio.create_task(fwd.run())
                await asyncio.sleep(0.5)
                task.cancel()  # what SIGTERM does to the site's tasks
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        print("closed", flush=True)

    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
    """
)


@pytest.mark.postgres
async def test_a_process_stops_while_its_copy_hangs(
    tmp_path: Path, frozen_pg: tuple[FreezingProxy, str]
) -> None:
    """The issue's symptom: SIGTERM left the process running, joined to a hung thread."""
    proxy, central = frozen_pg
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(tmp_path / "journal.sqlite"),
        central,
        cwd=PROJECT_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert await child.stdout.readline() == b"shipped\n"
        proxy.freeze()
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        started = time.perf_counter()
        async with asyncio.timeout(10):
            _, err = await child.communicate()
        took = time.perf_counter() - started
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0, err.decode()
    assert took < 6.0, f"the process took {took:.1f} s to stop"
