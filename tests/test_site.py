"""The whole decision path wired from a site file through the services: the twin as plant,
real SQLite journal, recovery at start-up, the journal tail shipped at shutdown."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Literal

import onnx
import pytest
import yaml
from pydantic import field_validator

from controller.app.builtin import NoImages
from controller.app.preflight import machine_problems
from controller.app.registry import Adapter, Kind, Plugin, registries
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
from controller.core.settings import ConfigError, Strict
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
        raw["xray"]["model"] = str(ROOT / "config" / raw["xray"]["model"])
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


def test_the_risk_book_holds_at_most_what_the_site_sets(tmp_path: Path) -> None:
    """The book is bounded by ``risk_book.max_results`` (default ~a day at 80,000/h); a bound
    below one is refused by name before anything starts."""
    config = demo_config(tmp_path)
    assert Services(config).book.max_entries == 2_000_000
    raw = config.model_dump(mode="json", exclude_unset=True)
    raw["risk_book"] = {"max_results": 1000}
    assert Services(parse_config(raw)).book.max_entries == 1000
    raw["risk_book"] = {"max_results": 0}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.problems[0][:2] == ("risk_book.max_results", "0")


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
    raw["plant"]["scenario"] = str(ROOT / "config" / raw["plant"]["scenario"])
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


def site_file(folder: Path, **changes: object) -> Path:
    """The demo-xray site written into ``folder`` with ``changes`` (top-level sections)."""
    raw = yaml.safe_load((ROOT / "config" / "demo-xray.yaml").read_text())
    raw.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_relative_paths_are_taken_from_the_site_files_folder_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given and default paths alike; the working directory (systemd's WorkingDirectory, a
    shell anywhere) plays no part."""
    etc = tmp_path / "etc"
    site_file(
        etc,
        store={"group_commit_ms": 2},  # the journal and the socket at their default places
        commands={"mode": 0o660},
        xray={"type": "onnx", "model": "../models/xray.onnx"},
        intake={"sources": [{"type": "watch_folder", "path": "inbox"}]},
        risk_feeds=[{"type": "file", "path": "/srv/feeds"}],
        plant={"type": "twin", "scenario": "scenarios/shift.yaml"},
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config(Path("../etc/site.yaml"))
    assert config.store.journal_path == etc / "var" / "journal.sqlite"
    assert config.commands.socket == etc / "var" / "cargogate.sock"
    assert config.xray.model == tmp_path / "models" / "xray.onnx"
    assert config.intake is not None
    assert config.intake.quarantine == etc / "var" / "quarantine"
    assert config.intake.sources[0].path == etc / "inbox"
    assert config.risk_feeds[0].path == Path("/srv/feeds")  # an absolute path stays
    assert config.plant is not None
    assert config.plant.scenario == etc / "scenarios" / "shift.yaml"


class ProbeFeed(Strict):
    """A third party's risk feed: a file it reads (and checks as it is validated) and the
    environment variable holding its token."""

    type: Literal["probe"]
    manifest: Path
    token_env: str

    @field_validator("manifest")
    @classmethod
    def _there(cls, manifest: Path) -> Path:
        if not manifest.is_file():
            raise ValueError(f"no manifest at {manifest}")
        return manifest


PROBE = Plugin(adapters=[Adapter(Kind.RISK_FEED, "probe", ProbeFeed, "tests.test_site:none")])


def test_an_adapters_own_validators_see_its_paths_taken_from_the_site_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths are settled before validation, so a validator that reads a file reads the one
    the site file means; and an integrator's ``Path`` and ``*_env`` settings are checked
    like ours."""
    etc = tmp_path / "etc"
    path = site_file(etc, risk_feeds=[{"type": "probe", "manifest": "m.csv", "token_env": "T"}])
    (etc / "m.csv").write_text("hawb,channel,score\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(path, registries(PROBE))
    assert config.risk_feeds[0] == ProbeFeed(type="probe", manifest=etc / "m.csv", token_env="T")

    (etc / "m.csv").unlink()
    raw = yaml.safe_load(path.read_text())
    raw["risk_feeds"] = [{"type": "probe", "manifest": str(etc / "m.csv"), "token_env": "T"}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as caught:
        load_config(path, registries(PROBE))
    assert [where for where, _, _ in caught.value.problems] == ["risk_feeds.0.manifest"]


def test_machine_problems_name_every_file_folder_and_variable_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv("CARGOGATE_TEST_UNSET", raising=False)
    monkeypatch.setenv("CARGOGATE_TEST_EMPTY", "")
    path = site_file(
        tmp_path / "etc",
        store={"journal_path": str(blocker / "journal.sqlite")},
        xray={"type": "onnx", "model": "missing.onnx"},
        console={"tls_cert": "console.crt", "tls_key": str(blocker)},
        risk_feeds=[
            {"type": "probe", "manifest": str(blocker), "token_env": "CARGOGATE_TEST_UNSET"},
            {"type": "probe", "manifest": str(blocker), "token_env": "CARGOGATE_TEST_EMPTY"},
        ],
    )
    config = load_config(path, registries(PROBE))
    etc = tmp_path / "etc"
    assert machine_problems(config) == [
        (
            "store.journal_path",
            repr(str(blocker / "journal.sqlite")),
            f"cannot be made: {blocker} is not a folder",
        ),
        ("console.tls_cert", repr(str(etc / "console.crt")), "no such file or folder"),
        ("risk_feeds.0.token_env", "'CARGOGATE_TEST_UNSET'", "environment variable is not set"),
        ("risk_feeds.1.token_env", "'CARGOGATE_TEST_EMPTY'", "environment variable is empty"),
        ("xray.model", repr(str(etc / "missing.onnx")), "no such file or folder"),
        ("plant.scenario", repr(str(etc / "scenarios/demo-shift.yaml")), "no such file or folder"),
    ]


def test_the_shipped_sites_need_nothing_this_checkout_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # wherever they are started from
    for name in ("demo.yaml", "demo-xray.yaml", "plc/site-wire.yaml"):
        config = load_config(ROOT / "config" / name)
        assert machine_problems(config) == [], name
        assert config.store.journal_path.parent == ROOT / "var", name


@pytest.mark.parametrize(
    ("section", "value", "where", "problem"),
    [
        ("store", {"central_url": "postgresql://u@db:port/x"}, "central_url", "not a database URL"),
        ("store", {"central_url": "postgresql://u@db:99999/x"}, "central_url", "not a TCP port"),
        ("risk_feeds", [{"type": "http", "url": "https:///results"}], "0.url", "name the host"),
        ("risk_feeds", [{"type": "http", "url": "http://risk:70000/"}], "0.url", "out of range"),
        ("risk_feeds", [{"type": "http", "url": "http://risk:0/"}], "0.url", "port 0"),
        ("lines", "opc.tcp://plc-l1", "0.sorter.endpoint", "expected opc.tcp://HOST:PORT"),
        ("lines", "opc.tcp://plc-l1:99999", "0.sorter.endpoint", "out of range"),
        ("lines", "opc.tcp://plc-l1:48x0", "0.sorter.endpoint", "could not be cast"),
    ],
)
def test_urls_and_ports_are_checked_where_they_are_written(
    section: str, value: object, where: str, problem: str
) -> None:
    """Caught by ``config check`` with their path, not by a first connection at run time."""
    raw = yaml.safe_load((ROOT / "config" / "plc" / "site-wire.yaml").read_text())
    if section == "lines":
        raw["lines"][0]["sorter"]["endpoint"] = value
    else:
        raw[section] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    [(found, _, message)] = caught.value.problems
    assert found == f"{section}.{where}"
    assert problem in message
