"""The plant model in SimPy: induction, belt, scan tunnel, sorter, lanes, review room,
inspection stations and release, for every line of one site.

The plant never decides where a parcel goes. At the scan tunnel it hands the parcel to a
:class:`ControlLink` (the real controller through its ports, or the real policy on the fast
path) and at the divert point it does what a sorter PLC does with the reply, by the rules in
:mod:`plc_adapters.rulebook` (the same functions the PLC emulator applies): a reply counts only
if it arrived by the parcel's decision point, else the PLC's default lane stands. What
physically happened to each parcel is recorded here, independently of the controller's view,
so tests can compare the two.

Hot paths use SimPy events with callbacks rather than generator processes: a day of 480,000
parcels has to fit in a few million events.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import simpy

from controller.core.domain import (
    DivertStatus,
    InspectionOutcome,
    LaneKind,
    LaneStatus,
    ReviewOutcome,
    RiskChannel,
)
from controller.core.lifecycle import ParcelState
from controller.core.settings import SiteCore
from plc_adapters.rulebook import at_divert, decision_point, default_lane, reply_credited, steer
from simulation.scenario import LaneFull, LateXray, NoReadBurst, Scenario
from simulation.truth import (
    LineArrivals,
    ParcelSpec,
    TruthModel,
    arrival_schedule,
    induction_times,
)

_INSPECTION, _RELEASE = LaneKind.INSPECTION, LaneKind.RELEASE
_FULL, _AVAILABLE = LaneStatus.FULL, LaneStatus.AVAILABLE
_DIVERTED, _DEFAULTED = DivertStatus.DIVERTED, DivertStatus.DEFAULTED
_INSPECT, _CLEAR = ReviewOutcome.INSPECT, ReviewOutcome.CLEAR
_REVIEW_VALUE = {outcome: outcome.value for outcome in ReviewOutcome}  # .value is a property
_SEIZED, _REFERRED = InspectionOutcome.SEIZED, InspectionOutcome.REFERRED
_CLEARED = InspectionOutcome.CLEARED


@dataclass(slots=True)
class Item:
    """One parcel on the plant: its truth and what has happened to it so far."""

    spec: ParcelSpec
    tracking_id: int
    inducted_s: float
    first_scan_s: float = math.nan
    scan_s: float = math.nan
    laps: int = 0
    read_fault: str = ""
    xray_latency_s: float = 0.0
    reply_lane: int | None = None
    """Lane of the reply credited to this lap (arrived by the decision point), if any."""
    reasons: str = ""
    reviewed: str = ""
    lane: int | None = None
    state: ParcelState | None = None
    closed_s: float = math.nan
    inspection_wait_s: float = math.nan

    @property
    def barcode(self) -> str:
        return "" if self.read_fault else self.spec.hawb


# The item a plant event carries, typed: event.value read by a C-level getter, as cast() would
# cost a Python call per event.
if TYPE_CHECKING:

    def _item_of(event: simpy.Event, /) -> Item: ...

else:
    _item_of = attrgetter("value")


class ControlLink(Protocol):
    """What the plant needs from whoever decides: the sorter contract seen from the PLC, plus
    the officers' terminals for inspection results."""

    def attach(self, plant: Plant) -> None: ...

    def request(self, item: Item, now: float) -> None:
        """The parcel left the scan tunnel; a reply may come later via :meth:`Plant.reply`."""

    def confirm(self, item: Item, lane: int, status: DivertStatus, now: float) -> None: ...

    def inspected(self, item: Item, outcome: InspectionOutcome, now: float) -> None: ...

    def lane_status(self, line: str, lane: int, status: LaneStatus) -> None: ...


@dataclass(slots=True, eq=False)
class LaneState:
    line: str
    id: int
    kind: LaneKind
    buffer: float
    gap_s: float
    exits: deque[float] = field(default_factory=deque)
    waiting: int = 0
    forced_full: int = 0
    published: LaneStatus = LaneStatus.AVAILABLE
    diverted: int = 0
    last_exit: float = 0.0
    t0: float = 0.0
    by_hour: dict[int, int] = field(default_factory=dict)

    def occupancy(self, now: float) -> int:
        if self.kind is _INSPECTION:
            return self.waiting
        exits = self.exits
        while exits and exits[0] <= now:
            exits.popleft()
        return len(exits)

    def status(self, now: float) -> LaneStatus:
        if self.forced_full > 0:
            return _FULL
        if self.kind is _INSPECTION:
            return _FULL if self.waiting >= self.buffer else _AVAILABLE
        # occupancy(), inlined: asked two or three times per parcel
        exits = self.exits
        while exits and exits[0] <= now:
            exits.popleft()
        return _FULL if len(exits) >= self.buffer else _AVAILABLE

    def accept(self, now: float) -> None:
        self.diverted += 1
        hour = int((now - self.t0) // 3600)
        self.by_hour[hour] = self.by_hour.get(hour, 0) + 1
        if self.kind is _INSPECTION:
            self.waiting += 1
        else:
            # max(now, last_exit) + gap, without a call to max() per parcel
            self.last_exit = (now if now > self.last_exit else self.last_exit) + self.gap_s
            self.exits.append(self.last_exit)


class Pool:
    """A group of identical servers whose staffed count may change (officers, stations).

    Keeps the busy and staffed integrals for utilisation; FIFO queue of waiting jobs.
    """

    def __init__(self, env: simpy.Environment, staffed: int) -> None:
        self.env = env
        self.staffed = staffed
        self.busy = 0
        self.busy_area = 0.0
        self.staffed_area = 0.0
        self._last = env.now

    def account(self) -> None:
        now = self.env.now
        dt = now - self._last
        self.busy_area += self.busy * dt
        self.staffed_area += self.staffed * dt
        self._last = now

    def utilisation(self) -> float | None:
        self.account()
        return self.busy_area / self.staffed_area if self.staffed_area > 0 else None


@dataclass(slots=True)
class ReviewTicket:
    item: Item
    deadline: float
    done: Callable[[ReviewOutcome], None]
    state: str = "waiting"  # waiting, serving, finished, withdrawn


class ReviewRoom:
    """Officers who review image and declaration on screen while the parcel moves."""

    def __init__(self, env: simpy.Environment, scenario: Scenario, rng: random.Random) -> None:
        self.env = env
        self.s = scenario.review
        self.visible = set(scenario.detector.classes)
        self.rng = rng
        self.pool = Pool(env, scenario.review.officers)
        # read once from the settings model: its attributes cost a __getattr__ hook per read
        self._review_time = self.s.review_time.sample
        self._hit_rate, self._false_alarm_rate = self.s.hit_rate, self.s.false_alarm_rate
        self.queue: deque[ReviewTicket] = deque()
        self.submitted = 0
        self.completed = 0
        self.withdrawn = 0

    def submit(
        self, item: Item, deadline: float, done: Callable[[ReviewOutcome], None]
    ) -> ReviewTicket:
        ticket = ReviewTicket(item, deadline, done)
        self.submitted += 1
        self.queue.append(ticket)
        self._start_next()
        return ticket

    def withdraw(self, ticket: ReviewTicket) -> None:
        """The parcel reached its decision cutoff first; an officer on it moves on."""
        if ticket.state in ("finished", "withdrawn"):
            return
        serving = ticket.state == "serving"
        ticket.state = "withdrawn"
        self.withdrawn += 1
        if serving:
            self.pool.account()
            self.pool.busy -= 1
            self._start_next()

    def waiting(self) -> int:
        return sum(1 for t in self.queue if t.state == "waiting")

    def _start_next(self) -> None:
        pool = self.pool
        while self.queue and pool.busy < pool.staffed:
            ticket = self.queue.popleft()
            if ticket.state != "waiting":
                continue
            ticket.state = "serving"
            pool.account()
            pool.busy += 1
            event = self.env.timeout(self._review_time(self.rng), ticket)
            event.callbacks.append(self._finished)
        if len(self.queue) > 64 and self.queue[0].state != "waiting":
            self.queue = deque(t for t in self.queue if t.state == "waiting")

    def _finished(self, event: simpy.Event) -> None:
        ticket = cast(ReviewTicket, event.value)
        if ticket.state != "serving":
            return  # withdrawn while under review: the officer was already freed
        ticket.state = "finished"
        self.completed += 1
        self.pool.account()
        self.pool.busy -= 1
        contraband = ticket.item.spec.contraband
        p_inspect = self._hit_rate if contraband in self.visible else self._false_alarm_rate
        outcome = _INSPECT if self.rng.random() < p_inspect else _CLEAR
        ticket.item.reviewed = _REVIEW_VALUE[outcome]
        self._start_next()
        ticket.done(outcome)


class InspectionHall:
    """Inspection stations staffed by shift, fed FIFO from every inspection lane."""

    def __init__(self, plant: Plant, scenario: Scenario, rng: random.Random) -> None:
        self.plant = plant
        self.env = plant.env
        self.s = scenario.inspection
        self.rng = rng
        self.pool = Pool(self.env, self.s.stations_at(0.0))
        # read once from the settings model: its attributes cost a __getattr__ hook per read
        self._service_time = self.s.service_time.sample
        self._referral_rate = self.s.referral_rate
        self.queue: deque[tuple[Item, LaneState, float]] = deque()
        for edge in sorted({t for sh in self.s.shifts for t in (sh.from_h, sh.to_h)}):
            if edge > 0:
                self.env.timeout(edge * 3600).callbacks.append(self._shift_change)

    def arrive(self, item: Item, lane: LaneState) -> None:
        self.queue.append((item, lane, self.env.now))
        self._start_next()

    def _shift_change(self, _: simpy.Event) -> None:
        self.pool.account()
        self.pool.staffed = self.s.stations_at((self.env.now - self.plant.t0) / 3600)
        self._start_next()

    def _start_next(self) -> None:
        pool = self.pool
        while self.queue and pool.busy < pool.staffed:
            item, lane, since = self.queue.popleft()
            lane.waiting -= 1
            item.inspection_wait_s = self.env.now - since
            pool.account()
            pool.busy += 1
            event = self.env.timeout(self._service_time(self.rng), item)
            event.callbacks.append(self._finished)
            self.plant.refresh_lane(lane)

    def _finished(self, event: simpy.Event) -> None:
        item = _item_of(event)
        self.pool.account()
        self.pool.busy -= 1
        if item.spec.contraband is not None:
            outcome = _SEIZED
        elif self.rng.random() < self._referral_rate:
            outcome = _REFERRED
        else:
            outcome = _CLEARED
        self.plant.inspected(item, outcome)
        self._start_next()


_COUNTER = {status: f"divert_{status.name.lower()}" for status in DivertStatus}
# A record holds plain strings; a dict lookup is cheaper than an enum's .value property.
_CHANNEL_VALUE = {channel: channel.value for channel in RiskChannel}
_STATE_VALUE = {state: state.value for state in ParcelState}
_IN_INSPECTION = ParcelState.IN_INSPECTION
_RELEASED_STATE, _EXCEPTION_STATE = ParcelState.RELEASED, ParcelState.EXCEPTION
_AFTER_INSPECTION = {
    InspectionOutcome.CLEARED: ParcelState.CLEARED_AFTER_INSPECTION,
    InspectionOutcome.SEIZED: ParcelState.SEIZED,
    InspectionOutcome.REFERRED: ParcelState.REFERRED,
}


@dataclass(slots=True)
class Sample:
    t: float
    review_waiting: int
    officers_busy: int
    officers: int
    inspection_waiting: int
    stations_busy: int
    stations: int
    on_belt: int
    lanes: dict[str, int]


class Plant:
    """Every line of one site; build, :meth:`start`, then run the environment (a driver's job).

    ``records`` holds one tuple per closed parcel (see :data:`RECORD_FIELDS`).
    """

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        site: SiteCore,
        link: ControlLink,
        specs: dict[str, Iterator[ParcelSpec]] | None = None,
        arrivals: list[LineArrivals] | None = None,
    ) -> None:
        self.env = env
        self._timeout = env.timeout  # bound once: a descriptor that binds anew on every access
        self.t0 = float(env.now)
        """Simulated time of the run's start: scenario hours count from here."""
        self.scenario = scenario
        self.site = site
        self.link = link
        self.rng = random.Random(f"{scenario.seed}/plant")
        self.lines = {line.id: line for line in site.lines}
        self.lanes: dict[str, dict[int, LaneState]] = {}
        for line in site.lines:
            lanes = {}
            for lane in line.lanes:
                buffer: float = scenario.sorter.lane_buffer_parcels
                if lane.kind is LaneKind.INSPECTION:
                    buffer = scenario.sorter.inspection_lane_buffer_parcels
                elif lane.kind is LaneKind.EXCEPTION:
                    buffer = math.inf  # a chute to a manual area: full only when told so
                lanes[lane.id] = LaneState(
                    line.id, lane.id, lane.kind, buffer, 3600.0 / lane.capacity_per_h, t0=self.t0
                )
            self.lanes[line.id] = lanes
        self.default_lane = {line.id: default_lane(line) for line in site.lines}
        self.review = ReviewRoom(env, scenario, random.Random(f"{scenario.seed}/review"))
        self.hall = InspectionHall(self, scenario, random.Random(f"{scenario.seed}/inspection"))
        if arrivals is None:
            arrivals, names = arrival_schedule(scenario, site)
            specs = {}
            first = 1
            for index, a in enumerate(arrivals):
                model = TruthModel(scenario, index, a.line, first)
                specs[a.line] = model.specs(a.times, a.sources, names)
                first += a.times.size
        assert specs is not None
        if self.t0:
            arrivals = [LineArrivals(a.line, a.times + self.t0, a.sources) for a in arrivals]
        self.arrivals = arrivals
        self.specs = specs
        self.inducted = {
            a.line: induction_times(a.times, scenario.induction.rate_for(a.line)) for a in arrivals
        }
        self.generated = int(sum(a.times.size for a in arrivals))
        self.on_plant: dict[tuple[str, int], Item] = {}
        self.records: list[tuple[Any, ...]] = []
        self.samples: list[Sample] = []
        self.counts: dict[str, int] = {}
        self.scans = 0
        self.feeding = 0
        self.done = env.event()
        self.faults_no_read = [f for f in scenario.faults if isinstance(f, NoReadBurst)]
        self.faults_late = [f for f in scenario.faults if isinstance(f, LateXray)]
        self._tracking = dict.fromkeys(self.lines, 0)
        self.full_lanes: dict[str, set[LaneState]] = {line: set() for line in self.lines}
        self.missed_rate = scenario.sorter.missed_divert_rate
        self.no_read_rate = scenario.scan.no_read_rate
        self.read_fault_rate = scenario.scan.no_read_rate + scenario.scan.multi_read_rate
        self.latency = scenario.scan.xray_latency
        self._sample_latency = self.latency.sample  # bound once, not looked up per parcel
        self.to_scan_s = {line.id: line.belt.induct_to_scan_s for line in site.lines}
        self._feeds = {
            a.line: zip(self.specs[a.line], self.inducted[a.line].tolist(), strict=True)
            for a in self.arrivals
        }
        self._arriving: Callable[[Item], None] | None = getattr(link, "arriving", None)
        self.to_divert_s = {
            line.id: line.belt.scan_to_divert_m / line.belt.speed_m_s for line in site.lines
        }
        self.window_s = {line.id: line.belt.decision_window_s for line in site.lines}
        # Per line, read once: a pydantic model's attribute costs a __getattr__ hook per read.
        self.lap_limit = {line.id: line.lap_limit for line in site.lines}
        self.loop_s = {line.id: line.belt.loop_s for line in site.lines}

    # --- start ---------------------------------------------------------------------------

    def start(self) -> None:
        self.link.attach(self)
        for arrivals in self.arrivals:
            if arrivals.times.size:
                self.feeding += 1
                self._feed(arrivals.line, self.env.now)
        for fault in self.scenario.faults:
            if isinstance(fault, LaneFull):
                lane = self.lanes[fault.line][fault.lane]
                on = self.env.timeout(fault.at_h * 3600, (lane, 1))
                off = self.env.timeout(fault.at_h * 3600 + fault.duration_min * 60, (lane, -1))
                on.callbacks.append(self._force_full)
                off.callbacks.append(self._force_full)
        self.env.process(self._sample())
        if self.feeding == 0:
            self.done.succeed()

    def _feed(self, line_id: str, now: float) -> None:
        """Induct the line's next parcel (arrival order) and carry it to the scan tunnel; the
        scan feeds the one after. One event per parcel, no generator process."""
        try:
            spec, inducted = next(self._feeds[line_id])
        except StopIteration:
            self.feeding -= 1
            self._maybe_done()
            return
        self._tracking[line_id] = tracking_id = self._tracking[line_id] + 1
        item = Item(spec, tracking_id, inducted)
        self.on_plant[(line_id, tracking_id)] = item
        if self._arriving is not None:
            self._arriving(item)
        wait = inducted + self.to_scan_s[line_id] - now
        event = self._timeout(wait if wait > 0 else 0.0, item)
        event.callbacks.append(self._fed)

    def _fed(self, event: simpy.Event) -> None:
        item = _item_of(event)
        item.first_scan_s = now = self.env.now
        self._scan(item, now)
        self._feed(item.spec.line, now)

    # --- scan tunnel and divert --------------------------------------------------------------

    def _scan(self, item: Item, now: float) -> None:
        line_id = item.spec.line
        self.scans += 1
        item.scan_s = now
        item.reply_lane = None
        r = self.rng.random()
        if item.spec.read_fault and item.laps == 0:
            item.read_fault = item.spec.read_fault
        elif self.faults_no_read and (burst := self._active(self.faults_no_read, line_id, now)):
            item.read_fault = "no_read_burst" if self.rng.random() < burst.rate else ""
        elif r < self.no_read_rate:
            item.read_fault = "no_read"
        elif r < self.read_fault_rate:
            item.read_fault = "multi_read"
        else:
            item.read_fault = ""
        late = self.faults_late and self._active(self.faults_late, line_id, now)
        item.xray_latency_s = late.latency_s if late else self._sample_latency(self.rng)
        full = self.full_lanes[line_id]
        if full:
            for lane in list(full):
                self._refresh(lane, now)
        self.link.request(item, now)
        event = self._timeout(self.to_divert_s[line_id], item)
        event.callbacks.append(self._divert)

    def _divert(self, event: simpy.Event) -> None:
        """The parcel reaches its divert: the PLC's rules (:mod:`plc_adapters.rulebook`) over
        the reply credited to it, its laps and the lane's physical state. The plant's PLC has
        no controller heartbeat to lose (over a wire, the emulated PLC watches it)."""
        item = _item_of(event)
        now = self.env.now
        line_id = item.spec.line
        lanes = self.lanes[line_id]
        lane_id = steer(item.reply_lane, lanes, True, item.laps, self.lap_limit[line_id])
        if lane_id is None:
            self._into(item, lanes[self.default_lane[line_id]], _DEFAULTED, now)
            return
        lane = lanes[lane_id]
        missed = self.rng.random() < self.missed_rate  # drawn only for a steered parcel
        status = at_divert(missed, lane.status(now))
        if status is _DIVERTED:
            self._into(item, lane, status, now)
        else:
            self._recirculate(item, lane_id, status, line_id)

    def _recirculate(self, item: Item, lane: int, status: DivertStatus, line_id: str) -> None:
        item.laps += 1
        self._count(_COUNTER[status])
        self.link.confirm(item, lane, status, self.env.now)
        event = self._timeout(self.loop_s[line_id], item)
        event.callbacks.append(self._rescan)

    def _rescan(self, event: simpy.Event) -> None:
        self._scan(_item_of(event), self.env.now)

    def _into(self, item: Item, lane: LaneState, status: DivertStatus, now: float) -> None:
        item.lane = lane.id
        lane.accept(now)
        counts = self.counts
        key = _COUNTER[status]
        counts[key] = counts.get(key, 0) + 1
        self.link.confirm(item, lane.id, status, now)
        if lane.kind is _INSPECTION:
            item.state = _IN_INSPECTION
            self.hall.arrive(item, lane)
        else:
            self._close(item, _RELEASED_STATE if lane.kind is _RELEASE else _EXCEPTION_STATE, now)
        if lane.buffer != math.inf or lane.forced_full:
            self._refresh(lane, now)

    def inspected(self, item: Item, outcome: InspectionOutcome) -> None:
        now = self.env.now
        self.link.inspected(item, outcome, now)
        self._close(item, _AFTER_INSPECTION[outcome], now)

    def reply(self, line: str, tracking_id: int, lane: int, reasons: str = "") -> None:
        """A destination reply arrived from the controller (applied at the divert point).

        Credited, as by a PLC, only if it arrived by the parcel's decision point on the plant's
        clock (:func:`plc_adapters.rulebook.reply_credited`); a later one is ignored and the
        default lane stands. In the virtual plant, SimPy's clock stands still between events
        and so trails the live clock; there the PLC emulators (and an in-process sorter given
        a clock) judge each reply on the live clock before it gets here."""
        item = self.on_plant.get((line, tracking_id))
        if item is not None and reply_credited(
            self.env.now, decision_point(item.scan_s, self.window_s[line])
        ):
            item.reply_lane = lane
            if reasons:
                item.reasons = reasons

    def _close(self, item: Item, state: ParcelState, now: float) -> None:
        item.state = state
        item.closed_s = now
        del self.on_plant[(item.spec.line, item.tracking_id)]
        spec = item.spec
        risk = spec.risk
        self.records.append(
            (
                spec.pid,
                spec.line,
                spec.hawb,
                spec.source,
                spec.goods,
                spec.contraband or "",
                _CHANNEL_VALUE[risk.channel] if risk else "",
                risk.score if risk else math.nan,
                spec.arrival_s,
                item.inducted_s,
                item.first_scan_s,
                item.closed_s,
                _STATE_VALUE[state],
                item.lane,
                item.laps,
                item.reasons,
                item.reviewed,
                item.inspection_wait_s,
                item.read_fault,
            )
        )
        if not self.feeding:  # _maybe_done()'s first test, without a call per parcel
            self._maybe_done()

    def _maybe_done(self) -> None:
        if self.feeding == 0 and not self.on_plant and not self.done.triggered:
            self.done.succeed()

    # --- lanes -----------------------------------------------------------------------------

    def refresh_lane(self, lane: LaneState) -> None:
        self._refresh(lane, self.env.now)

    def _refresh(self, lane: LaneState, now: float) -> None:
        status = lane.status(now)
        if status is not lane.published:
            lane.published = status
            if status is _FULL:
                self.full_lanes[lane.line].add(lane)
            else:
                self.full_lanes[lane.line].discard(lane)
            self.link.lane_status(lane.line, lane.id, status)

    def _force_full(self, event: simpy.Event) -> None:
        lane, delta = cast(tuple[LaneState, int], event.value)
        lane.forced_full += delta
        self.refresh_lane(lane)

    # --- faults, counters, samples -------------------------------------------------------------

    def _active(self, faults: list[Any], line: str, now: float) -> Any:
        now -= self.t0
        for fault in faults:
            start = fault.at_h * 3600
            if fault.line == line and start <= now < start + fault.duration_min * 60:
                return fault
        return None

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _sample(self) -> Generator[simpy.Event, Any, None]:
        every = self.scenario.sample_every_s
        while True:
            now = self.env.now
            lanes = {
                f"{lane.line}/{lane.id}": lane.occupancy(now)
                for lanes in self.lanes.values()
                for lane in lanes.values()
            }
            self.samples.append(
                Sample(
                    now,
                    self.review.waiting(),
                    self.review.pool.busy,
                    self.review.pool.staffed,
                    len(self.hall.queue),
                    self.hall.pool.busy,
                    self.hall.pool.staffed,
                    len(self.on_plant),
                    lanes,
                )
            )
            tick = getattr(self.link, "tick", None)
            if tick is not None:
                tick(now)
            if self.done.triggered:
                return
            yield self.env.timeout(every)

    def induction_queue(self, times: np.ndarray) -> dict[str, np.ndarray]:
        """Parcels waiting before induction per line at each of ``times`` (from the schedule)."""
        return {
            a.line: np.searchsorted(a.times, times, side="right")
            - np.searchsorted(self.inducted[a.line], times, side="right")
            for a in self.arrivals
        }


RECORD_FIELDS = (
    "pid",
    "line",
    "hawb",
    "source",
    "goods",
    "contraband",
    "risk_channel",
    "risk_score",
    "arrival_s",
    "inducted_s",
    "first_scan_s",
    "closed_s",
    "state",
    "lane",
    "laps",
    "reasons",
    "review",
    "inspection_wait_s",
    "read_fault",
)
