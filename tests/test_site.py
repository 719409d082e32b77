"""The whole decision path wired from a site file through the services: the twin as plant,
real SQLite journal, recovery at start-up, the journal tail shipped at shutdown."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path

import onnx
import pytest
import yaml

from controller.app.builtin import NoImages
from controller.app.services import Services, StartupError
from controller.app.site import SiteConfig, load_config, parse_config
from controller.core.clock import MonotonicClock
from controller.core.commands import RecordInspection
from controller.core.domain import (
    DestinationReply,
    EntryKind,
    InspectionOutcome,
    JournalEntry,
    RiskChannel,
    RiskResult,
)
from controller.core.lifecycle import TERMINAL_STATES, Parcel, ParcelState
from controller.core.link import LinkState
from controller.core.settings import ConfigError
from controller.lines import Controller
from controller.risk.book import RiskBook
from controller.store.journal import JournalClosedError, SqliteJournal
from controller.store.read import read_entries
from plc_adapters.inprocess import InProcessSorter
from tests.support import site

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {state.value for state in TERMINAL_STATES}


def demo_config(
    tmp_path: Path, speed: float = 50, site_file: str = "demo.yaml", **scenario: object
) -> SiteConfig:
    """A demo site with its journal in ``tmp_path`` and a short twin scenario."""
    raw = yaml.safe_load((ROOT / "config" / site_file).read_text())
    raw["store"]["journal_path"] = str(tmp_path / "journal.sqlite")
    raw["console"] = {"port": 0}  # a free port: tests never depend on 8080 being free
    if "intake" in raw:
        raw["intake"]["quarantine"] = str(tmp_path / "quarantine")
        raw["xray"]["model"] = str(ROOT / raw["xray"]["model"])
    shift = {
        "name": "site-test",
        "site": str(ROOT / "config" / "demo.yaml"),
        "seed": 11,
        "horizon_h": 0.015,  # 54 s of arrivals
        "drain_h": 0.06,
        "arrivals": {"steady": [{"from_h": 0, "to_h": 0.015, "parcels_per_h": 20000}]},
        "review": {"officers": 3, "review_time": {"dist": "exponential", "mean": 2.0}},
        "inspection": {
            "shifts": [{"from_h": 0, "to_h": 1, "stations": 12}],
            "service_time": {"dist": "exponential", "mean": 15.0},
        },
        **scenario,
    }
    path = tmp_path / "shift.yaml"
    path.write_text(yaml.safe_dump(shift))
    raw["plant"] = {**raw["plant"], "scenario": str(path), "speed": speed}
    return parse_config(raw)


async def test_every_inducted_parcel_ends_in_exactly_one_terminal_state(tmp_path: Path) -> None:
    config = demo_config(tmp_path, scan={"no_read_rate": 0.05}, truth={"contraband_rate": 0.05})
    hub = Services(config)
    final = await hub.run()  # the whole scenario, drained
    inducted = hub.plant.counts()["inducted"]
    assert final.plant["inducted"] == inducted
    assert inducted > 150  # 54 s at 20,000 parcels/h is ~300 parcels

    rows = read_entries(config.store.journal_path, site="DEMO-HUB")
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    terminal = Counter(r["hawb"] for r in rows if r["state_to"] in TERMINAL and r["hawb"])
    no_reads = Counter(
        (r["line"], r["tracking_id"]) for r in rows if r["state_to"] in TERMINAL and not r["hawb"]
    )
    assert set(terminal.values()) == {1}, "a parcel closed twice"
    assert sum(terminal.values()) + sum(no_reads.values()) == inducted
    assert final.open_parcels == 0
    kpis = final.kpis
    # every scan got a reply or a recorded miss
    assert kpis.decisions + kpis.deadline_misses >= inducted
    assert sum(kpis.by_state.values()) == inducted
    assert {line.line for line in final.controller.lines} == {"L1", "L2"}
    assert all(line.health.link == "up" for line in final.controller.lines)


async def test_decision_is_durable_before_the_sorter_sees_the_reply(tmp_path: Path) -> None:
    """Each reply handler reads the journal file through its own connection."""
    config = site()
    path = tmp_path / "journal.sqlite"
    seen: list[tuple[int, int]] = []

    def on_reply(reply: DestinationReply) -> None:
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM journal WHERE tracking_id = ? AND kind = 'decision'",
                (reply.tracking_id,),
            ).fetchone()
        seen.append((reply.tracking_id, count))

    sorter = InProcessSorter("L1", on_reply=on_reply)
    book = RiskBook()
    book.add(RiskResult(f"H{i}", RiskChannel.GREEN, 0.1) for i in range(50))
    clock = MonotonicClock()
    async with SqliteJournal(path, "TEST") as journal:
        controller = Controller(config, {"L1": sorter}, book, NoImages(), journal, clock)
        for i in range(50):
            sorter.request(i + 1, f"H{i}", clock.now())
        sorter.close()
        await controller.run()
    assert sorted(seen) == [(i + 1, 1) for i in range(50)]


def test_shipped_configs_are_valid() -> None:
    for path in sorted((ROOT / "config").glob("*.yaml")):
        load_config(path)


async def test_a_restart_takes_back_every_open_parcel(tmp_path: Path) -> None:
    config = demo_config(
        tmp_path,
        truth={"contraband_rate": 0.2},
        inspection={
            "shifts": [{"from_h": 0, "to_h": 1, "stations": 2}],
            "service_time": {"dist": "exponential", "mean": 600.0},
        },
    )
    first = Services(config)
    stop = asyncio.Event()

    async def stop_soon() -> None:
        await asyncio.sleep(2.0)
        stop.set()

    await asyncio.gather(first.run(stop=stop), stop_soon())
    before = _open_parcels(first)
    assert any(state is ParcelState.IN_INSPECTION for state in before.values())

    second = Services(config)
    async with second:  # starting takes the open parcels back from the journal
        await _check_recovered(first_open=before, second=second)


def _open_parcels(services: Services) -> dict[tuple[str, int], ParcelState]:
    """Every open parcel of every line, on the belt or at inspection, with its state."""
    opened: dict[tuple[str, int], ParcelState] = {}
    for line_id, line in services.controller.lines.items():
        tracker = line.tracker
        parcels: list[Parcel] = [*tracker.on_belt.values()]
        parcels += [q for d in tracker.in_inspection.values() for q in d]
        opened.update({(line_id, p.tracking_id): p.state for p in parcels})
    return opened


async def _check_recovered(
    first_open: dict[tuple[str, int], ParcelState], second: Services
) -> None:
    """Every parcel open at the stop is open again, in its state; inspection can close one."""
    before = first_open
    after = _open_parcels(second)
    assert after.keys() == before.keys()
    for key, state in after.items():
        assert not state.terminal
        assert state is not ParcelState.SCANNED  # in-flight decisions come back defaulted
        if before[key] is not ParcelState.SCANNED:
            assert state is before[key]
    hawb = next(
        hawb for line in second.controller.lines.values() for hawb in line.tracker.in_inspection
    )
    command = RecordInspection(user="test-officer", hawb=hawb, outcome=InspectionOutcome.CLEARED)
    assert (await second.controller.execute(command)).accepted
    for line in second.controller.lines.values():
        await line.drain()  # the result reaches the journal before it closes
    rows = await asyncio.to_thread(read_entries, second.journal.url)
    closed = [r for r in rows if r["hawb"] == hawb and r["kind"] == "inspection_result"]
    assert closed, "the officer's inspection result was not journalled"
    assert closed[-1]["state_to"] in TERMINAL
    assert closed[-1]["data"]["user"] == "test-officer"


async def test_the_shipped_model_scores_the_twins_images_in_the_decision_path(
    tmp_path: Path,
) -> None:
    config = demo_config(tmp_path, speed=20, site_file="demo-xray.yaml", drain_h=0.02)
    assert config.plant is not None
    config = config.model_copy(
        update={"plant": config.plant.model_copy(update={"scanner_images": 2})}
    )
    hub = Services(config)
    await hub.run()
    meta = {p.key: p.value for p in onnx.load(str(config.xray.model)).metadata_props}
    version = json.loads(meta["cargogate.version"])
    decisions = [r for r in read_entries(config.store.journal_path) if r["kind"] == "decision"]
    scored = [d for d in decisions if d["data"].get("xray", {}).get("status") == "ok"]
    assert len(decisions) > 100
    assert len(scored) >= 0.9 * sum(1 for d in decisions if "xray" in d["data"])
    assert {d["data"]["xray"]["model"] for d in scored} == {version}
    assert all(set(d["data"]["xray"]["scores"]) == set(config.policy.classes) for d in scored)


async def test_services_stop_in_order_and_ship_the_journal_tail(tmp_path: Path) -> None:
    """A bounded run: every link state is readable while serving, the alarm raised last is
    journalled before the journal closes, and the central copy holds every local row."""
    config = demo_config(tmp_path, speed=40)
    central = tmp_path / "central.sqlite"
    config = config.model_copy(
        update={
            "store": config.store.model_copy(
                update={"central_url": f"sqlite:///{central}", "forward_interval_s": 60.0}
            )
        }
    )
    services = Services(config)
    assert services.links() == {"central database": LinkState.CONNECTING}
    seen: list[dict[str, LinkState]] = []
    async with services:
        final = await services.run(duration_s=1.0, report=lambda s: seen.append(s.links))
        services.alarms.alarm("test/last-words", "raised while stopping", active=True)
    assert final.kpis.decisions
    assert all(set(links) == {"central database"} for links in seen)
    assert services.forwarder is not None
    assert services.forwarder.link_state is LinkState.DOWN  # closed
    assert services.alarms.pending == 0
    local = read_entries(config.store.journal_path, site="DEMO-HUB")
    assert any(r["kind"] == "alarm" and r["data"]["source"] == "test/last-words" for r in local)
    shipped = read_entries(central, site="DEMO-HUB")
    assert [r["seq"] for r in shipped] == [r["seq"] for r in local]


async def test_a_part_that_cannot_start_is_named_and_the_rest_is_stopped(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw["store"]["journal_path"] = str(tmp_path / "journal.sqlite")
    raw["plant"]["scenario"] = str(ROOT / raw["plant"]["scenario"])
    raw["xray"] = {"type": "onnx", "model": str(tmp_path / "missing.onnx")}
    raw["intake"] = {"quarantine": str(tmp_path / "q"), "sources": [{"type": "inprocess"}]}
    services = Services(parse_config(raw))
    with pytest.raises(StartupError, match=r"^xray: .*missing\.onnx"):
        async with services:
            pass
    assert not services.started
    entry = JournalEntry(ts=0.0, kind=EntryKind.ALARM, line="L1", tracking_id=0, state_to="active")
    with pytest.raises(JournalClosedError):  # the journal it had opened is closed again
        await services.journal.write([entry])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres//db.example/cargogate", "not a database URL"),
        ("mysql://db.example/cargogate", "not 'mysql'"),
        ("postgresql+psycopg://cargogate@/cargogate", "name the host and the database"),
    ],
)
def test_config_check_catches_a_central_url_that_run_would_trip_on(url: str, problem: str) -> None:
    """A bad central database URL is one line with its path at load, not a traceback later."""
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw["store"]["central_url"] = url
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    [(where, _, message)] = caught.value.problems
    assert where == "store.central_url"
    assert problem in message
