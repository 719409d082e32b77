"""The whole decision path wired from a site file: the twin as plant, real SQLite journal."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path

import onnx
import yaml

from controller.assembly import Site
from controller.clock import MonotonicClock
from controller.config import SiteConfig, load_config, parse_config
from controller.core import Controller
from controller.domain import DestinationReply, InspectionOutcome, RiskChannel, RiskResult
from controller.lifecycle import TERMINAL_STATES, ParcelState
from controller.risk import RiskBook
from controller.store.journal import SqliteJournal
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
    hub = Site(config)
    final = await hub.run()  # the whole scenario, drained
    assert hub.plant is not None
    inducted = hub.plant.inducted
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
    decisions, misses = kpis["decisions"], kpis["deadline_misses"]
    assert isinstance(decisions, int)
    assert isinstance(misses, int)
    assert decisions + misses >= inducted  # every scan got a reply or a recorded miss
    by_state = kpis["by_state"]
    assert isinstance(by_state, dict)
    assert sum(by_state.values()) == inducted


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
        from controller.assembly import NoImages

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
    first = Site(config)
    stop = asyncio.Event()

    async def stop_soon() -> None:
        await asyncio.sleep(2.0)
        stop.set()

    await asyncio.gather(first.run(stop=stop), stop_soon())
    before = {
        (line_id, p.tracking_id): p.state
        for line_id, line in first.controller.lines.items()
        for p in [*line.on_belt.values(), *(q for d in line.in_inspection.values() for q in d)]
    }
    assert any(state is ParcelState.IN_INSPECTION for state in before.values())

    second = Site(config)
    async with second.journal:
        await second.recover()
        await _check_recovered(first_open=before, second=second)


async def _check_recovered(first_open: dict[tuple[str, int], ParcelState], second: Site) -> None:
    """Every parcel open at the stop is open again, in its state; inspection can close one."""
    before = first_open
    after = {
        (line_id, p.tracking_id): p.state
        for line_id, line in second.controller.lines.items()
        for p in [*line.on_belt.values(), *(q for d in line.in_inspection.values() for q in d)]
    }
    assert after.keys() == before.keys()
    for key, state in after.items():
        assert not state.terminal
        assert state is not ParcelState.SCANNED  # in-flight decisions come back defaulted
        if before[key] is not ParcelState.SCANNED:
            assert state is before[key]
    hawb = next(hawb for line in second.controller.lines.values() for hawb in line.in_inspection)
    assert second.controller.record_inspection(hawb, InspectionOutcome.CLEARED)
    for line in second.controller.lines.values():
        await line.drain()  # the result reaches the journal before it closes
    rows = await asyncio.to_thread(read_entries, second.journal.url)
    assert any(r["hawb"] == hawb and r["kind"] == "inspection_result" for r in rows)


async def test_the_shipped_model_scores_the_twins_images_in_the_decision_path(
    tmp_path: Path,
) -> None:
    config = demo_config(tmp_path, speed=20, site_file="demo-xray.yaml", drain_h=0.02)
    assert config.plant is not None
    config = config.model_copy(
        update={"plant": config.plant.model_copy(update={"scanner_images": 2})}
    )
    hub = Site(config)
    await hub.run()
    meta = {p.key: p.value for p in onnx.load(str(config.xray.model)).metadata_props}
    version = json.loads(meta["cargogate.version"])
    decisions = [r for r in read_entries(config.store.journal_path) if r["kind"] == "decision"]
    scored = [d for d in decisions if d["data"].get("xray", {}).get("status") == "ok"]
    assert len(decisions) > 100
    assert len(scored) >= 0.9 * sum(1 for d in decisions if "xray" in d["data"])
    assert {d["data"]["xray"]["model"] for d in scored} == {version}
    assert all(set(d["data"]["xray"]["scores"]) == set(config.policy.classes) for d in scored)
