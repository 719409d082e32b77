"""What a sorter PLC does with a destination reply at the divert point, stated once.

The contract for the PLC programmer is ``docs/plc-interface.md``: section 5 (PLC duties per
parcel), section 6 (timeouts and failure behaviour), section 3.7 (divert status) and
section 11 (this module). Every party that plays the PLC applies these functions instead of
its own copy, so they cannot drift apart: the emulated PLC behind OPC UA and Modbus
(:mod:`plc_adapters.emulator`), the in-process sorter when it is given a clock
(:mod:`plc_adapters.inprocess`) and the digital twin's plant (:mod:`simulation.plant`).

Plain inputs, plain outputs, no state and no I/O (standard library and ``controller.core``
only), so each rule is a function call in a test. The per-parcel functions allocate nothing:
the twin calls them for every parcel of a day-long run.

The order in which a PLC applies the rules at a divert (:func:`disposition`):

1. lost tracking → the default lane, ``LOST_TRACKING``;
2. no reply credited, controller heartbeat lost (safe state), a lane that is not the line's,
   or the PLC's own lap limit passed → the default lane, ``DEFAULTED``;
3. at the replied lane: the parcel passed its divert → ``MISSED``; the lane is not available
   (full, blocked, or an unknown status word) → ``LANE_FULL``; otherwise ``DIVERTED``.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Protocol

from controller.core.domain import DivertStatus, LaneKind, LaneStatus

__all__ = [
    "PLC_SPARE_LAPS",
    "RECIRCULATING",
    "LaneTable",
    "at_divert",
    "decision_point",
    "default_lane",
    "disposition",
    "heartbeat_lost",
    "lap_limit_passed",
    "recirculates",
    "reply_credited",
    "steer",
]

PLC_SPARE_LAPS = 2
"""Laps beyond the line's ``lap_limit`` that the PLC lets a parcel circle before it stops
recirculating on its own (section 11): the controller sends a parcel at its lap limit to
exception, so this only catches a controller that never does."""

RECIRCULATING = frozenset({DivertStatus.MISSED, DivertStatus.LANE_FULL})
"""Statuses after which the parcel goes round again and is requested again (section 5, item 4)."""


class _Lane(Protocol):
    @property
    def id(self) -> int: ...


class LaneTable(Protocol):
    """What :func:`default_lane` reads of a line: its lanes by kind. A
    :class:`controller.core.settings.Line` is one; stated here so the rules load no pydantic."""

    def lanes_of(self, kind: LaneKind) -> Sequence[_Lane]: ...


_AVAILABLE = LaneStatus.AVAILABLE
_DIVERTED, _MISSED, _LANE_FULL = DivertStatus.DIVERTED, DivertStatus.MISSED, DivertStatus.LANE_FULL
_DEFAULTED, _LOST = DivertStatus.DEFAULTED, DivertStatus.LOST_TRACKING


def default_lane(line: LaneTable) -> int:
    """The lane a parcel takes when no reply steers it: the line's first exception lane
    (section 5, item 3, "the default lane (the line's exception lane)")."""
    return line.lanes_of(LaneKind.EXCEPTION)[0].id


def decision_point(scan_time: float, decision_window_s: float) -> float:
    """The last moment a reply counts for a parcel: its scan time plus the line's decision
    window (scan-to-divert travel time minus the PLC's reaction margin; section 5, item 2)."""
    return scan_time + decision_window_s


def reply_credited(replied_at: float, deadline: float) -> bool:
    """Whether a reply taken from the reply ring at ``replied_at`` counts for a parcel whose
    decision point is ``deadline`` (both on the PLC's clock): only if it arrived by then.
    A later reply is ignored; the default lane stands (section 5, item 3, section 6 "reply late").
    A NaN deadline (a parcel not yet scanned) credits nothing."""
    return replied_at <= deadline


def heartbeat_lost(now: float, changed_at: float, timeout_s: float) -> bool:
    """Whether the controller's heartbeat counter, unchanged since ``changed_at``, has stalled
    for longer than the timeout: the PLC is then in its safe state and sends every parcel to
    the default lane (sections 4.3 and 6)."""
    return now - changed_at > timeout_s


def lap_limit_passed(laps: int, lap_limit: int) -> bool:
    """Whether a parcel that has recirculated ``laps`` times has passed the PLC's own lap
    limit, ``lap_limit + PLC_SPARE_LAPS``: it then goes to the default lane whatever the reply
    says (section 11)."""
    return laps > lap_limit + PLC_SPARE_LAPS


def steer(
    reply_lane: int | None,
    lanes: Container[int],
    heartbeat_alive: bool,
    laps: int,
    lap_limit: int,
) -> int | None:
    """The lane the PLC steers a parcel to at its divert, or None for the default lane with
    ``DEFAULTED`` (section 5, item 3).

    ``reply_lane`` is the lane of the reply credited to the parcel (:func:`reply_credited`),
    None if none was. The reply is used only if the controller heartbeat is alive, the lane
    is one of the line's ``lanes`` and the parcel has not passed the PLC's own lap limit.
    """
    if (
        reply_lane is None
        or not heartbeat_alive
        or reply_lane not in lanes
        or lap_limit_passed(laps, lap_limit)
    ):
        return None
    return reply_lane


def at_divert(missed: bool, lane_status: int) -> DivertStatus:
    """What happens at the divert of the lane the PLC steered the parcel to (sections 3.7
    and 5.3): ``MISSED`` if the parcel passed its divert point undiverted (a physical miss the
    PLC detects), else ``LANE_FULL`` if the lane's status word is not "available" (full,
    blocked, or a value outside 0…2, which counts as blocked; the parcel is aborted to
    recirculation), else ``DIVERTED``."""
    if missed:
        return _MISSED
    if lane_status != _AVAILABLE:
        return _LANE_FULL
    return _DIVERTED


def recirculates(status: DivertStatus) -> bool:
    """Whether the parcel goes round again after this divert status (section 5, item 4): it is
    requested again on its next lap, with the same tracking id."""
    return status in RECIRCULATING


def disposition(
    reply_lane: int | None,
    default: int,
    lanes: Container[int],
    lane_status: Mapping[int, int],
    *,
    lap_limit: int,
    heartbeat_alive: bool = True,
    laps: int = 0,
    missed: bool = False,
    tracking_lost: bool = False,
) -> tuple[int, DivertStatus]:
    """Where a parcel goes at its divert and the status its confirmation reports: every rule
    of sections 5 and 6 in their order (see the module docstring).

    ``default`` is the line's default lane (:func:`default_lane`); ``lane_status`` maps lane
    ids to status words (a lane missing from it counts as available). A parcel whose tracking
    the PLC lost goes to the default lane with ``LOST_TRACKING`` (section 5, item 5). Callers on a
    hot path that draw ``missed`` lazily use :func:`steer` and :func:`at_divert` directly.
    """
    if tracking_lost:
        return default, _LOST
    lane = steer(reply_lane, lanes, heartbeat_alive, laps, lap_limit)
    if lane is None:
        return default, _DEFAULTED
    return lane, at_divert(missed, lane_status.get(lane, _AVAILABLE))
