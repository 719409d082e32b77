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
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING

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

# The telegrams and X-ray results made per parcel, built as the tracker builds its own values
# (see controller.core.tracker): from all their fields, without the named tuple's __new__.
if TYPE_CHECKING:

    def _request(fields: tuple[str, int, int, str, float, str, bool], /) -> DestinationRequest: ...
    def _confirmation(
        fields: tuple[str, int, int, int, DivertStatus, bool], /
    ) -> DivertConfirmation: ...
    def _xray(fields: tuple[XrayStatus, Mapping[str, float], str, str], /) -> XrayResult: ...

else:
    _request = partial(tuple.__new__, DestinationRequest)
    _confirmation = partial(tuple.__new__, DivertConfirmation)
    _xray = partial(tuple.__new__, XrayResult)

# What an evidence event carries (its value), typed without a cast() call per parcel.
if TYPE_CHECKING:

    def _evidence_of(event: simpy.Event, /) -> tuple[Item, XrayResult | None]: ...

else:
    _evidence_of = attrgetter("value")


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
        self._timeout = self.env.timeout

    def attach(self, plant: Plant) -> None:
        self._plant = plant
        self.env = plant.env
        # Bound once: env.timeout is a descriptor that binds anew on every access.
        self._timeout = plant.env.timeout
        self._plant_reply = plant.reply

    @property
    def plant(self) -> Plant:
        assert self._plant is not None, "attach() first"
        return self._plant

    # --- the plant's events --------------------------------------------------------------

    def request(self, item: Item, now: float) -> None:
        line = item.spec.line
        request = _request((line, 0, item.tracking_id, item.barcode, now, "", False))  # seq 0
        self._carry_out(item, self.trackers[line].request(request, now), now)

    def confirm(self, item: Item, lane: int, status: DivertStatus, now: float) -> None:
        line = item.spec.line
        confirmation = _confirmation((line, 0, item.tracking_id, lane, status, False))  # seq 0
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
        for effect in effects:
            # type() is rather than isinstance(): the effects are final named tuples, and
            # this runs several times per parcel.
            if type(effect) is Record:
                self.journal_rows += len(effect.entries)
                if effect.awaiting is not None:  # the twin's journal is durable at once
                    tracker = self.trackers[item.spec.line]
                    self._carry_out(item, tracker.journalled(effect.awaiting, now), now)
            elif type(effect) is Gather:
                self._gather(item, effect, now)
            elif type(effect) is Reply:
                self._reply(item, effect)
            elif type(effect) is AskReview:
                self._ask_officer(item, effect)
            elif type(effect) is Abandon:
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
            xray = _xray((_OK, item.spec.scores, self.model_version, ""))  # no detail
        event = self._timeout(evidence_at - now, (item, xray))
        event.callbacks.append(self._evidence)

    def _evidence(self, event: simpy.Event) -> None:
        item, xray = _evidence_of(event)
        spec = item.spec
        risk = spec.risk if item.barcode == spec.hawb else None
        now = self.env.now
        effects = self.trackers[spec.line].evidence(item.tracking_id, risk, xray, now)
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

        self._timeout(ask.request.deadline - self.env.now).callbacks.append(give_up)

    def _reply(self, item: Item, reply: Reply) -> None:
        names = self._names.get(reply.reasons)
        if names is None:
            names = self._names[reply.reasons] = "|".join(r.name for r in reply.reasons)
        to = reply.reply
        self._plant_reply(to.line, to.tracking_id, to.lane, names)
