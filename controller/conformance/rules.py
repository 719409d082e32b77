"""Every rule of the conformance kit, by port: the names checklist files list.

A rule is one promise of a port's contract (:mod:`controller.core.ports`), checked by one test
of that port's suite. The names are stable: a checklist file names them, so renaming one is a
breaking change for every integrator's checklist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: its port, its name within the port, and what it checks in one line."""

    port: str
    name: str
    title: str

    def __str__(self) -> str:
        return f"{self.port}:{self.name}"


# --- sorter (controller.core.ports.SorterPort) -----------------------------------------------

SORTER = "sorter"
SORTER_BURST = Rule(
    SORTER,
    "burst",
    "a burst of 1,000 telegrams arrives in PLC order, each exactly once; every reply reaches "
    "the PLC exactly once",
)
SORTER_SCAN_TIME = Rule(
    SORTER,
    "scan-time",
    "a request's scan time is never later than the real scan, and less than 0.5 s earlier",
)
SORTER_DUPLICATES = Rule(SORTER, "duplicates", "a telegram the PLC sends again is delivered once")
SORTER_MALFORMED = Rule(
    SORTER,
    "malformed",
    "malformed values arrive as faults (a request with its fault, a confirmation as lost "
    "tracking), raise <line>/malformed-telegram once, and the adapter keeps running",
)
SORTER_LANE_STATUS = Rule(SORTER, "lane-status", "the PLC's lane status words reach the controller")
SORTER_RESTART = Rule(
    SORTER,
    "restart",
    "the PLC's server restarted mid-burst: the link comes back, nothing lost or doubled",
)
SORTER_CONTROLLER_HEARTBEAT = Rule(
    SORTER,
    "controller-heartbeat",
    "the controller's heartbeat stops: the PLC defaults parcels, <line>/plc-safe-state is "
    "raised once and cleared once",
)
SORTER_PLC_HEARTBEAT = Rule(
    SORTER,
    "plc-heartbeat",
    "the PLC's heartbeat stops: health shows it, <line>/plc-heartbeat is raised once and "
    "cleared once",
)
SORTER_MAILBOX = Rule(
    SORTER,
    "mailbox-full",
    "a full PLC mailbox holds telegrams in order; <line>/plc-mailbox-full is raised and cleared",
)

# --- X-ray (controller.core.ports.XrayPort) --------------------------------------------------

XRAY = "xray"
XRAY_SCORES = Rule(
    XRAY, "scores", "a readable image is scored: status ok, scores in [0, 1], a model version"
)
XRAY_BAD_IMAGE = Rule(
    XRAY, "bad-image", "an unreadable image comes back as a bad_image result with a reason"
)
XRAY_MISSING_IMAGE = Rule(
    XRAY, "missing-image", "no image comes back as a missing result with a reason"
)
XRAY_CANCEL = Rule(
    XRAY,
    "cancel-at-deadline",
    "an analysis cancelled at the parcel's deadline ends at once, cancelled; the next is scored",
)
XRAY_CONCURRENT = Rule(
    XRAY,
    "concurrent-answers",
    "parcels analysed together get the answers each gets alone (none swapped)",
)
XRAY_NO_BLOCKING = Rule(
    XRAY, "no-blocking", "the costliest analyses never block the event loop for 0.25 s"
)

# --- image sources (an intake source feeding controller.core.ports.ImageSource) --------------

IMAGES = "images"
IMAGES_DELIVERED = Rule(
    IMAGES,
    "delivered",
    "an image reaches its parcel with its pixels, whether the parcel asks first or the image "
    "comes first",
)
IMAGES_UNMATCHED_KEPT = Rule(
    IMAGES,
    "unmatched-kept",
    "an image no parcel claims is quarantined with its pixels and a reason, and an alarm",
)
IMAGES_BAD_REPORTED = Rule(
    IMAGES,
    "bad-reported",
    "a damaged image reaches its parcel as an error, is quarantined with a reason, raises its "
    "fault's alarm; the source keeps running",
)
IMAGES_KEYLESS_KEPT = Rule(
    IMAGES,
    "keyless-kept",
    "an image that names no parcel is quarantined with a reason, never dropped",
)
IMAGES_STOPS = Rule(IMAGES, "stops", "a running source stops within 5 s of its cancellation")
IMAGES_NO_BLOCKING = Rule(
    IMAGES, "no-blocking", "large images never block the event loop for 0.25 s"
)

# --- risk (a risk feed, read through controller.core.ports.RiskSource) -----------------------

RISK = "risk"
RISK_KNOWN = Rule(
    RISK, "known-hawb", "each published record is looked up as its channel, score, goods, flight"
)
RISK_UNKNOWN = Rule(
    RISK,
    "unknown-hawb",
    "a HAWB never published (or one differing by letter case or spaces) looks up as None",
)
RISK_BAD_ROWS = Rule(
    RISK,
    "bad-rows",
    "each bad record is reported at its line (or record) number with its field; the good "
    "records of the same manifest still load",
)
RISK_NEW_ONLY = Rule(
    RISK, "new-only", "a fetch hands out only what is new since the previous fetch"
)
RISK_OUTAGE = Rule(
    RISK,
    "outage",
    "an unreachable source comes back as a problem without a line, never an exception; the "
    "records load once it is back",
)
RISK_NO_BLOCKING = Rule(
    RISK, "no-blocking", "fetching 50,000 records never blocks the event loop for 0.25 s"
)

RULES: Mapping[str, tuple[Rule, ...]] = {
    SORTER: (
        SORTER_BURST,
        SORTER_SCAN_TIME,
        SORTER_DUPLICATES,
        SORTER_MALFORMED,
        SORTER_LANE_STATUS,
        SORTER_RESTART,
        SORTER_CONTROLLER_HEARTBEAT,
        SORTER_PLC_HEARTBEAT,
        SORTER_MAILBOX,
    ),
    XRAY: (
        XRAY_SCORES,
        XRAY_BAD_IMAGE,
        XRAY_MISSING_IMAGE,
        XRAY_CANCEL,
        XRAY_CONCURRENT,
        XRAY_NO_BLOCKING,
    ),
    IMAGES: (
        IMAGES_DELIVERED,
        IMAGES_UNMATCHED_KEPT,
        IMAGES_BAD_REPORTED,
        IMAGES_KEYLESS_KEPT,
        IMAGES_STOPS,
        IMAGES_NO_BLOCKING,
    ),
    RISK: (RISK_KNOWN, RISK_UNKNOWN, RISK_BAD_ROWS, RISK_NEW_ONLY, RISK_OUTAGE, RISK_NO_BLOCKING),
}
"""The rules of each port's suite, in the order the suite plays them."""

PORTS: tuple[str, ...] = tuple(RULES)


F = TypeVar("F", bound=Callable[..., object])


def covers(rule: Rule) -> Callable[[F], F]:
    """Mark a suite's test as the one that plays ``rule`` (the plugin reports it by rule)."""

    def mark(test: F) -> F:
        setattr(test, RULE_ATTRIBUTE, rule)
        return test

    return mark


RULE_ATTRIBUTE = "cargogate_rule"


def rule_of(test: object) -> Rule | None:
    """The rule ``test`` plays, if it is one of the kit's tests."""
    rule = getattr(test, RULE_ATTRIBUTE, None)
    return rule if isinstance(rule, Rule) else None
