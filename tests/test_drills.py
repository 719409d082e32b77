"""The fault drills (``cargogate drill``): the outcome checker on journals written by hand, the
drills' own fault parts (the TCP fault proxy, the full disk), and every drill run through the
command line against the real controller and emulated PLCs over OPC UA and Modbus TCP.

The drills run once, all together, in one ``cargogate drill all`` process (module fixture);
each drill's test then reads its verdict line. The central-database drills need PostgreSQL
(``CARGOGATE_TEST_PG_URL``) and must SKIP with the reason without it, never PASS.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controller.app.cli import app
from controller.core.domain import DestinationReply, DivertStatus, EntryKind, JournalEntry
from controller.core.reasons import Reason
from controller.store.journal import JournalError, SqliteJournal
from simulation.drills.catalog import DRILLS
from simulation.drills.disk import FullDisk
from simulation.drills.framework import (
    Drill,
    DrillContext,
    SkipDrillError,
    Status,
    Verdict,
    run_drills,
)
from simulation.drills.outcome import AlarmSpec, Divert, Findings, Ledger, check
from simulation.drills.proxy import FaultProxy, Mode

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "CARGOGATE_TEST_PG_URL"
NEEDS_POSTGRES = {"central-refused", "central-blackhole"}
CLI = [sys.executable, "-c", "from controller.app.cli import app; app()"]


# --- the outcome checker, on journals written by hand -----------------------------------------


class Journal:
    """Journal rows shaped as :func:`controller.store.read.read_entries` returns them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: str, tid: int, hawb: str, frm: str, to: str, **more: Any) -> Journal:
        row = {
            "seq": len(self.rows) + 1,
            "kind": kind,
            "line": more.pop("line", "L1"),
            "tracking_id": tid,
            "hawb": hawb,
            "state_from": frm,
            "state_to": to,
            "destination": more.pop("destination", ""),
            "lane": more.pop("lane", None),
            "reasons": more.pop("reasons", []),
            "data": more.pop("data", {}),
        }
        assert not more, more
        self.rows.append(row)
        return self

    def parcel(self, tid: int, hawb: str, lane: int, end: str, release: bool = False) -> Journal:
        """A first scan, an applied decision for ``lane`` and the confirmation to ``end``."""
        evidence = {"risk": {"channel": "GREEN"}, "xray": {"status": "ok"}} if release else {}
        destination = "release" if release else "inspection"
        return (
            self.add("transition", tid, hawb, "", "scanned")
            .add(
                "decision",
                tid,
                hawb,
                "scanned",
                "decided",
                lane=lane,
                destination=destination,
                data=evidence,
            )
            .add("confirmation", tid, hawb, "decided", end, lane=lane)
        )

    def alarm(self, source: str, active: bool) -> Journal:
        data = {"source": source, "message": "m"}
        return self.add("alarm", 0, "", "", "active" if active else "cleared", data=data)


def sent(ledger: Ledger, tid: int, hawb: str, lane: int | None = None) -> None:
    """A parcel the PLC requested once and diverted, on the controller's reply to ``lane``."""
    parcel = ledger.add("L1", tid, hawb)
    parcel.requests = 1
    reply = None if lane is None else DestinationReply("L1", tid, lane, Reason.RISK_RED)
    parcel.diverts.append(Divert(lane or 9, DivertStatus.DIVERTED, reply))


NO_ALARMS = AlarmSpec()


def findings(
    ledger: Ledger, journal: Journal, alarms: AlarmSpec | Mapping[str, AlarmSpec] = NO_ALARMS
) -> Findings:
    return check(ledger, {"controller": journal.rows}, alarms)


def test_a_sound_run_has_no_problems_and_counts_what_it_saw() -> None:
    ledger = Ledger()
    sent(ledger, 1, "A", lane=1)
    sent(ledger, 2, "B", lane=2)
    sent(ledger, 3, "C", lane=9)
    journal = (
        Journal()
        .parcel(1, "A", 1, "released", release=True)
        .parcel(2, "B", 2, "in_inspection")
        .parcel(3, "C", 9, "exception")
        .alarm("L1/plc-link", True)
        .alarm("L1/plc-link", False)
    )
    found = findings(ledger, journal, AlarmSpec(expected={"*/plc-link": 1}))
    assert found.problems == []
    assert (found.parcels, found.closed, found.steered, found.steered_journalled) == (3, 2, 3, 3)
    assert found.open_reasons == {"awaiting the officer's result": 1}
    assert (found.raised, found.cleared) == (1, 1)
    assert found.summary().startswith("3 parcels: 2 closed, 1 open")


def test_lost_doubled_phantom_and_headless_parcels_are_each_found() -> None:
    ledger = Ledger()
    for tid, hawb in ((1, "LOST"), (2, "TWICE"), (3, "HEADLESS")):
        sent(ledger, tid, hawb)
    journal = (
        Journal()
        .parcel(2, "TWICE", 9, "exception")
        .parcel(2, "TWICE", 9, "exception")
        .add("confirmation", 3, "HEADLESS", "decided", "exception", lane=9)
        .parcel(4, "NEVER-SENT", 9, "exception")
    )
    found = findings(ledger, journal)
    assert (found.missing, found.doubled, found.phantom) == (2, 1, 1)
    text = "\n".join(found.problems)
    assert "tracking id 1 (LOST): sent by the PLC, not in any journal" in text
    assert "tracking id 2 (TWICE): opened 2 times" in text
    assert "tracking id 3 (HEADLESS): journalled without its first scan" in text
    assert "tracking id 4 (NEVER-SENT): in journal 'controller', but the PLC never sent" in text


def test_a_divert_on_a_reply_the_journal_lacks_and_a_parcel_left_decided_are_found() -> None:
    ledger = Ledger()
    sent(ledger, 1, "A", lane=2)  # the PLC applied a reply for lane 2 ...
    journal = (
        Journal()
        .add("transition", 1, "A", "", "scanned")
        .add("decision", 1, "A", "scanned", "decided", lane=9)  # ... the journal says 9
    )
    found = findings(ledger, journal)
    assert (found.steered, found.steered_journalled) == (1, 0)
    assert found.open_reasons == {"no reason": 1}
    assert any("lane 2 on a controller reply that has no decision" in p for p in found.problems)
    assert any("open in state decided with no reason" in p for p in found.problems)


def test_a_release_without_positive_evidence_is_found() -> None:
    ledger = Ledger()
    sent(ledger, 1, "A", lane=1)
    journal = (
        Journal()
        .add("transition", 1, "A", "", "scanned")
        .add(
            "decision",
            1,
            "A",
            "scanned",
            "decided",
            lane=1,
            destination="release",
            data={"risk": None, "xray": {"status": "ok"}},
        )
        .add("confirmation", 1, "A", "decided", "released", lane=1)
    )
    assert any(
        "released without positive evidence" in p for p in findings(ledger, journal).problems
    )


def test_alarms_must_alternate_end_cleared_and_be_expected() -> None:
    journal = (
        Journal()
        .alarm("L1/plc-link", True)
        .alarm("L1/plc-link", True)  # raised twice in a row
        .alarm("L1/plc-link", False)
        .alarm("L2/plc-heartbeat", True)  # never cleared, not expected
        .alarm("risk/conflict/H1", True)  # may stay raised
        .add("alarm", 5, "", "", "", data={"message": "confirmation for unknown tracking id"})
    )
    spec = AlarmSpec(
        expected={"*/plc-link": 1, "*/plc-restart": 1},
        open_ok={"risk/conflict/*": "until acknowledged"},
    )
    problems = findings(Ledger(), journal, spec).problems
    assert sorted(problems) == sorted(
        [
            "alarm L1/plc-link: raised twice in a row ('controller')",
            "alarm L2/plc-heartbeat: still raised at the end ('controller')",
            "alarm L2/plc-heartbeat: not expected in this drill ('controller')",
            "alarm */plc-link: raised 2 time(s) in 'controller', expected 1 time(s)",
            "alarm */plc-restart: raised 0 time(s) in 'controller', expected 1 time(s)",
            "alarm event in journal 'controller': confirmation for unknown tracking id "
            "(L1 tracking id 5)",
        ]
    )


def test_a_malformed_request_is_matched_on_its_tracking_id_alone() -> None:
    ledger = Ledger()
    parcel = ledger.add("L1", 7, "CG" + "4" * 38, malformed=True)
    parcel.requests = 1
    journal = Journal().parcel(7, "CG" + "4" * 31 + "\x1a", 9, "exception")
    found = findings(ledger, journal)
    assert found.problems == []
    assert found.closed == 1


# --- the framework --------------------------------------------------------------------------


def test_each_drill_gets_a_verdict_and_a_crash_is_a_fail_not_a_crash(tmp_path: Path) -> None:
    async def sound(ctx: DrillContext) -> Findings:
        return Findings(parcels=1, closed=1)

    async def broken(ctx: DrillContext) -> Findings:
        return Findings(problems=["a parcel was lost"])

    async def crashes(ctx: DrillContext) -> Findings:
        raise RuntimeError("boom")

    async def cannot(ctx: DrillContext) -> Findings:
        raise SkipDrillError("no central database")

    drills = [Drill(n, n, body) for n, body in (
        ("sound", sound), ("broken", broken), ("crashes", crashes), ("cannot", cannot),
    )]  # fmt: skip
    seen: list[Verdict] = []
    asyncio.run(run_drills(drills, lambda d: DrillContext(tmp_path / d.name, 7), seen.append))
    assert [v.status for v in seen] == [Status.PASS, Status.FAIL, Status.FAIL, Status.SKIP]
    assert seen[0].line().startswith("PASS sound: 1 parcels: 1 closed")
    assert seen[1].line().startswith("FAIL broken: ")
    assert "1 problem(s)" in seen[1].line()
    assert seen[1].details() == ["  - a parcel was lost"]
    assert "RuntimeError: boom" in seen[2].line()
    assert seen[3].line().startswith("SKIP cannot: no central database")
    assert (tmp_path / "crashes" / "drill.log").read_text().count("boom") >= 1


# --- the fault parts ------------------------------------------------------------------------


async def test_the_fault_proxy_passes_refuses_and_blackholes_without_losing_bytes() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server, FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"one")
        assert await asyncio.wait_for(reader.read(100), 5) == b"one"

        await proxy.set_mode(Mode.BLACKHOLE)
        writer.write(b"two")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(read := asyncio.ensure_future(reader.read(100))), 0.3
            )
        await proxy.set_mode(Mode.PASS)
        assert await asyncio.wait_for(read, 5) == b"two"  # held, not dropped

        await proxy.set_mode(Mode.REFUSE)
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # the open connection reset
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.close()


async def test_a_full_disk_refuses_journal_writes_until_freed(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    entries = [
        JournalEntry(
            1.0,
            EntryKind.TRANSITION,
            "L1",
            i,
            f"H{i}",
            state_to="scanned",
            data={"pad": "x" * 2000},
        )
        for i in range(50)
    ]
    async with SqliteJournal(path, "S") as journal:
        with FullDisk(path) as disk:
            disk.fill()
            with pytest.raises(JournalError, match="full"):
                await journal.write(entries)
            disk.free()
            await journal.write(entries)
        assert journal.rows_written == 50
        assert disk.refusals >= 1


# --- every drill, through the command line --------------------------------------------------


def cli(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )


def test_list_names_every_drill_with_what_it_does() -> None:
    result = CliRunner().invoke(app, ["drill", "--list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == [d.name for d in DRILLS]
    assert all(len(line.split()) > 3 for line in lines)
    assert len(DRILLS) >= 19


def test_an_unknown_drill_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["drill", "no-such-drill"])
    assert result.exit_code == 2
    assert "no drill 'no-such-drill'" in result.output


@pytest.fixture(scope="module")
def all_drills(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """``cargogate drill all``, once: (exit code, output, the drills' kept folders)."""
    kept = tmp_path_factory.mktemp("drills")
    result = cli("drill", "all", "--keep", str(kept))
    return result.returncode, result.stdout + result.stderr, kept


def verdict_line(output: str, name: str) -> str:
    found = [line for line in output.splitlines() if line.split(" ")[1:2] == [f"{name}:"]]
    assert len(found) == 1, f"no single verdict line for {name} in:\n{output}"
    return found[0]


@pytest.mark.parametrize("name", [d.name for d in DRILLS])
def test_drill(name: str, all_drills: tuple[int, str, Path]) -> None:
    _, output, kept = all_drills
    line = verdict_line(output, name)
    if name in NEEDS_POSTGRES and not os.environ.get(PG_ENV):
        assert line.startswith(f"SKIP {name}: no central database"), line
        return
    if not line.startswith("PASS"):
        after = output.split(line, 1)[1].splitlines()[1:]
        details = "\n".join(
            next(iter([after[:i] for i, x in enumerate(after) if not x.startswith("  ")]), after)
        )
        log = kept / name / "drill.log"
        tail = log.read_text()[-3000:] if log.exists() else "(no log)"
        pytest.fail(f"{line}\n{details}\n--- drill.log ---\n{tail}")


def test_all_exits_non_zero_exactly_when_a_drill_fails(all_drills: tuple[int, str, Path]) -> None:
    code, output, _ = all_drills
    failed = [line for line in output.splitlines() if line.startswith("FAIL ")]
    assert code == (1 if failed else 0), output


def test_a_drill_that_fails_says_why_and_exits_1(tmp_path: Path) -> None:
    """A site whose PLC heartbeat timeout (5 s) outlasts the drill's 3 s stall: the controller
    rightly raises no heartbeat alarm, so the drill, which expects one, fails, and says so."""
    raw = yaml.safe_load((ROOT / "config/plc/site-wire.yaml").read_text())
    for line in raw["lines"]:
        line["sorter"]["link"]["heartbeat_timeout_s"] = 5.0
    raw["store"]["journal_path"] = str(tmp_path / "unused.sqlite")
    site = tmp_path / "slow-heartbeat.yaml"
    site.write_text(yaml.safe_dump(raw))
    result = cli("drill", "plc-heartbeat-stall", "--site", str(site), timeout_s=300)
    assert result.returncode == 1, result.stdout + result.stderr
    first, *details = result.stdout.splitlines()
    assert first.startswith("FAIL plc-heartbeat-stall: "), first
    assert (
        "  - alarm L1/plc-heartbeat: raised 0 time(s) in 'controller', expected 1 time(s)"
        in details
    )
