"""The virtual plant: the real controller against the twin in scaled real time."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from controller.core.clock import ScaledClock
from controller.core.settings import ConfigError
from controller.lines import Controller
from controller.risk.book import RiskBook
from plc_adapters.inprocess import InProcessSorter
from simulation.adapters import InspectionStations, RecordingJournal
from simulation.plant import RECORD_FIELDS
from simulation.scenario import load_scenario
from simulation.settings import TwinPlant
from simulation.site_plant import TwinSitePlant, virtual_plant_from_settings
from simulation.virtual import VirtualPlant
from tests.twin.files import bundle, scenario_dict, site_dict, write_files

STATE = RECORD_FIELDS.index("state")


async def test_controller_runs_unchanged_against_the_virtual_plant_at_50x(tmp_path: Path) -> None:
    scenario = scenario_dict(
        horizon_h=2 / 60,  # two simulated minutes: about 2.4 s of wall time at 50x
        drain_h=0.5,
        arrivals={"steady": [{"from_h": 0, "to_h": 2 / 60, "parcels_per_h": 3600}]},
        inspection={
            "shifts": [{"from_h": 0, "to_h": 1, "stations": 4}],
            "service_time": {"dist": "fixed", "value_s": 10},
        },
        review={"officers": 2, "review_time": {"dist": "fixed", "value_s": 1.5}},
    )
    twin = bundle(tmp_path, scenario)
    clock = ScaledClock(50.0)
    sorters = {line.id: InProcessSorter(line.id) for line in twin.site.lines}
    book = RiskBook()
    journal = RecordingJournal()
    stations = InspectionStations()
    plant = VirtualPlant(twin, sorters, clock, stations, book)
    controller = Controller(
        twin.site, sorters, book, plant.xray, journal, clock, review=plant.review
    )
    stations.commands = controller
    serving = asyncio.create_task(controller.run())
    loop = asyncio.get_running_loop()
    wall0 = loop.time()
    await asyncio.wait_for(plant.run(), timeout=60)
    wall = loop.time() - wall0
    for sorter in sorters.values():
        sorter.close()
    await asyncio.wait_for(serving, timeout=30)

    records = plant.plant.records
    assert plant.plant.generated > 60
    assert len(records) == plant.plant.generated
    assert not plant.plant.on_plant
    assert controller.open_parcels() == 0
    # The controller's view of every parcel agrees with what physically happened.
    assert controller.kpis.snapshot(clock.now())["by_state"] == dict(
        Counter(r[STATE] for r in records)
    )
    assert Counter(r[STATE] for r in records)["released"] > 0.5 * len(records)
    # It ran in scaled real time, not as fast as possible: the run spans simulated minutes.
    simulated = clock.now()
    assert simulated / wall > 20, (simulated, wall)
    assert simulated / wall < 80, (simulated, wall)


async def test_settings_factory_builds_the_plant_over_in_process_sorters(tmp_path: Path) -> None:
    path = write_files(
        tmp_path,
        scenario_dict(
            horizon_h=0.5 / 60,
            drain_h=0.2,
            inspection={"service_time": {"dist": "fixed", "value_s": 5}},
        ),
        site_dict(lines=2),
    )
    site = load_scenario(path).site
    clock = ScaledClock(50.0)
    book = RiskBook()
    stations = InspectionStations()
    settings = TwinPlant(scenario=path, speed=50)
    plant, sorters = virtual_plant_from_settings(settings, site, clock, stations, book)
    assert set(sorters) == {"L1", "L2"}
    # each in-process PLC judges replies on the live clock against the line's window
    assert {s.clock for s in sorters.values()} == {clock}
    windows = {line.id: line.belt.decision_window_s for line in site.lines}
    assert {line: s.decision_window_s for line, s in sorters.items()} == windows
    controller = Controller(
        site, sorters, book, plant.xray, RecordingJournal(keep=False), clock, review=plant.review
    )
    stations.commands = controller
    serving = asyncio.create_task(controller.run())
    await asyncio.wait_for(plant.run(tick_s=settings.tick_s), timeout=60)
    for sorter in sorters.values():
        sorter.close()
    await asyncio.wait_for(serving, timeout=30)
    assert plant.inducted == plant.plant.generated > 10
    assert controller.open_parcels() == 0
    assert plant.threats_released <= plant.threats_inducted


def test_settings_factory_refuses_a_scenario_for_another_site(tmp_path: Path) -> None:
    path = write_files(
        tmp_path,
        scenario_dict(arrivals={"steady": [{"to_h": 0.5, "parcels_per_h": 100, "lines": ["L2"]}]}),
        site_dict(lines=2),
    )
    one_line = load_scenario(write_files(tmp_path / "other", scenario_dict())).site
    with pytest.raises(ConfigError) as caught:
        virtual_plant_from_settings(
            TwinPlant(scenario=path), one_line, ScaledClock(1.0), lambda h, o: None
        )
    assert caught.value.problems[0][:2] == ("arrivals.steady.0.lines.0", "'L2'")


async def test_twin_site_plant_is_a_drop_in_for_the_stand_in(tmp_path: Path) -> None:
    path = write_files(
        tmp_path,
        scenario_dict(
            horizon_h=0.5 / 60,
            drain_h=0.2,
            inspection={"service_time": {"dist": "fixed", "value_s": 5}},
        ),
    )
    site = load_scenario(path).site
    clock = ScaledClock(50.0)
    book = RiskBook()
    plant = TwinSitePlant(TwinPlant(scenario=path, speed=50), site, clock, book)
    controller = Controller(
        site, plant.sorters, book, plant, RecordingJournal(keep=False), clock, review=plant
    )
    plant.attach(controller)
    serving = asyncio.create_task(controller.run())
    await asyncio.wait_for(plant.run(), timeout=60)
    await asyncio.wait_for(serving, timeout=30)  # run() ended the telegram streams
    assert plant.inducted > 10
    assert controller.open_parcels() == 0
    by_state = controller.kpis.snapshot(clock.now())["by_state"]
    assert isinstance(by_state, dict)
    assert sum(by_state.values()) == plant.inducted
