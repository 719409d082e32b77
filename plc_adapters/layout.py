"""The sorter interface's memory layout, shared by both wire protocols and both sides.

One line's PLC exposes a header, a lane table, a telegram ring (PLC → controller) and a reply
ring (controller → PLC). Every field has a logical key, a type and an owner; the Modbus
register map and the OPC UA node map are both derived from this one list, so they cannot
drift apart. ``docs/plc-interface.md`` documents the result word by word.

Encoding on Modbus: ``u16`` is one register; ``u32`` is two registers, high word first
(big-endian word order, "ABCD"); ``ascii32`` is 16 registers, two ASCII characters per
register, the first character in the high byte, padded with NUL (0x00).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum
from functools import cached_property

LAYOUT_VERSION = 2
"""2 since word 7 became ``CtlOwner`` (it was ``Reserved``, owned by the PLC, in version 1)."""
BARCODE_BYTES = 32
BARCODE_TOO_LONG = 0x1A
"""ASCII SUB: in the last byte of a full barcode field, "the barcode did not fit" (a longer
barcode is never truncated into a valid-looking one; docs/plc-interface.md, section 3.3)."""


class FieldType(StrEnum):
    U16 = "u16"
    U32 = "u32"
    ASCII32 = "ascii32"

    @property
    def registers(self) -> int:
        return {FieldType.U16: 1, FieldType.U32: 2, FieldType.ASCII32: BARCODE_BYTES // 2}[self]


class Owner(StrEnum):
    """Which side writes a field; the other side only reads it."""

    PLC = "plc"
    CONTROLLER = "controller"


class TelegramKind(IntEnum):
    """The ``kind`` word of a telegram slot."""

    DESTINATION_REQUEST = 1
    DIVERT_CONFIRMATION = 2


class PlcFlags(IntFlag):
    """Bits of the PLC's ``plc_flags`` word."""

    SAFE_STATE = 1  # no live owner (none, or its heartbeat stalled): every parcel to the default
    MAILBOX_FULL = 2  # the telegram ring is full; the PLC holds telegrams in its own backlog
    TELEGRAMS_DROPPED = 4  # the PLC's backlog overflowed; some parcels were defaulted unannounced
    REPLY_ERROR = 8  # a reply slot did not carry the sequence number expected (latched)


class PackMLState(IntEnum):
    """Line state word: PackML (ISA-TR88.00.02) state numbers."""

    UNDEFINED = 0
    CLEARING = 1
    STOPPED = 2
    STARTING = 3
    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    STOPPING = 7
    ABORTING = 8
    ABORTED = 9
    HOLDING = 10
    HELD = 11
    UNHOLDING = 12
    SUSPENDING = 13
    UNSUSPENDING = 14
    RESETTING = 15
    COMPLETING = 16
    COMPLETE = 17


Key = tuple[str, int, str]
"""A field's logical key: (area, slot index, field name); area is header, lane, telegram
or reply; header fields use slot index 0."""

Value = int | bytes


@dataclass(frozen=True, slots=True)
class Field:
    key: Key
    type: FieldType
    owner: Owner
    offset: int  # registers from the layout's base
    description: str

    @property
    def name(self) -> str:
        area, index, name = self.key
        return name if area == "header" else f"{area}[{index}].{name}"


HEADER: tuple[tuple[str, FieldType, Owner, str], ...] = (
    ("layout_version", FieldType.U16, Owner.PLC, f"always {LAYOUT_VERSION}"),
    ("ring_size", FieldType.U16, Owner.PLC, "N, slots in each ring"),
    ("lane_slots", FieldType.U16, Owner.PLC, "M, entries in the lane table"),
    ("plc_heartbeat", FieldType.U16, Owner.PLC, "+1 every heartbeat period, wraps"),
    ("ctl_heartbeat", FieldType.U16, Owner.CONTROLLER, "+1 every heartbeat period, wraps"),
    ("line_state", FieldType.U16, Owner.PLC, "PackML state number"),
    ("plc_flags", FieldType.U16, Owner.PLC, "bit 0 safe state, 1 mailbox full, 2 dropped"),
    ("ctl_owner", FieldType.U16, Owner.CONTROLLER, "id of the owning controller, 0 = none"),
    ("plc_clock_ms", FieldType.U32, Owner.PLC, "PLC millisecond tick, wraps, live"),
    ("tel_write", FieldType.U32, Owner.PLC, "telegram slots written so far (writer index)"),
    ("tel_ack", FieldType.U32, Owner.CONTROLLER, "telegram slots consumed (reader index)"),
    ("rep_write", FieldType.U32, Owner.CONTROLLER, "reply slots written so far"),
    ("rep_ack", FieldType.U32, Owner.PLC, "reply slots consumed by the PLC"),
)
LANE: tuple[tuple[str, FieldType, Owner, str], ...] = (
    ("id", FieldType.U16, Owner.PLC, "lane id, 0 = entry unused"),
    ("status", FieldType.U16, Owner.PLC, "0 available, 1 full, 2 blocked"),
)
TELEGRAM: tuple[tuple[str, FieldType, Owner, str], ...] = (
    ("seq", FieldType.U32, Owner.PLC, "telegram sequence number, +1 per telegram"),
    ("kind", FieldType.U16, Owner.PLC, "1 destination request, 2 divert confirmation"),
    ("tracking_id", FieldType.U32, Owner.PLC, "the PLC's tracking number"),
    ("scan_ms", FieldType.U32, Owner.PLC, "request: plc_clock_ms at the scan; else 0"),
    ("lane", FieldType.U16, Owner.PLC, "confirmation: actual lane; else 0"),
    ("status", FieldType.U16, Owner.PLC, "confirmation: divert status; else 0"),
    ("barcode", FieldType.ASCII32, Owner.PLC, "request: HAWB, ASCII, NUL-padded; empty = no-read"),
)
REPLY: tuple[tuple[str, FieldType, Owner, str], ...] = (
    ("seq", FieldType.U32, Owner.CONTROLLER, "reply position, 1 + previous"),
    ("tracking_id", FieldType.U32, Owner.CONTROLLER, "tracking number the reply is for"),
    ("lane", FieldType.U16, Owner.CONTROLLER, "destination lane"),
    ("reason", FieldType.U16, Owner.CONTROLLER, "reason code (informative)"),
)


class Layout:
    """The field list for a ring size and a lane-table size; offsets count from 0."""

    def __init__(self, ring_size: int = 64, lane_slots: int = 32) -> None:
        if not 1 <= ring_size <= 1024:
            raise ValueError(f"ring_size must be 1..1024, got {ring_size}")
        if not 1 <= lane_slots <= 50:
            raise ValueError(f"lane_slots must be 1..50 (one Modbus read), got {lane_slots}")
        self.ring_size = ring_size
        self.lane_slots = lane_slots
        fields: list[Field] = []
        offset = 0

        def add(area: str, index: int, spec: Sequence[tuple[str, FieldType, Owner, str]]) -> None:
            nonlocal offset
            for name, type_, owner, text in spec:
                fields.append(Field((area, index, name), type_, owner, offset, text))
                offset += type_.registers

        add("header", 0, HEADER)
        for j in range(lane_slots):
            add("lane", j, LANE)
        for i in range(ring_size):
            add("telegram", i, TELEGRAM)
        for i in range(ring_size):
            add("reply", i, REPLY)
        self.fields = tuple(fields)
        self.by_key = {f.key: f for f in fields}
        self.registers = offset

    @cached_property
    def header_keys(self) -> tuple[Key, ...]:
        return tuple(("header", 0, name) for name, *_ in HEADER)

    @cached_property
    def lane_keys(self) -> tuple[Key, ...]:
        return tuple(("lane", j, name) for j in range(self.lane_slots) for name, *_ in LANE)

    def telegram_keys(self, index: int) -> tuple[Key, ...]:
        return tuple(("telegram", index, name) for name, *_ in TELEGRAM)

    def reply_keys(self, index: int) -> tuple[Key, ...]:
        return tuple(("reply", index, name) for name, *_ in REPLY)

    def slot(self, position: int) -> int:
        """Ring index of a 1-based ring position (position p lives in slot (p - 1) mod N)."""
        return (position - 1) % self.ring_size

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)


def header(name: str) -> Key:
    return ("header", 0, name)


def zero(type_: FieldType) -> Value:
    return b"" if type_ is FieldType.ASCII32 else 0


# --- Modbus word encoding ----------------------------------------------------------------


def encode(type_: FieldType, value: Value) -> list[int]:
    """Registers for one value: u32 high word first; strings two bytes per register."""
    if type_ is FieldType.ASCII32:
        if not isinstance(value, bytes):
            raise TypeError(f"ascii32 field needs bytes, got {type(value).__name__}")
        if len(value) > BARCODE_BYTES:
            raise ValueError(f"barcode is {len(value)} bytes, at most {BARCODE_BYTES} fit")
        padded = value.ljust(BARCODE_BYTES, b"\x00")
        return [(padded[i] << 8) | padded[i + 1] for i in range(0, BARCODE_BYTES, 2)]
    if not isinstance(value, int):
        raise TypeError(f"{type_.value} field needs an int, got {type(value).__name__}")
    if type_ is FieldType.U16:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"u16 value must be 0..65535, got {value}")
        return [value]
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"u32 value must be 0..4294967295, got {value}")
    return [value >> 16, value & 0xFFFF]


def fit_barcode(value: bytes) -> bytes:
    """``value`` if it fits the 32-byte field, else its first 31 bytes and the too-long mark
    (0x1A): what a PLC writes where only 32 bytes fit, so the controller sees it malformed
    instead of reading a truncated HAWB that may name another parcel."""
    if len(value) <= BARCODE_BYTES:
        return value
    return value[: BARCODE_BYTES - 1] + bytes((BARCODE_TOO_LONG,))


def decode(type_: FieldType, words: Sequence[int]) -> Value:
    """The value of one field from its registers (inverse of :func:`encode`)."""
    if type_ is FieldType.U16:
        return words[0]
    if type_ is FieldType.U32:
        return (words[0] << 16) | words[1]
    raw = b"".join(bytes((w >> 8, w & 0xFF)) for w in words)
    return raw.rstrip(b"\x00")


def u32_diff(newer: int, older: int) -> int:
    """How far ``newer`` is ahead of ``older`` on a wrapping 32-bit counter (negative if
    behind by less than half the range)."""
    diff = (newer - older) & 0xFFFFFFFF
    return diff - 0x1_0000_0000 if diff >= 0x8000_0000 else diff


def u32_add(value: int, step: int) -> int:
    return (value + step) & 0xFFFFFFFF
