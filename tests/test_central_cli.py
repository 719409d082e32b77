"""``cargogate central``: the whole hub read from the central database, as a user meets it.

Two sites write through their real journals and ship through their real forwarders into one
central database (a SQLite file, and the test PostgreSQL); the commands must show what the
central copy holds, per site, and say in one line why a database cannot be read.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from controller.app.cli import app
from controller.core.domain import EntryKind, JournalEntry
from controller.core.lifecycle import ParcelState
from controller.store.forwarder import JournalForwarder
from controller.store.journal import SqliteJournal
from controller.store.read import read_open_set
from controller.store.schema import journal_table
from tests.test_recovery import Script

S = ParcelState
runner = CliRunner()


def alarm(ts: float, source: str, active: bool) -> JournalEntry:
    """An alarm row as :class:`controller.alarms.Alarms` writes it."""
    return JournalEntry(
        ts,
        EntryKind.ALARM,
        source.split("/", 1)[0],
        0,
        state_to="active" if active else "cleared",
        data={"source": source, "message": "link down" if active else "link up"},
    )


def hub_a() -> list[JournalEntry]:
    script = (
        Script()
        .scan("L1", 1, "H1")
        .move("L1", 1, "H1", S.SCANNED, S.DECIDED, S.IN_INSPECTION)  # waits at inspection
        .scan("L1", 2, "H2")
        .move("L1", 2, "H2", S.SCANNED, S.DECIDED, S.RELEASED)  # gone
        .scan("L2", 3, "")  # a no-read, on the belt
    )
    return [
        *script.entries,
        alarm(2000.0, "L1/sorter", active=True),
        alarm(2001.0, "L2/plc", active=True),
        alarm(2002.0, "L2/plc", active=False),
    ]


def hub_b() -> list[JournalEntry]:
    script = (
        Script()
        .scan("L7", 9, "H1")  # the same HAWB, sorted at the other site
        .move("L7", 9, "H1", S.SCANNED, S.DECIDED, S.RELEASED)
        .scan("L7", 10, "H3")
    )
    return script.entries


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def central_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central' / 'central.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def hub(tmp_path: Path, central_url: str) -> dict[str, Path]:
    """Two sites' journals, each shipped whole to ``central_url``: site -> journal file."""
    journals = {}
    for site, entries in (("HUB-A", hub_a()), ("HUB-B", hub_b())):
        path = tmp_path / site / "journal.sqlite"
        async with SqliteJournal(path, site) as journal:
            await journal.write(entries)
        async with JournalForwarder(path, central_url, site) as forwarder:
            while await forwarder.forward_once():
                pass
        journals[site] = path
    return journals


def central(*args: str) -> Result:
    return runner.invoke(app, ["central", *args], terminal_width=200)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def execute(url: str, statement: sa.Executable) -> None:
    """Change the central copy behind the forwarders' backs (an edit, a clock, a loss)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(statement)
    finally:
        engine.dispose()


def backdate(site: str, to: datetime, up_to_seq: int | None = None) -> sa.Update:
    j = journal_table.c
    stmt = sa.update(journal_table).where(j.site == site).values(wall_time=to)
    return stmt if up_to_seq is None else stmt.where(j.seq <= up_to_seq)


def test_central_lists_its_commands() -> None:
    result = runner.invoke(app, ["central", "--help"])
    assert result.exit_code == 0
    assert "status" in result.output
    assert "parcels" in result.output


async def test_status_shows_every_site_as_the_central_copy_holds_it(
    hub: dict[str, Path], central_url: str
) -> None:
    before = datetime.now(UTC)
    doc = as_json(central("status", central_url, "--json"))
    rows = {"HUB-A": len(hub_a()), "HUB-B": len(hub_b())}
    assert [(s["site"], s["rows"], s["last_seq"], s["missing"]) for s in doc["sites"]] == [
        (site, n, n, 0) for site, n in rows.items()
    ]
    kept = {site: len(read_open_set(path, site)[0]) for site, path in hub.items()}
    assert kept == {"HUB-A": 2, "HUB-B": 1}
    assert {s["site"]: s["open_parcels"] for s in doc["sites"]} == kept
    assert {s["site"]: s["active_alarms"] for s in doc["sites"]} == {"HUB-A": 1, "HUB-B": 0}
    assert [(a["site"], a["source"], a["message"]) for a in doc["alarms"]] == [
        ("HUB-A", "L1/sorter", "link down")
    ]
    for s in doc["sites"]:
        assert before - timedelta(minutes=5) < datetime.fromisoformat(s["newest_wall_time"])
        assert 0 <= s["age_s"] < 300
    assert doc["parcels_horizon_h"] == 24

    shown = central("status", central_url)
    assert shown.exit_code == 0, shown.output
    for text in ("HUB-A", "HUB-B", "active alarms", "L1/sorter", "link down"):
        assert text in shown.stdout
    assert "L2/plc" not in shown.stdout  # raised, then cleared


async def test_a_lagging_site_shows_how_far_it_has_shipped_and_since_when(
    hub: dict[str, Path], central_url: str
) -> None:
    """Rows journalled at a site but not yet shipped are not in the central view; the age of
    the site's newest central row says how long it has been quiet or cut off."""
    async with SqliteJournal(hub["HUB-B"], "HUB-B") as journal:
        await journal.write(Script().scan("L7", 11, "H4").entries)  # not forwarded
    execute(central_url, backdate("HUB-B", datetime.now(UTC) - timedelta(hours=1)))
    doc = as_json(central("status", central_url, "--json"))
    b = next(s for s in doc["sites"] if s["site"] == "HUB-B")
    assert b["last_seq"] == len(hub_b())  # the local journal is one row further
    assert 3590 < b["age_s"] < 3700
    shown = central("status", central_url, "--stale-after-s", "600")
    assert "60 min" in shown.stdout


async def test_seqs_missing_from_the_central_copy_fail_the_status(
    hub: dict[str, Path], central_url: str
) -> None:
    j = journal_table.c
    execute(central_url, sa.delete(journal_table).where(j.site == "HUB-A", j.seq == 3))
    result = central("status", central_url, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    a = next(s for s in doc["sites"] if s["site"] == "HUB-A")
    assert (a["rows"], a["missing"]) == (len(hub_a()) - 1, 1)
    shown = central("status", central_url)
    assert shown.exit_code == 1
    assert "HUB-A: 1 seq(s) below" in shown.output


async def test_a_hawb_history_spans_the_hub_or_one_site(
    hub: dict[str, Path], central_url: str
) -> None:
    doc = as_json(central("parcels", central_url, "--hawb", "H1", "--json"))
    assert [(r["site"], r["state_to"]) for r in doc["rows"]] == [
        ("HUB-A", "scanned"),
        ("HUB-A", "decided"),
        ("HUB-A", "in_inspection"),
        ("HUB-B", "scanned"),
        ("HUB-B", "decided"),
        ("HUB-B", "released"),
    ]
    doc = as_json(central("parcels", central_url, "--site", "HUB-B", "--hawb", "H1", "--json"))
    assert {r["site"] for r in doc["rows"]} == {"HUB-B"}
    shown = central("parcels", central_url, "--hawb", "H1")
    assert shown.exit_code == 0
    assert "HAWB H1: 6 row(s)" in shown.stdout
    missing = central("parcels", central_url, "--hawb", "NO-SUCH")
    assert missing.exit_code == 1
    assert "no journal rows for HAWB NO-SUCH" in missing.stdout


async def test_open_parcels_are_those_each_site_keeps_open(
    hub: dict[str, Path], central_url: str
) -> None:
    doc = as_json(central("parcels", central_url, "--json"))
    listed = sorted((p["site"], p["line"], p["tracking_id"], p["hawb"]) for p in doc["parcels"])
    kept = sorted(
        (site, p.line, p.tracking_id, p.hawb)
        for site, path in hub.items()
        for p in read_open_set(path, site)[0]
    )
    assert listed == kept
    assert doc["total"] == 3
    one = as_json(central("parcels", central_url, "--site", "HUB-A", "--json", "--limit", "1"))
    assert one["total"] == 2
    assert [p["hawb"] for p in one["parcels"]] == ["H1"]  # the oldest first
    shown = central("parcels", central_url, "--site", "HUB-A")
    assert "in_inspection" in shown.stdout
    assert "no read" in shown.stdout


async def test_the_horizon_bounds_the_fold_like_recovery(
    hub: dict[str, Path], central_url: str
) -> None:
    """Rows written before the horizon are not folded: a parcel opened two days ago and
    still waiting is left out of the count, unless the horizon is off."""
    execute(central_url, backdate("HUB-A", datetime.now(UTC) - timedelta(days=2), up_to_seq=3))
    counted = as_json(central("status", central_url, "--json"))
    assert {s["site"]: s["open_parcels"] for s in counted["sites"]} == {"HUB-A": 1, "HUB-B": 1}
    whole = as_json(central("status", central_url, "--json", "--horizon-h", "0"))
    assert {s["site"]: s["open_parcels"] for s in whole["sites"]} == {"HUB-A": 2, "HUB-B": 1}
    assert whole["parcels_horizon_h"] is None
    skipped = as_json(central("status", central_url, "--json", "--no-parcels"))
    assert [s["open_parcels"] for s in skipped["sites"]] == [None, None]


def assert_one_line_exit_2(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    message = result.output.strip()
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql+psycopg://user@host:notaport/db", ("not a database URL",)),
        ("mysql://user:secret@db.example/hub", ("unsupported database 'mysql'",)),
        ("postgresql://user@/hub", ("name the host and the database",)),
    ],
)
def test_a_bad_url_is_one_line(url: str, words: tuple[str, ...]) -> None:
    result = central("status", url)
    assert_one_line_exit_2(result, *words)
    assert "secret" not in result.output


def test_a_missing_journal_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.sqlite"
    assert_one_line_exit_2(central("status", str(missing)), "no journal database")
    assert not missing.exists()  # reading never creates one
    assert_one_line_exit_2(central("parcels", f"sqlite:///{missing}"), "no journal database")


def test_an_unreachable_server_is_one_line_and_quick() -> None:
    url = f"postgresql://cargogate:secret@127.0.0.1:{free_port()}/central"
    started = time.perf_counter()
    result = central("status", url)
    assert time.perf_counter() - started < 10
    assert_one_line_exit_2(result, "cannot read", "127.0.0.1")
    assert "secret" not in result.output


@pytest.mark.postgres
def test_a_database_without_a_journal_is_one_line(pg_url: str) -> None:
    assert_one_line_exit_2(central("status", pg_url, "--json"), "no journal table")
    assert_one_line_exit_2(central("parcels", pg_url, "--hawb", "H1"), "no journal table")


async def test_a_site_with_no_rows_yet_reads_as_an_empty_hub(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    async with JournalForwarder(tmp_path / "journal.sqlite", url, "HUB-A") as forwarder:
        assert await forwarder.forward_once() == 0  # migrates the central database
    doc = as_json(central("status", url, "--json"))
    assert doc["sites"] == []
    assert "no site has shipped yet" in central("status", url).stdout
