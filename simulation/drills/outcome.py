"""The outcome checker: what the emulated PLCs sent and applied, against what the journal holds.

A drill's plant writes a :class:`Ledger` as it plays the belt: every parcel the PLC asked a
destination for, and at each divert the lane it applied and the controller reply that steered
it (if one did). :func:`check` reads the journal(s) of the controller(s) and compares:

* every parcel the PLC sent ends in exactly one terminal state, or is open with a reason
  (waiting at inspection for an officer's result);
* none is opened twice, closed twice or decided more often than it came round;
* the journal holds no parcel the PLC never sent, and no row of a parcel without its first scan;
* every divert the PLC applied from a controller reply has that decision in the journal, and
  no release was decided without positive evidence (fail secure under every fault);
* each alarm source is raised and cleared in turn, and stays raised at the end only where the
  drill documents why (:class:`AlarmSpec`).

Parcels are told apart by line, tracking id and HAWB (tracking ids come back after a PLC cold
start); a parcel the PLC sent malformed is matched on its line and tracking id alone.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.core.domain import DestinationReply, DivertStatus, EntryKind
from controller.core.lifecycle import ParcelState
from controller.store.openset import opens_parcel, parcel_change
from controller.store.read import read_entries

_ALARM = EntryKind.ALARM.value
_DECISION = EntryKind.DECISION.value
_DECIDED = ParcelState.DECIDED.value
_RELEASE = "release"
OPEN_REASONS: Mapping[ParcelState, str] = {
    ParcelState.IN_INSPECTION: "awaiting the officer's result",
}
"""The open states a parcel may rest in when the drill ends, and why that is sound."""


@dataclass(slots=True)
class Divert:
    """One pass of a parcel at its divert point, as the PLC applied it."""

    lane: int
    status: DivertStatus | None
    """What the PLC confirmed; None when it had forgotten the parcel and confirmed nothing."""
    reply: DestinationReply | None = None
    """The controller's reply that steered this divert, when one did."""


@dataclass(slots=True)
class SentParcel:
    """A parcel the PLC asked a destination for (once per lap)."""

    line: str
    tracking_id: int
    barcode: str
    malformed: bool = False
    """Sent with a malformed request: the journal's HAWB may differ, matched by tracking id."""
    requests: int = 0
    seqs: list[int] = field(default_factory=list)
    """The sequence numbers of its destination requests, one per lap."""
    diverts: list[Divert] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.line} tracking id {self.tracking_id} ({self.barcode or 'no read'})"


class Ledger:
    """Everything the drill's plant made the PLCs do, in the order it happened."""

    def __init__(self) -> None:
        self.parcels: list[SentParcel] = []

    def add(self, line: str, tracking_id: int, barcode: str, malformed: bool = False) -> SentParcel:
        parcel = SentParcel(line, tracking_id, barcode, malformed)
        self.parcels.append(parcel)
        return parcel


@dataclass(frozen=True)
class AlarmSpec:
    """What a drill expects of the alarm sources (``fnmatch`` patterns such as ``*/plc-link``).

    ``expected``: each pattern must be raised this many times in all (None: at least once);
    ``open_ok``: sources that may still be raised at the end, with why; ``tolerated``: sources
    whose raising depends on timing (raised and cleared in turn, or not at all). Any other
    source is unexpected.
    """

    expected: Mapping[str, int | None] = field(default_factory=dict)
    open_ok: Mapping[str, str] = field(default_factory=dict)
    tolerated: tuple[str, ...] = ()


@dataclass(slots=True)
class Life:
    """One parcel's rows in one journal, from its first scan on."""

    journal: str
    line: str
    tracking_id: int
    hawb: str
    headless: bool = False
    """Its first rows came without a first scan (the scan row was lost)."""
    state: ParcelState | None = None
    terminal_rows: int = 0
    decided_lanes: list[int] = field(default_factory=list)
    unfounded_release: bool = False
    """A release was decided without positive evidence (no GREEN risk, no clean X-ray)."""
    claimed: bool = False


@dataclass
class Findings:
    """What :func:`check` found: the counts of the one-line summary and every problem."""

    parcels: int = 0
    closed: int = 0
    open_reasons: Counter[str] = field(default_factory=Counter)
    missing: int = 0
    doubled: int = 0
    phantom: int = 0
    steered: int = 0
    steered_journalled: int = 0
    raised: int = 0
    cleared: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """The drill's own figures for the summary (rows shipped, sessions restarted ...)."""

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.open_reasons.items()))
        opened = sum(self.open_reasons.values())
        return (
            f"{self.parcels} parcels: {self.closed} closed, {opened} open"
            + (f" ({reasons})" if reasons else "")
            + f"; {self.missing} missing, {self.doubled} doubled, {self.phantom} phantom; "
            f"{self.steered_journalled}/{self.steered} applied replies journalled; "
            f"alarms {self.raised} raised, {self.cleared} cleared"
            + "".join(f"; {note}" for note in self.notes)
        )


def read_journals(journals: Mapping[str, Path], site: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of ``site`` in each journal (by name), in ``seq`` order."""
    return {name: read_entries(path, site) for name, path in journals.items()}


def check(
    ledger: Ledger,
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    alarms: AlarmSpec | Mapping[str, AlarmSpec],
) -> Findings:
    """Compare the ledger with the journals' rows (see the module docstring); ``alarms`` is
    one spec for every journal, or one per journal name."""
    found = Findings(parcels=len(ledger.parcels))
    lives = _lives(rows)
    by_key: dict[tuple[str, int, str], list[Life]] = {}
    by_id: dict[tuple[str, int], list[Life]] = {}
    for life in lives:
        by_key.setdefault((life.line, life.tracking_id, life.hawb), []).append(life)
        by_id.setdefault((life.line, life.tracking_id), []).append(life)
    matched = [_claim(p, by_key, by_id) for p in ledger.parcels if not p.malformed]
    matched += [_claim(p, by_key, by_id) for p in ledger.parcels if p.malformed]
    for parcel, own in matched:
        _check_parcel(parcel, own, found)
    for life in lives:
        if not life.claimed:
            found.phantom += 1
            found.problems.append(
                f"{life.line} tracking id {life.tracking_id} ({life.hawb}): in journal "
                f"{life.journal!r}, but the PLC never sent that parcel"
            )
    for journal, entries in rows.items():
        spec = alarms if isinstance(alarms, AlarmSpec) else alarms.get(journal, AlarmSpec())
        _check_alarms(journal, entries, spec, found)
    return found


def _lives(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Life]:
    lives: list[Life] = []
    for journal, entries in rows.items():
        current: dict[tuple[str, int, str], Life] = {}
        for row in entries:
            kind = str(row["kind"])
            if kind == _ALARM:
                continue
            key = (str(row["line"]), int(row["tracking_id"]), str(row["hawb"]))
            state = parcel_change(kind, str(row["state_to"]), row["data"])
            if state is not None and opens_parcel(str(row["state_from"]), state):
                life = current[key] = Life(journal, *key)
                lives.append(life)
            else:
                life = current.get(key) or Life(journal, *key, headless=True)
                if key not in current:
                    current[key] = life
                    lives.append(life)
            if state is not None:
                life.state = state
                life.terminal_rows += state.terminal
            if kind == _DECISION and row["state_to"] == _DECIDED and row["lane"] is not None:
                life.decided_lanes.append(int(row["lane"]))
                if row["destination"] == _RELEASE and not _release_evidence(row["data"]):
                    life.unfounded_release = True
    return lives


def _release_evidence(data: Mapping[str, Any] | None) -> bool:
    """Whether a release decision rests on positive evidence: a risk result that is not RED
    (GREEN, or cleared by an officer's review) and X-ray scores."""
    data = data or {}
    risk, xray = data.get("risk") or {}, data.get("xray") or {}
    channel = risk.get("channel")
    return (
        xray.get("status") == "ok"
        and channel in ("GREEN", "YELLOW")
        and (channel == "GREEN" or data.get("review") == "clear")
    )


def _claim(
    parcel: SentParcel,
    by_key: Mapping[tuple[str, int, str], list[Life]],
    by_id: Mapping[tuple[str, int], list[Life]],
) -> tuple[SentParcel, list[Life]]:
    """The lives of ``parcel``: those with its HAWB, or for a malformed request the unclaimed
    ones on its tracking id."""
    if parcel.malformed:
        candidates = by_id.get((parcel.line, parcel.tracking_id), [])
    else:
        candidates = by_key.get((parcel.line, parcel.tracking_id, parcel.barcode), [])
    own = [life for life in candidates if not life.claimed]
    for life in own:
        life.claimed = True
    return parcel, own


def _check_parcel(parcel: SentParcel, lives: list[Life], found: Findings) -> None:
    problems = found.problems
    if not lives:
        found.missing += 1
        problems.append(f"{parcel}: sent by the PLC, not in any journal")
        return
    doubled = len(lives) > 1
    if doubled:
        where = ", ".join(sorted({life.journal for life in lives}))
        problems.append(f"{parcel}: opened {len(lives)} times (journals: {where})")
    headless = [life for life in lives if life.headless]
    if headless:
        found.missing += 1
        problems.append(f"{parcel}: journalled without its first scan")
    terminal = sum(life.terminal_rows for life in lives)
    if terminal > 1:
        doubled = True
        problems.append(f"{parcel}: reached a terminal state {terminal} times")
    decided = [lane for life in lives for lane in life.decided_lanes]
    if len(decided) > max(parcel.requests, 1):
        doubled = True
        problems.append(f"{parcel}: decided {len(decided)} times in {parcel.requests} request(s)")
    found.doubled += doubled
    if any(life.unfounded_release for life in lives):
        problems.append(f"{parcel}: released without positive evidence (fail-secure broken)")
    state = lives[-1].state
    if state is not None and state.terminal:
        found.closed += 1
    elif state is not None and state in OPEN_REASONS:
        found.open_reasons[OPEN_REASONS[state]] += 1
    else:
        shown = state.value if state is not None else "unknown"
        found.open_reasons["no reason"] += 1
        problems.append(f"{parcel}: open in state {shown} with no reason to wait")
    for divert in parcel.diverts:
        if divert.reply is None:
            continue
        found.steered += 1
        if divert.reply.lane in decided:
            found.steered_journalled += 1
        else:
            problems.append(
                f"{parcel}: the PLC diverted it to lane {divert.reply.lane} on a controller "
                "reply that has no decision in the journal"
            )


def _check_alarms(
    journal: str, entries: Sequence[Mapping[str, Any]], spec: AlarmSpec, found: Findings
) -> None:
    history: dict[str, list[bool]] = {}
    for row in entries:
        if row["kind"] != _ALARM:
            continue
        data = row["data"] or {}
        source = data.get("source")
        if not source:
            found.problems.append(
                f"alarm event in journal {journal!r}: {data.get('message', '?')} "
                f"({row['line']} tracking id {row['tracking_id']})"
            )
            continue
        history.setdefault(str(source), []).append(row["state_to"] == "active")
    known = (*spec.expected, *spec.open_ok, *spec.tolerated)
    for source, states in history.items():
        raised = sum(states)
        found.raised += raised
        found.cleared += len(states) - raised
        for before, after in zip([False, *states], states, strict=False):
            if before == after:
                word = "raised" if after else "cleared"
                found.problems.append(f"alarm {source}: {word} twice in a row ({journal!r})")
                break
        if states[-1] and not _matches(source, spec.open_ok):
            found.problems.append(f"alarm {source}: still raised at the end ({journal!r})")
        if not _matches(source, known):
            found.problems.append(f"alarm {source}: not expected in this drill ({journal!r})")
    for pattern, count in spec.expected.items():
        n = sum(
            sum(states)
            for source, states in history.items()
            if fnmatch.fnmatchcase(source, pattern)
        )
        if (count is None and n == 0) or (count is not None and n != count):
            wanted = "at least once" if count is None else f"{count} time(s)"
            found.problems.append(
                f"alarm {pattern}: raised {n} time(s) in {journal!r}, expected {wanted}"
            )


def _matches(source: str, patterns: Mapping[str, object] | Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(source, pattern) for pattern in patterns)
