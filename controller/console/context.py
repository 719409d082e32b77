"""What the console is built from: its collaborators, handed in by whoever serves it.

The application layer passes the real site (its snapshot, the controller as the command
port, the journal as the audit log, the users in the site's database); tests pass the same
or small fakes. The console reads nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from controller.console.auth import LoginLimiter, Sessions
from controller.console.images import ImageShelf
from controller.console.live import Broadcaster, LaneRates
from controller.console.schemas import (
    AlarmOut,
    ForwarderOut,
    KpisOut,
    Moment,
    OverviewOut,
    ParcelOut,
    ReviewOut,
    ThresholdOut,
    lines_of,
)
from controller.console.settings import ConsoleSettings
from controller.core.ports import AuditLog, OperatorCommands
from controller.core.users import UserDirectory
from controller.core.views import ParcelView, SiteView


def _always() -> bool:
    return True


class ParcelFinder(Protocol):
    def __call__(self, line: str | None, state: str | None, limit: int) -> Sequence[ParcelView]: ...


@dataclass
class ConsoleContext:
    """The console's collaborators and the little state it keeps itself (sessions, rates)."""

    settings: ConsoleSettings
    read: Callable[[], SiteView]
    """The site's snapshot, taken on the event loop (cheap: no I/O)."""
    commands: OperatorCommands
    audit: AuditLog
    users: UserDirectory
    lane_kinds: Mapping[str, Mapping[int, str]]
    """Each line's lanes and their kinds, from the site file."""
    parcels: ParcelFinder
    """Open parcels by line and state, oldest first."""
    clock: Callable[[], float]
    """The controller's clock."""
    speed: float = 1.0
    """Controller-clock seconds per wall second: countdowns are shown in wall seconds."""
    images: ImageShelf | None = None
    ready: Callable[[], bool] = _always
    thresholds: Mapping[str, ThresholdOut] = field(default_factory=dict)
    """The policy's clear and alarm thresholds per X-ray class, shown beside the scores."""
    sessions: Sessions = field(init=False)
    broadcaster: Broadcaster = field(init=False)
    _rates: LaneRates = field(init=False)

    def __post_init__(self) -> None:
        limiter = LoginLimiter(self.settings.login_attempts_per_min)
        self.sessions = Sessions(self.users, timedelta(hours=self.settings.session_h), limiter)
        self.broadcaster = Broadcaster(
            lambda: self.fresh()[1], self.settings.live_every_s, self.settings.live_clients
        )
        self._rates = LaneRates(span_s=60.0)
        self._latest: tuple[float, OverviewOut, bytes] | None = None

    def current(self) -> tuple[OverviewOut, bytes]:
        """The overview and its JSON, taken at most one live tick ago: however many clients
        poll the API, the site is read and serialised once per tick."""
        latest = self._latest
        if latest is None or time.monotonic() - latest[0] >= self.settings.live_every_s:
            return self.fresh()
        return latest[1], latest[2]

    def fresh(self) -> tuple[OverviewOut, bytes]:
        """The overview now, and its JSON (kept for :meth:`current`)."""
        overview = self.overview()
        encoded = overview.model_dump_json().encode()
        self._latest = (time.monotonic(), overview, encoded)
        return overview, encoded

    def moment(self) -> Moment:
        return Moment(self.clock(), datetime.now(UTC), self.speed)

    def overview(self) -> OverviewOut:
        """The floor now, as the overview page and the live stream show it."""
        view = self.read()
        now = view.controller.clock_s
        at = Moment(now, datetime.now(UTC), self.speed)
        kpis = view.kpis
        rates = self._rates.update(now / self.speed, kpis.by_lane)  # parcels per wall minute
        images = self.images
        forwarder = view.forwarder
        return OverviewOut(
            site=view.site,
            clock_s=now,
            taken_at=at.wall,
            speed=self.speed,
            kpis=KpisOut.of(kpis),
            lines=lines_of(view, self.lane_kinds, rates),
            links={name: str(state) for name, state in view.links.items()},
            alarms=[AlarmOut.of(alarm, at) for alarm in view.alarms],
            reviews=[
                ReviewOut.of(
                    r, at, self.thresholds, images.energies(r.hawb, r.tracking_id) if images else 0
                )
                for r in view.reviews
            ],
            open_parcels=view.open_parcels,
            oldest_open=[ParcelOut.of(p, at) for p in view.controller.oldest_open],
            holds=len(view.holds),
            journal_rows=view.journal_rows,
            forwarder=None
            if forwarder is None
            else ForwarderOut(
                connected=forwarder.connected,
                last_error=forwarder.last_error,
                backlog=forwarder.backlog,
                shipped_total=forwarder.shipped_total,
            ),
            plant=dict(view.plant),
        )
