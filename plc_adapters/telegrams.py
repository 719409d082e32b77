"""Checking what arrives from a PLC: duplicates, sequence faults and malformed values.

Every controller-side sorter adapter runs telegrams through :class:`TelegramChecker`
(:class:`SequenceGuard` for the numbering, :func:`slot_fault` for the values), so the
in-process sorter, OPC UA and Modbus behave the same: a duplicate is dropped quietly, a
malformed destination request is still delivered with ``fault`` set (the core sends it to
exception), a malformed divert confirmation is delivered as lost tracking (the parcel goes to
exception), a telegram of unknown kind is reported and skipped, and nothing stops the adapter.
Sequence numbers are compared modulo 2**32 (docs/plc-interface.md, section 6.1). A barcode
reaches the core as :func:`plc_adapters.barcodes.barcode_text`, which keeps every byte (a NUL or
a non-ASCII byte is malformed, but the journal still gets the parcel's row with its bytes).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

from controller.core.domain import DestinationRequest, DivertConfirmation, DivertStatus, Telegram
from controller.core.ports import AlarmSink
from plc_adapters.barcodes import barcode_text
from plc_adapters.layout import (
    BARCODE_BYTES,
    BARCODE_TOO_LONG,
    TelegramKind,
    u32_add,
    u32_diff,
)

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
    RESYNC = "resync"
    """A run of telegrams that looked backwards continued long enough: the PLC renumbered, and
    the guard follows its numbering from this telegram on."""
    RESUMED = "resumed"
    """The PLC continued the numbering from before the last forward jump: the jump was one
    telegram out of line, and the numbering goes on from here."""


SEQ_MODULUS = 1 << 32
RESYNC_AFTER = 3
"""Telegrams in a row, each one after the other, that must look backwards before the guard
takes them as the PLC's new numbering (docs/plc-interface.md, section 6.1)."""


class SequenceGuard:
    """Classifies telegram sequence numbers against the last one delivered, modulo 2**32.

    Serial-number arithmetic (docs/plc-interface.md, section 6.1), with ``d = (seq - last) mod
    2**32``: ``d == 1`` is new; ``1 < d < 2**31`` is a jump ahead (a gap: telegrams were lost;
    ``last`` moves on); anything else is behind. Behind with the content already delivered
    under that number is a duplicate; behind with other content went backwards (a fault;
    ``last`` stays), unless it is ``last-before-the-jump + 1`` just after a jump (the jumped
    telegram was the one out of line: :attr:`Verdict.RESUMED`) or the ``resync_after``-th of
    a run of consecutive numbers that all looked backwards (the PLC renumbered:
    :attr:`Verdict.RESYNC`). So neither a wrap, nor one wild number, nor a renumbering PLC can
    turn every later telegram into a fault. Remembers ``memory`` recent telegrams to tell
    duplicates from faults.
    """

    def __init__(self, memory: int = 4096, resync_after: int = RESYNC_AFTER) -> None:
        if resync_after < 1:
            raise ValueError(f"resync_after must be at least 1, got {resync_after}")
        self.last: int | None = None
        self.resync_after = resync_after
        self.jump: tuple[int, int] | None = None
        """(last before the jump, the jumped number) until a telegram confirms the jump."""
        self._recent: OrderedDict[int, Hashable] = OrderedDict()
        self._memory = memory
        self._run: list[tuple[int, Hashable]] = []  # consecutive numbers that looked backwards

    def check(self, seq: int, content: Hashable) -> Verdict:
        if self.last is None:
            self._accept(seq, content)
            return Verdict.NEW
        d = u32_diff(seq, self.last)
        if d == 1:
            self._accept(seq, content)
            return Verdict.NEW
        if d > 1:
            before = self.last
            self._accept(seq, content)
            self.jump = (before, seq)
            return Verdict.GAP
        if self._recent.get(seq) == content:
            return Verdict.DUPLICATE
        if self.jump is not None and u32_diff(seq, self.jump[0]) == 1:
            self._recent.pop(self.jump[1], None)  # that number is still to come, for real
            self._accept(seq, content)
            return Verdict.RESUMED
        if self._run and u32_diff(seq, self._run[-1][0]) == 1:
            self._run.append((seq, content))
        else:
            self._run = [(seq, content)]
        if len(self._run) < self.resync_after:
            return Verdict.BACKWARDS
        run = self._run
        self._recent.clear()  # the old numbering no longer names anything
        for number, item in run:
            self._accept(number, item)
        return Verdict.RESYNC

    @property
    def run(self) -> int:
        """How many telegrams in a row have looked backwards so far."""
        return len(self._run)

    def reset(self) -> None:
        """Forget the numbering (the PLC restarted its counters)."""
        self.last = None
        self.jump = None
        self._recent.clear()
        self._run = []

    def _accept(self, seq: int, content: Hashable) -> None:
        self.last = seq
        self.jump = None
        self._run = []
        self._recent[seq] = content
        self._recent.move_to_end(seq)
        while len(self._recent) > self._memory:
            self._recent.popitem(last=False)


def barcode_fault(raw: bytes) -> str:
    """Why a barcode field is malformed, or "" when it is printable ASCII (or empty).

    Over 32 bytes is malformed, never truncated: the first 32 characters of a longer HAWB may
    name another parcel. Over Modbus, where only 32 bytes fit, the PLC marks a longer barcode
    with 0x1A (ASCII SUB) in its last byte (docs/plc-interface.md, section 3.3)."""
    if len(raw) > BARCODE_BYTES:
        return f"barcode is {len(raw)} bytes, expected at most {BARCODE_BYTES}"
    if len(raw) == BARCODE_BYTES and raw[-1] == BARCODE_TOO_LONG:
        return (
            f"barcode is longer than {BARCODE_BYTES} bytes (the PLC marked it with 0x1A in "
            f"byte {BARCODE_BYTES - 1}), expected at most {BARCODE_BYTES}"
        )
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


def known_kind(raw: RawTelegram) -> bool:
    """Whether the slot says what it is: a request or a confirmation."""
    return raw.kind in (TelegramKind.DESTINATION_REQUEST, TelegramKind.DIVERT_CONFIRMATION)


class TelegramChecker:
    """Turns raw slots into telegrams for the core, exactly once, reporting every fault.

    A fault is logged with the line, sequence number, field, value and what was expected, and
    raised as the alarm ``<line>/malformed-telegram``; lost telegrams raise
    ``<line>/telegrams-lost``, a renumbering or an out-of-line number that the checker got
    over raises ``<line>/telegram-sequence``. Each is cleared by the next well-formed telegram
    in sequence. A telegram of unknown kind is neither a request nor a confirmation: it is
    reported as malformed and not delivered (no parcel can be told from it).
    """

    def __init__(self, line: str, alarms: AlarmSink | None = None) -> None:
        self.line = line
        self.alarms = alarms
        self.guard = SequenceGuard()
        self.duplicates = 0
        self.faults = 0
        self.lost = 0
        self.skipped = 0
        """Telegrams of unknown kind: reported, not delivered."""
        self.resyncs = 0
        self._active: set[str] = set()

    def admit(self, raw: RawTelegram, scan_time: float) -> Telegram | None:
        """The telegram to deliver for ``raw``, or None for a duplicate or an unknown kind."""
        last, jump = self.guard.last, self.guard.jump
        verdict = self.guard.check(raw.seq, raw)
        if verdict is Verdict.DUPLICATE:
            self.duplicates += 1
            log.info("line %s: duplicate telegram seq %d ignored", self.line, raw.seq)
            return None
        fault = slot_fault(raw)
        if verdict is Verdict.BACKWARDS:
            fault = (
                f"sequence number went backwards: {raw.seq} after {last} "
                f"({self.guard.run} of {self.guard.resync_after} in a row before following "
                "the PLC's numbering)"
            ) + (f"; {fault}" if fault else "")
        elif verdict is Verdict.GAP and last is not None:
            missing = u32_diff(raw.seq, last) - 1
            self.lost += missing
            first, final = u32_add(last, 1), u32_add(raw.seq, -1)
            message = f"{missing} telegram(s) lost: seq {first}..{final} never arrived"
            log.error("line %s: %s", self.line, message)
            self._raise("telegrams-lost", message)
        elif verdict is Verdict.RESUMED and jump is not None:
            before, jumped = jump
            self.lost -= u32_diff(jumped, before) - 1  # they were never lost
            message = (
                f"seq {jumped} was out of line: the PLC went on with {raw.seq} after {before}; "
                "no telegram was lost"
            )
            log.warning("line %s: %s", self.line, message)
            self._raise("telegram-sequence", message)
            self._clear("telegrams-lost", "the jump was one telegram out of line")
        elif verdict is Verdict.RESYNC:
            self.resyncs += 1
            message = (
                f"the PLC renumbered its telegrams: {self.guard.resync_after} in a row from "
                f"seq {u32_add(raw.seq, 1 - self.guard.resync_after)} after {last}; "
                "following the PLC's numbering"
            )
            log.warning("line %s: %s", self.line, message)
            self._raise("telegram-sequence", message)
        if fault:
            self.faults += 1
            if not known_kind(raw):
                self.skipped += 1
                outcome = "not delivered (neither a request nor a confirmation)"
            elif raw.kind == TelegramKind.DESTINATION_REQUEST:
                outcome = "the parcel goes to exception"
            else:
                outcome = "delivered as lost tracking (the parcel goes to exception)"
            message = f"malformed telegram seq {raw.seq} tracking id {raw.tracking_id}: {fault}"
            log.error("line %s: %s; %s", self.line, message, outcome)
            self._raise("malformed-telegram", message)
        else:
            self._clear("malformed-telegram", "well-formed telegrams again")
            if verdict is Verdict.NEW:
                self._clear("telegrams-lost", "telegrams in sequence again")
                self._clear("telegram-sequence", "telegrams in sequence again")
        if not known_kind(raw):
            return None
        return _telegram(self.line, raw, scan_time, fault)

    def _raise(self, what: str, message: str) -> None:
        self._active.add(what)
        if self.alarms is not None:
            self.alarms.alarm(f"{self.line}/{what}", message, active=True)

    def _clear(self, what: str, message: str) -> None:
        if what in self._active:
            self._active.discard(what)
            if self.alarms is not None:
                self.alarms.alarm(f"{self.line}/{what}", message, active=False)


def _telegram(line: str, raw: RawTelegram, scan_time: float, fault: str) -> Telegram:
    if raw.kind == TelegramKind.DIVERT_CONFIRMATION:
        status = DivertStatus.LOST_TRACKING if fault else DivertStatus(raw.status)
        return DivertConfirmation(line, raw.seq, raw.tracking_id, raw.lane, status)
    barcode = barcode_text(raw.barcode)
    return DestinationRequest(line, raw.seq, raw.tracking_id, barcode, scan_time, fault)
