"""The fast fidelity: the controller's own line trackers driven from SimPy events.

The full fidelity (:mod:`simulation.offline`) runs the asyncio controller through its ports,
which costs tasks and futures per parcel. This link drives the same sans-IO
:class:`controller.core.tracker.LineTracker` — every routing rule, the policy, the lifecycle
and the KPIs — straight from the plant's events: evidence arrives as a SimPy timeout at the
scan latency (or the cutoff), officers answer through the plant's review room, and the journal
is durable at once. Nothing of the decision flow is restated here; tests compare both
fidelities parcel by parcel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

import simpy

from controller.core.commands import RecordInspection
from controller.core.domain import (
    DestinationRequest,
    DivertConfirmation,
    DivertStatus,
    InspectionOutcome,
    LaneStatus,
    ReviewOutcome,
    XrayResult,
    XrayStatus,
)
from controller.core.holds import Holds
from controller.core.kpi import Kpis
from controller.core.policy import DecisionPolicy
from controller.core.reasons import Reason
from controller.core.settings import SiteCore
from controller.core.tracker import (
    Abandon,
    AskReview,
    Effect,
    Gather,
    LineTracker,
    Planned,
    Record,
    Reply,
)
from simulation.plant import Item, Plant, ReviewTicket
from simulation.scenario import Scenario

_OK = XrayStatus.OK
_OFFICER = "twin-inspection-station"


def _reader(status: dict[int, LaneStatus]) -> Callable[[], Mapping[int, LaneStatus]]:
    return lambda: status


class PolicyLink:
    """Implements :class:`simulation.plant.ControlLink` with the real trackers in the loop."""

    def __init__(self, site: SiteCore, scenario: Scenario) -> None:
        self.site = site
        self.policy = DecisionPolicy(site.policy)
        self.kpis = Kpis(site.clearance.target_s, tuple(site.clearance.windows_s))
        self.holds = Holds()
        self.status: dict[str, dict[int, LaneStatus]] = {line.id: {} for line in site.lines}
        self.trackers = {
            line.id: LineTracker(
                line,
                self.policy,
                self.kpis,
                self.holds,
                _reader(self.status[line.id]),
                ask_reviews=True,
            )
            for line in site.lines
        }
        self.model_version = scenario.detector.model_version
        self.journal_rows = 0
        self._tickets: dict[tuple[str, int], ReviewTicket] = {}
        self._names: dict[tuple[Reason, ...], str] = {}
        self._plant: Plant | None = None
        self.env = simpy.Environment()  # replaced by the plant's in attach()

    def attach(self, plant: Plant) -> None:
        self._plant = plant
        self.env = plant.env

    @property
    def plant(self) -> Plant:
        assert self._plant is not None, "attach() first"
        return self._plant

    # --- the plant's events --------------------------------------------------------------

    def request(self, item: Item, now: float) -> None:
        line = item.spec.line
        request = DestinationRequest(line, 0, item.tracking_id, item.barcode, now)
        self._carry_out(item, self.trackers[line].request(request, now), now)

    def confirm(self, item: Item, lane: int, status: DivertStatus, now: float) -> None:
        line = item.spec.line
        confirmation = DivertConfirmation(line, 0, item.tracking_id, lane, status)
        self._carry_out(item, self.trackers[line].confirm(confirmation, now), now)

    def inspected(self, item: Item, outcome: InspectionOutcome, now: float) -> None:
        command = RecordInspection(user=_OFFICER, hawb=item.spec.hawb, outcome=outcome)
        planned = self.trackers[item.spec.line].plan(command, now)
        if isinstance(planned, Planned):
            self.journal_rows += 1
            applied = planned.commit(now)
            if isinstance(applied, list):
                self._carry_out(item, applied, now)

    def tick(self, now: float) -> None:
        """Age the KPIs' pending verdicts (keeps memory flat over a long day)."""
        self.kpis.tick(now)

    def lane_status(self, line: str, lane: int, status: LaneStatus) -> None:
        self.status[line][lane] = status

    # --- effects -------------------------------------------------------------------------

    def _carry_out(self, item: Item, effects: list[Effect], now: float) -> None:
        tracker = self.trackers[item.spec.line]
        for effect in effects:
            if isinstance(effect, Record):
                self.journal_rows += len(effect.entries)
                if effect.awaiting is not None:  # the twin's journal is durable at once
                    self._carry_out(item, tracker.journalled(effect.awaiting, now), now)
            elif isinstance(effect, Gather):
                self._gather(item, effect, now)
            elif isinstance(effect, AskReview):
                self._ask_officer(item, effect)
            elif isinstance(effect, Reply):
                self._reply(item, effect)
            elif isinstance(effect, Abandon):
                ticket = self._tickets.pop((item.spec.line, effect.tracking_id), None)
                if ticket is not None:
                    self.plant.review.withdraw(ticket)

    def _gather(self, item: Item, gather: Gather, now: float) -> None:
        """The scanner's result comes after its latency; past the cutoff it is late."""
        evidence_at = now + item.xray_latency_s
        xray: XrayResult | None = None
        if evidence_at > gather.cutoff:
            evidence_at = gather.cutoff
        else:
            xray = XrayResult(_OK, item.spec.scores, self.model_version)
        event = self.env.timeout(evidence_at - now, (item, xray))
        event.callbacks.append(self._evidence)

    def _evidence(self, event: simpy.Event) -> None:
        item, xray = cast(tuple[Item, XrayResult | None], event.value)
        risk = item.spec.risk if item.barcode == item.spec.hawb else None
        now = self.env.now
        effects = self.trackers[item.spec.line].evidence(item.tracking_id, risk, xray, now)
        self._carry_out(item, effects, now)

    def _ask_officer(self, item: Item, ask: AskReview) -> None:
        review = self.plant.review
        key = (item.spec.line, item.tracking_id)
        tracker = self.trackers[item.spec.line]

        def answered(outcome: ReviewOutcome) -> None:
            self._tickets.pop(key, None)
            now = self.env.now
            self._carry_out(item, tracker.reviewed(item.tracking_id, outcome, now), now)

        self._tickets[key] = review.submit(item, ask.request.deadline, answered)

        def give_up(_: simpy.Event) -> None:
            ticket = self._tickets.pop(key, None)
            if ticket is None:
                return
            review.withdraw(ticket)
            now = self.env.now
            self._carry_out(item, tracker.reviewed(item.tracking_id, None, now), now)

        self.env.timeout(ask.request.deadline - self.env.now).callbacks.append(give_up)

    def _reply(self, item: Item, reply: Reply) -> None:
        names = self._names.get(reply.reasons)
        if names is None:
            names = self._names[reply.reasons] = "|".join(r.name for r in reply.reasons)
        self.plant.reply(reply.reply.line, reply.reply.tracking_id, reply.reply.lane, names)
