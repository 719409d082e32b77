"""Several controller processes, one central PostgreSQL: nothing lost, doubled or mixed up.

Each site runs in a process of its own, as on its own host: its real journal and its real
forwarder (or the whole ``cargogate run``), shipping to the one test database. One site's
link to the central database is cut while the other keeps shipping; a process is killed
with SIGKILL and started again. Afterwards each site's central rows are exactly its local
journal (``seq`` 1..N, hash chain verified), and the hub view read from the central
database is what each site's own journal shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from controller.app.cli import app
from controller.store import chain
from controller.store.read import count_entries, read_entries, read_hub, read_open_set
from tests.test_forwarder import TcpProxy

pytestmark = pytest.mark.postgres

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SITES = ("HUB-A", "HUB-B")

CONTROLLER = textwrap.dedent(
    """
    import asyncio, contextlib, os, random, signal, sys
    from pathlib import Path
    from controller.core.domain import EntryKind, JournalEntry
    from controller.store.forwarder import JournalForwarder
    from controller.store.journal import SqliteJournal

    STEPS = [("", "scanned"), ("scanned", "decided"), ("decided", "recirculating"),
             ("recirculating", "scanned"), ("scanned", "decided"), ("decided", "in_inspection"),
             ("in_inspection", "cleared_after_inspection")]

    async def sort(journal, site, stop):
        rng = random.Random(os.getpid())
        n = 0
        while not stop.is_set():
            n += 1
            line, tid, hawb = f"L{n % 2 + 1}", n % 40, f"{site}-{rng.randrange(10**9)}"
            for frm, to in STEPS[: rng.randrange(1, len(STEPS) + 1)]:
                data = {"arrived_at": n - 4.0} if frm == "" else {}
                await journal.write([JournalEntry(float(n), EntryKind.TRANSITION, line, tid,
                                                  hawb, state_from=frm, state_to=to, data=data)])
            if n % 25 == 0:
                active = n % 50 == 25
                await journal.write([JournalEntry(
                    float(n), EntryKind.ALARM, line, 0, state_to="active" if active else "cleared",
                    data={"source": f"{line}/sorter", "message": "down" if active else "up"})])
            await asyncio.sleep(0.002)

    async def main(path, site, central):
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with SqliteJournal(path, site, group_commit_ms=1) as journal:
            forwarder = JournalForwarder(path, central, site, interval_s=0.05, batch=200,
                                         backoff_cap_s=0.2, connect_timeout_s=1)
            async with forwarder:
                shipping = asyncio.create_task(forwarder.run())
                print("ready", flush=True)
                await sort(journal, site, stop)
                shipping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shipping
                try:
                    while await forwarder.forward_once() > 0:  # the tail, as a site stops
                        pass
                except Exception as exc:  # refused: said in the status, as on a console
                    print("refused", type(exc).__name__, flush=True)
                print("stopped", journal.last_seq, forwarder.status.backlog, flush=True)

    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
    """
)


async def start(path: Path, site: str, central: str) -> asyncio.subprocess.Process:
    """A controller process for ``site``: journalling parcels and forwarding, until SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONTROLLER,
        str(path),
        site,
        central,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        assert await process.stdout.readline() == b"ready\n"
    return process


async def stop(process: asyncio.subprocess.Process) -> bytes:
    """SIGTERM, then its last words: ``stopped LAST_SEQ BACKLOG``."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 0
    return out.strip().splitlines()[-1]


async def rows(source: str | Path, site: str) -> int:
    """Rows of ``site`` in a journal database; 0 while it has no journal yet."""
    try:
        return await asyncio.to_thread(count_entries, source, site)
    except (FileNotFoundError, sa.exc.OperationalError, sa.exc.ProgrammingError):
        return 0


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll an async condition (counts in another process's database) until it holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    """A relay to the test database that can be closed: one site's network link."""
    url = sa.make_url(pg_url)
    relay = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await relay.start()
    try:
        yield relay
    finally:
        if relay._server is not None:
            await relay.stop()


def via(pg_url: str, relay: TcpProxy) -> str:
    return sa.make_url(pg_url).set(host="127.0.0.1", port=relay.port).render_as_string(False)


def assert_copies_are_whole(pg_url: str, journals: dict[str, Path]) -> None:
    """Each site's central rows are its local journal, seq 1..N; every chain verifies; the
    hub view of the central copy is what each site's own journal shows."""
    lengths = {}
    for site, path in journals.items():
        local = read_entries(path, site)
        central = read_entries(pg_url, site)
        assert [r["seq"] for r in central] == list(range(1, len(local) + 1)), site
        assert central == local, site
        lengths[site] = len(local)
    assert [(c.site, c.entries, c.ok) for c in chain.verify(pg_url)] == [
        (site, lengths[site], True) for site in sorted(journals)
    ]
    hub = read_hub(pg_url)
    assert [(s.site, s.rows, s.last_seq, s.missing) for s in hub.sites] == [
        (site, lengths[site], lengths[site], 0) for site in sorted(journals)
    ]
    own = {site: read_hub(path) for site, path in journals.items()}
    kept = {site: len(read_open_set(path, site)[0]) for site, path in journals.items()}
    assert hub.open_parcels == kept  # folded centrally = the tables each journal keeps
    assert {site: view.open_parcels for site, view in own.items()} == {
        site: {site: n} for site, n in kept.items()
    }
    alarms = sorted(
        (alarm for view in own.values() for alarm in view.alarms),
        key=lambda a: (a.since, a.site, a.seq),
    )
    assert hub.alarms == alarms


async def test_two_controller_processes_share_one_central_database(
    tmp_path: Path, pg_url: str, proxy: TcpProxy
) -> None:
    journals = {site: tmp_path / site / "journal.sqlite" for site in SITES}
    a, b = SITES
    centrals = {a: pg_url, b: via(pg_url, proxy)}  # B reaches the database through the relay
    processes: dict[str, asyncio.subprocess.Process] = {}
    try:
        for site in SITES:
            processes[site] = await start(journals[site], site, centrals[site])

        async def both_shipping() -> bool:
            return min([await rows(pg_url, a), await rows(pg_url, b)]) >= 200

        await until(both_shipping)

        # B's link to the central database goes down: B journals on, A ships on
        await proxy.stop()
        await asyncio.sleep(0.5)  # B notices; a copy it had in flight is settled
        a_shipped, b_shipped, b_local = (
            await rows(pg_url, a),
            await rows(pg_url, b),
            await rows(journals[b], b),
        )
        await asyncio.sleep(2.0)
        assert await rows(pg_url, a) > a_shipped + 100, "A stopped shipping while B was cut off"
        assert await rows(journals[b], b) > b_local + 100, "B stopped journalling"
        assert await rows(pg_url, b) == b_shipped

        # A is killed mid-stream (SIGKILL) and started again while B is still cut off
        processes[a].kill()
        await processes[a].wait()
        a_killed = await rows(journals[a], a)
        processes[a] = await start(journals[a], a, centrals[a])

        async def a_caught_up() -> bool:
            return await rows(pg_url, a) > a_killed

        await until(a_caught_up)
        assert await rows(pg_url, b) == b_shipped

        # B's link comes back: B ships its backlog from its watermark
        await proxy.start()
        b_waiting = await rows(journals[b], b)

        async def b_caught_up() -> bool:
            return await rows(pg_url, b) >= b_waiting

        await until(b_caught_up)

        for site in SITES:
            word, last_seq, backlog = (await stop(processes.pop(site))).split()
            assert (word, int(backlog)) == (b"stopped", 0)
            assert int(last_seq) == await rows(journals[site], site)
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    await asyncio.to_thread(assert_copies_are_whole, pg_url, journals)


async def test_a_second_host_under_the_same_site_id_is_refused_and_mixes_nothing_in(
    tmp_path: Path, pg_url: str
) -> None:
    """Two hosts configured with one site id: their rows claim the same keys. While the
    first is ahead, the second's rows would only be skipped; once the first stops and the
    second passes it, they would be appended to the first's. The central copy must stay the
    first host's journal; the second ships nothing, keeps every row and says why."""
    first, second = tmp_path / "one" / "journal.sqlite", tmp_path / "two" / "journal.sqlite"
    processes = {first: await start(first, "HUB-A", pg_url)}
    try:

        async def first_shipping() -> bool:
            return await rows(pg_url, "HUB-A") >= 100

        await until(first_shipping)
        processes[second] = await start(second, "HUB-A", pg_url)
        await asyncio.sleep(0.5)  # both running
        word, first_last, first_backlog = (await stop(processes.pop(first))).split()
        assert (word, int(first_backlog)) == (b"stopped", 0)

        async def second_ahead() -> bool:
            return await rows(second, "HUB-A") >= int(first_last) + 300

        await until(second_ahead)
        word, second_last, second_backlog = (await stop(processes.pop(second))).split()
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert_copies_are_whole(pg_url, {"HUB-A": first})
    assert word == b"stopped"
    assert int(second_backlog) == int(second_last) == await rows(second, "HUB-A")  # all kept


def site_file(tmp_path: Path, site: str, central: str) -> Path:
    """config/demo.yaml as one site of a hub: its own id, journal and central database; the
    twin at ten times real time; a free console port; no command socket."""
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    folder = tmp_path / site
    folder.mkdir()
    raw["site"]["id"] = site
    raw["store"] = {
        "journal_path": str(folder / "journal.sqlite"),
        "central_url": central,
        "forward_interval_s": 0.1,
    }
    raw["console"] = {"port": 0}
    raw["commands"] = {"enabled": False}
    scenario = PROJECT_ROOT / "config" / raw["plant"]["scenario"]
    raw["plant"] = {**raw["plant"], "scenario": str(scenario), "speed": 10}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_two_cargogate_run_processes_share_one_central_database(
    tmp_path: Path, pg_url: str, proxy: TcpProxy
) -> None:
    """The same with the real thing: two ``cargogate run`` processes of the demo site under
    two site ids, one of them cut off from the central database for a while."""
    a, b = SITES
    centrals = {a: pg_url, b: via(pg_url, proxy)}
    files = {site: site_file(tmp_path, site, centrals[site]) for site in SITES}
    journals = {site: tmp_path / site / "journal.sqlite" for site in SITES}
    command = [sys.executable, "-c", "from controller.app.cli import app; app()", "run"]
    processes = [
        await asyncio.create_subprocess_exec(
            *command,
            str(files[site]),
            "--duration",
            "14",
            "--no-live",
            cwd=PROJECT_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for site in SITES
    ]
    try:

        async def both_shipping() -> bool:
            return min([await rows(pg_url, a), await rows(pg_url, b)]) >= 20

        await until(both_shipping, timeout_s=60)
        await proxy.stop()
        await asyncio.sleep(0.5)
        a_shipped, b_shipped = await rows(pg_url, a), await rows(pg_url, b)
        await asyncio.sleep(2.0)
        assert await rows(pg_url, a) > a_shipped
        assert await rows(pg_url, b) == b_shipped
        assert await rows(journals[b], b) > b_shipped
        await proxy.start()
        async with asyncio.timeout(90):
            outputs = [(await p.communicate())[0].decode() for p in processes]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
    await asyncio.to_thread(assert_copies_are_whole, pg_url, journals)

    result = CliRunner().invoke(app, ["central", "status", pg_url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(s["site"], s["rows"], s["missing"]) for s in doc["sites"]] == [
        (site, count_entries(journals[site], site), 0) for site in SITES
    ]
