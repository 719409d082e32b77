"""Checking what arrives from a PLC: duplicates, sequence faults and malformed values.

Every controller-side sorter adapter runs telegrams through :class:`SequenceGuard` and
:func:`check_slot`, so the in-process sorter, OPC UA and Modbus behave the same: a duplicate
is dropped quietly, a malformed destination request is still delivered with ``fault`` set (the
core sends it to exception), a malformed divert confirmation is delivered as lost tracking
(the parcel goes to exception), and nothing stops the adapter.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

from controller.core.domain import DestinationRequest, DivertConfirmation, DivertStatus, Telegram
from controller.core.ports import AlarmSink
from plc_adapters.layout import BARCODE_BYTES, TelegramKind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawTelegram:
    """One telegram slot as the PLC wrote it, before any checking."""

    seq: int
    kind: int
    tracking_id: int
    scan_ms: int = 0
    lane: int = 0
    status: int = 0
    barcode: bytes = b""


class Verdict(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    BACKWARDS = "backwards"
    GAP = "gap"


class SequenceGuard:
    """Classifies telegram sequence numbers against the last one delivered.

    ``seq == last + 1`` is new; an already delivered ``seq`` with the same content is a
    duplicate; a lower ``seq`` with other content went backwards (a fault, and ``last`` stays);
    a jump ahead is a gap (telegrams were lost; ``last`` moves on). Remembers ``memory``
    recent telegrams to tell duplicates from faults.
    """

    def __init__(self, memory: int = 4096) -> None:
        self.last: int | None = None
        self._recent: OrderedDict[int, Hashable] = OrderedDict()
        self._memory = memory

    def check(self, seq: int, content: Hashable) -> Verdict:
        if self.last is None or seq == self.last + 1:
            self._accept(seq, content)
            return Verdict.NEW
        if seq <= self.last:
            return Verdict.DUPLICATE if self._recent.get(seq) == content else Verdict.BACKWARDS
        self._accept(seq, content)
        return Verdict.GAP

    def reset(self) -> None:
        """Forget the numbering (the PLC restarted its counters)."""
        self.last = None
        self._recent.clear()

    def _accept(self, seq: int, content: Hashable) -> None:
        self.last = seq
        self._recent[seq] = content
        while len(self._recent) > self._memory:
            self._recent.popitem(last=False)


def barcode_fault(raw: bytes) -> str:
    """Why a barcode field is malformed, or "" when it is printable ASCII (or empty)."""
    if len(raw) > BARCODE_BYTES:
        return f"barcode is {len(raw)} bytes, expected at most {BARCODE_BYTES}"
    for position, byte in enumerate(raw):
        if not 0x20 <= byte <= 0x7E:
            return (
                f"barcode byte {position} is 0x{byte:02X}, expected printable ASCII "
                "(0x20..0x7E, NUL padding only at the end)"
            )
    return ""


def slot_fault(raw: RawTelegram) -> str:
    """Why a telegram slot's values are malformed, or "" when they are well formed."""
    if raw.kind == TelegramKind.DESTINATION_REQUEST:
        return barcode_fault(raw.barcode)
    if raw.kind == TelegramKind.DIVERT_CONFIRMATION:
        if raw.lane == 0:
            return "confirmation lane is 0, expected a lane id 1..65535"
        if raw.status not in {s.value for s in DivertStatus}:
            return f"confirmation status is {raw.status}, expected 0..{max(DivertStatus)}"
        return ""
    return f"telegram kind is {raw.kind}, expected 1 (request) or 2 (confirmation)"


class TelegramChecker:
    """Turns raw slots into telegrams for the core, exactly once, reporting every fault.

    A fault is logged with the line, sequence number, field, value and what was expected, and
    raised as the alarm ``<line>/malformed-telegram`` (lost telegrams: ``<line>/telegrams-lost``),
    cleared by the next well-formed telegram.
    """

    def __init__(self, line: str, alarms: AlarmSink | None = None) -> None:
        self.line = line
        self.alarms = alarms
        self.guard = SequenceGuard()
        self.duplicates = 0
        self.faults = 0
        self.lost = 0
        self._malformed_active = False
        self._lost_active = False

    def admit(self, raw: RawTelegram, scan_time: float) -> Telegram | None:
        """The telegram to deliver for ``raw``, or None for a duplicate."""
        last = self.guard.last
        verdict = self.guard.check(raw.seq, raw)
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
            log.info("line %s: duplicate telegram seq %d ignored", self.line, raw.seq)
            return None
        fault = slot_fault(raw)
        if verdict is Verdict.BACKWARDS:
            fault = f"sequence number went backwards: {raw.seq} after {last}" + (
                f"; {fault}" if fault else ""
            )
        elif verdict is Verdict.GAP and last is not None:
            missing = raw.seq - last - 1
            self.lost += missing
            message = f"{missing} telegram(s) lost: seq {last + 1}..{raw.seq - 1} never arrived"
            log.error("line %s: %s", self.line, message)
            self._raise("telegrams-lost", message)
            self._lost_active = True
        if fault:
            self.faults += 1
            message = f"malformed telegram seq {raw.seq} tracking id {raw.tracking_id}: {fault}"
            log.error("line %s: %s; the parcel goes to exception", self.line, message)
            self._raise("malformed-telegram", message)
            self._malformed_active = True
        elif verdict is Verdict.NEW:
            self._clear()
        return _telegram(self.line, raw, scan_time, fault)

    def _raise(self, what: str, message: str) -> None:
        if self.alarms is not None:
            self.alarms.alarm(f"{self.line}/{what}", message, active=True)

    def _clear(self) -> None:
        for what, active in (
            ("malformed-telegram", self._malformed_active),
            ("telegrams-lost", self._lost_active),
        ):
            if active and self.alarms is not None:
                self.alarms.alarm(
                    f"{self.line}/{what}", "well-formed telegrams again", active=False
                )
        self._malformed_active = self._lost_active = False


def _telegram(line: str, raw: RawTelegram, scan_time: float, fault: str) -> Telegram:
    if raw.kind == TelegramKind.DIVERT_CONFIRMATION:
        status = DivertStatus.LOST_TRACKING if fault else DivertStatus(raw.status)
        return DivertConfirmation(line, raw.seq, raw.tracking_id, raw.lane, status)
    barcode = raw.barcode.decode("ascii", errors="replace")
    return DestinationRequest(line, raw.seq, raw.tracking_id, barcode, scan_time, fault)
