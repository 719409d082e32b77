"""The PLC's divert rules (plc_adapters/rulebook.py) as plain calls, then the parties that play
the PLC applying them: the twin's plant in SimPy time, the in-process sorter given a clock, and
the twin driving the PLC emulators over OPC UA and Modbus on loopback, where a reply written
after the parcel's decision point must come back as DEFAULTED to the default lane."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import simpy

from controller.core.clock import ManualClock, ScaledClock
from controller.core.domain import (
    DestinationReply,
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    InspectionOutcome,
    LaneStatus,
)
from controller.core.reasons import Reason
from controller.core.settings import Line
from plc_adapters import rulebook
from plc_adapters.inprocess import InProcessSorter
from simulation.plant import RECORD_FIELDS, Item, Plant
from simulation.scenario import ScenarioBundle
from simulation.virtual import VirtualPlant
from tests.plc.rigs import open_rig, wait_for
from tests.twin.files import bundle, scenario_dict, site_dict

DIVERTED, LANE_FULL, MISSED = DivertStatus.DIVERTED, DivertStatus.LANE_FULL, DivertStatus.MISSED
DEFAULTED, LOST = DivertStatus.DEFAULTED, DivertStatus.LOST_TRACKING
LANES = {1, 2, 9}

# --- the rules as plain function calls -------------------------------------------------------


def test_a_reply_counts_only_up_to_the_decision_point() -> None:
    deadline = rulebook.decision_point(100.0, 5.5)
    assert deadline == 105.5
    assert rulebook.reply_credited(100.2, deadline)
    assert rulebook.reply_credited(105.5, deadline)  # at the decision point: still in time
    assert not rulebook.reply_credited(105.5001, deadline)
    assert not rulebook.reply_credited(0.0, math.nan)  # a parcel not scanned yet


def test_the_controller_heartbeat_is_lost_only_past_the_timeout() -> None:
    assert not rulebook.heartbeat_lost(now=12.0, changed_at=10.0, timeout_s=2.0)
    assert rulebook.heartbeat_lost(now=12.01, changed_at=10.0, timeout_s=2.0)


def test_the_plc_lap_limit_leaves_the_controller_two_spare_laps() -> None:
    assert rulebook.PLC_SPARE_LAPS == 2
    assert not rulebook.lap_limit_passed(laps=5, lap_limit=3)
    assert rulebook.lap_limit_passed(laps=6, lap_limit=3)


@pytest.mark.parametrize(
    ("reply_lane", "heartbeat_alive", "laps", "steered"),
    [
        (2, True, 0, 2),
        (None, True, 0, None),  # no reply credited
        (2, False, 0, None),  # safe state
        (77, True, 0, None),  # not a lane of this line
        (2, True, 5, 2),  # recirculating, within the PLC's own limit
        (2, True, 6, None),  # past lap_limit + 2
    ],
)
def test_steer_uses_the_reply_only_when_every_condition_holds(
    reply_lane: int | None, heartbeat_alive: bool, laps: int, steered: int | None
) -> None:
    assert rulebook.steer(reply_lane, LANES, heartbeat_alive, laps, 3) == steered


@pytest.mark.parametrize(
    ("missed", "lane_status", "status"),
    [
        (False, LaneStatus.AVAILABLE, DIVERTED),
        (False, 0, DIVERTED),  # a raw status word
        (False, LaneStatus.FULL, LANE_FULL),
        (False, LaneStatus.BLOCKED, LANE_FULL),
        (False, 7, LANE_FULL),  # outside 0..2: treated as blocked
        (True, LaneStatus.AVAILABLE, MISSED),
        (True, LaneStatus.FULL, MISSED),  # a parcel that passed its divert never saw the lane
    ],
)
def test_at_divert(missed: bool, lane_status: int, status: DivertStatus) -> None:
    assert rulebook.at_divert(missed, lane_status) is status


@pytest.mark.parametrize(
    ("reply_lane", "kwargs", "expected"),
    [
        (2, {}, (2, DIVERTED)),
        (None, {}, (9, DEFAULTED)),
        (2, {"heartbeat_alive": False}, (9, DEFAULTED)),
        (77, {}, (9, DEFAULTED)),
        (2, {"laps": 6}, (9, DEFAULTED)),
        (2, {"missed": True}, (2, MISSED)),
        (1, {}, (1, LANE_FULL)),  # lane 1 is full in the table below
        (4, {}, (4, DIVERTED)),  # a lane missing from the table counts as available
        (2, {"tracking_lost": True}, (9, LOST)),
        (None, {"tracking_lost": True, "heartbeat_alive": False}, (9, LOST)),
    ],
)
def test_disposition_applies_the_rules_in_order(
    reply_lane: int | None, kwargs: dict[str, Any], expected: tuple[int, DivertStatus]
) -> None:
    status = {1: LaneStatus.FULL, 2: LaneStatus.AVAILABLE, 9: LaneStatus.AVAILABLE}
    got = rulebook.disposition(reply_lane, 9, LANES | {4}, status, lap_limit=3, **kwargs)
    assert got == expected


def test_recirculation_and_the_default_lane() -> None:
    assert {s for s in DivertStatus if rulebook.recirculates(s)} == {MISSED, LANE_FULL}
    line = Line.model_validate(
        {
            "id": "L1",
            "lanes": [
                {"id": 1, "kind": "release"},
                {"id": 2, "kind": "inspection"},
                {"id": 7, "kind": "exception"},
                {"id": 9, "kind": "exception"},
            ],
        }
    )
    assert rulebook.default_lane(line) == 7


def test_the_rulebook_loads_only_the_standard_library_and_the_core() -> None:
    """Pure rules: no protocol stack, no SimPy, no numpy, no pydantic comes with them."""
    probe = (
        "import sys; before = set(sys.modules); import plc_adapters.rulebook; "
        "import json; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    ours = ("controller", "controller.core", "plc_adapters", "plc_adapters.rulebook")
    loaded = json.loads(done.stdout)
    foreign = [
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names
        and m not in ours
        and not m.startswith("controller.core.")
    ]
    assert "plc_adapters.rulebook" in loaded
    assert foreign == []


# --- the twin's plant, in SimPy time ---------------------------------------------------------


class ReplyAfter:
    """A ControlLink that answers every parcel with lane 1, ``delay_s`` after its scan."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.confirmed: dict[int, tuple[int, DivertStatus]] = {}
        self.plant: Plant | None = None

    def attach(self, plant: Plant) -> None:
        self.plant = plant

    def request(self, item: Item, now: float) -> None:
        assert self.plant is not None
        event = self.plant.env.timeout(self.delay_s, item)
        event.callbacks.append(self._reply)

    def _reply(self, event: simpy.Event) -> None:
        assert self.plant is not None
        item = cast(Item, event.value)
        self.plant.reply(item.spec.line, item.tracking_id, 1, "LOW_RISK_CLEAN_XRAY")

    def confirm(self, item: Item, lane: int, status: DivertStatus, now: float) -> None:
        self.confirmed[item.tracking_id] = (lane, status)

    def inspected(self, item: Item, outcome: InspectionOutcome, now: float) -> None:
        pass

    def lane_status(self, line: str, lane: int, status: LaneStatus) -> None:
        pass


def small_twin(folder: Path, seconds: float, per_h: float, plc_margin_s: float) -> ScenarioBundle:
    """One line whose decision window is ``6 s - plc_margin_s``; no missed diverts."""
    site = site_dict()
    site["lines"][0]["belt"]["plc_margin_s"] = plc_margin_s
    horizon_h = seconds / 3600
    scenario = scenario_dict(
        horizon_h=horizon_h,
        drain_h=0.1,
        arrivals={"steady": [{"from_h": 0, "to_h": horizon_h, "parcels_per_h": per_h}]},
        sorter={"missed_divert_rate": 0.0},
    )
    return bundle(folder, scenario, site)


@pytest.mark.parametrize(("after_s", "expected"), [(0.0, (1, DIVERTED)), (0.25, (9, DEFAULTED))])
def test_the_plant_ignores_a_reply_after_the_decision_point(
    tmp_path: Path, after_s: float, expected: tuple[int, DivertStatus]
) -> None:
    """Window 5.5 s, divert at 6 s: a reply 0.25 s past the decision point still comes before
    the divert, and the plant must ignore it as a PLC would."""
    twin = small_twin(tmp_path, seconds=120, per_h=600, plc_margin_s=0.5)
    window = twin.site.lines[0].belt.decision_window_s
    env = simpy.Environment()
    link = ReplyAfter(window + after_s)
    plant = Plant(env, twin.scenario, twin.site, link)
    plant.start()
    env.run(until=plant.done)
    assert plant.generated >= 5
    assert set(link.confirmed.values()) == {expected}
    lane = RECORD_FIELDS.index("lane")
    assert {r[lane] for r in plant.records} == {expected[0]}


# --- the in-process sorter given a clock -----------------------------------------------------


async def test_a_clocked_in_process_sorter_hands_the_plant_only_credited_replies() -> None:
    clock = ManualClock()
    credited: list[int] = []
    sorter = InProcessSorter(
        "L1", lambda r: credited.append(r.tracking_id), clock=clock, decision_window_s=5.5
    )
    sorter.request(1, "A", 0.0)
    sorter.request(2, "B", 0.0)
    await clock.advance(5.5)
    await sorter.reply(DestinationReply("L1", 1, 1, Reason.LOW_RISK_CLEAN_XRAY))
    await clock.advance(0.1)
    await sorter.reply(DestinationReply("L1", 2, 1, Reason.LOW_RISK_CLEAN_XRAY))
    await sorter.reply(DestinationReply("L1", 3, 1, Reason.LOW_RISK_CLEAN_XRAY))  # never seen
    assert credited == [1]
    assert sorter.replies_ignored == 2

    unclocked = InProcessSorter("L1")  # no PLC clock: every reply goes on, the plant judges
    unclocked.request(1, "A", 0.0)
    await unclocked.reply(DestinationReply("L1", 1, 1, Reason.LOW_RISK_CLEAN_XRAY))
    assert [r.tracking_id for r in unclocked.replies] == [1]
    with pytest.raises(ValueError, match="both"):
        InProcessSorter("L1", clock=clock)


# --- the twin driving the PLC emulators over the wire ----------------------------------------

LATE = 1  # the first parcel's reply is written after its decision point; the rest in time


@pytest.mark.parametrize("protocol", ["opcua", "modbus"])
async def test_the_twin_over_the_wire_never_credits_a_late_reply(
    tmp_path: Path, protocol: str
) -> None:
    """The virtual plant drives an emulated PLC behind a real server; the controller side is
    the real wire adapter. The first parcel's reply is written 1 s (plant) after its decision
    point and reaches the PLC well before its divert (window 3 s, divert at 6 s), which the
    plant used to credit. Its divert confirmation, read back over the wire, must say DEFAULTED
    to the default lane 9; every other parcel, answered in time, is DIVERTED to lane 1."""
    twin = small_twin(tmp_path, seconds=12, per_h=1200, plc_margin_s=3.0)
    line = twin.site.lines[0]
    window, to_divert = line.belt.decision_window_s, 6.0
    clock = ScaledClock(5.0)
    async with open_rig(protocol, plc_line=line, clock=clock) as rig:
        plc = rig.plc
        taken: dict[int, float] = {}  # when each parcel's first reply reached the PLC

        def took(reply: DestinationReply) -> None:
            taken.setdefault(reply.tracking_id, clock.now())

        plc.on_reply_taken = took
        await wait_for(lambda: rig.adapter.connected and not plc.safe_state, "link up")
        virtual = VirtualPlant(twin, {line.id: plc}, clock, lambda hawb, outcome: None)
        scanned: dict[int, float] = {}

        async def reply_late(tracking_id: int) -> None:
            await clock.sleep_until(scanned[tracking_id] + window + 1.0)
            await rig.sorter.reply(DestinationReply(line.id, tracking_id, 1, Reason.RISK_RED))

        async def control() -> None:
            answered = 0
            late: set[asyncio.Task[None]] = set()
            while True:
                for telegram in rig.received[answered:]:
                    answered += 1
                    if not isinstance(telegram, DestinationRequest):
                        continue
                    tracking_id = telegram.tracking_id
                    scanned[tracking_id] = virtual.plant.on_plant[(line.id, tracking_id)].scan_s
                    if tracking_id == LATE:
                        late.add(asyncio.create_task(reply_late(tracking_id)))
                    else:
                        await rig.sorter.reply(
                            DestinationReply(line.id, tracking_id, 1, Reason.LOW_RISK_CLEAN_XRAY)
                        )
                await asyncio.sleep(0.002)

        controller = asyncio.create_task(control())
        try:
            await asyncio.wait_for(virtual.run(), timeout=60)
            generated = virtual.plant.generated

            def confirmations() -> dict[int, tuple[int, DivertStatus]]:
                return {
                    t.tracking_id: (t.lane, t.status)
                    for t in rig.received
                    if isinstance(t, DivertConfirmation)
                }

            await wait_for(lambda: len(confirmations()) == generated, "every confirmation")
        finally:
            controller.cancel()
            await asyncio.gather(controller, return_exceptions=True)

    assert generated >= 3
    # The late reply really was at the PLC after the decision point and before the divert.
    assert scanned[LATE] + window < taken[LATE] < scanned[LATE] + to_divert
    assert plc.replies_late == 1
    confirmed = confirmations()
    assert confirmed.pop(LATE) == (9, DEFAULTED)
    assert set(confirmed.values()) == {(1, DIVERTED)}
    lane, state = RECORD_FIELDS.index("lane"), RECORD_FIELDS.index("state")
    outcomes = sorted((r[lane], r[state]) for r in virtual.plant.records)
    assert outcomes == [(1, "released")] * (generated - 1) + [(9, "exception")]
