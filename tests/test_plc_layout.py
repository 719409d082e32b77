"""The register map and its encoding, against fixed expected words.

The emulated PLC's Modbus server is read by an independent client (pyModbusTCP, not
pymodbus), so the word order and string packing are checked on the wire, not just in Python.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pyModbusTCP.client import ModbusClient  # type: ignore[import-untyped]

from controller.core.clock import MonotonicClock
from controller.core.domain import DivertStatus, LaneStatus
from controller.core.reasons import Reason
from plc_adapters.emulator import EmulatedPlc
from plc_adapters.layout import (
    LAYOUT_VERSION,
    FieldType,
    Layout,
    decode,
    encode,
    header,
    u32_add,
    u32_diff,
)
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.modbus_wire import MAX_READ, MAX_WRITE, spans
from plc_adapters.opcua_wire import node_name
from tests.plc.rigs import PLC_TIMING, line, wait_for


def test_u32_is_high_word_first() -> None:
    assert encode(FieldType.U32, 0x12345678) == [0x1234, 0x5678]
    assert encode(FieldType.U32, 70000) == [0x0001, 0x1170]
    assert decode(FieldType.U32, [0x1234, 0x5678]) == 0x12345678


def test_strings_are_two_ascii_characters_per_register_first_in_the_high_byte() -> None:
    words = encode(FieldType.ASCII32, b"CG123")
    assert words == [0x4347, 0x3132, 0x3300] + [0] * 13
    assert decode(FieldType.ASCII32, words) == b"CG123"
    assert encode(FieldType.ASCII32, b"") == [0] * 16


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        (FieldType.U16, 65536, "u16 value must be 0..65535, got 65536"),
        (FieldType.U32, -1, "u32 value must be 0..4294967295, got -1"),
        (FieldType.ASCII32, b"X" * 33, "barcode is 33 bytes, at most 32 fit"),
    ],
)
def test_out_of_range_values_are_refused_with_the_value(
    type_: FieldType, value: int | bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(type_, value)


def test_map_offsets_are_fixed() -> None:
    layout = Layout(64, 32)
    offsets = {f.name: f.offset for f in layout}
    assert offsets["layout_version"] == 0
    assert offsets["plc_heartbeat"] == 3
    assert offsets["ctl_heartbeat"] == 4
    assert offsets["ctl_owner"] == 7
    assert offsets["plc_clock_ms"] == 8
    assert offsets["tel_write"] == 10
    assert offsets["tel_ack"] == 12
    assert offsets["rep_write"] == 14
    assert offsets["rep_ack"] == 16
    assert offsets["lane[0].id"] == 18
    assert offsets["lane[31].status"] == 18 + 63
    assert offsets["telegram[0].seq"] == 82
    assert offsets["telegram[0].barcode"] == 82 + 9
    assert offsets["telegram[1].seq"] == 82 + 25
    assert offsets["reply[0].seq"] == 82 + 64 * 25
    assert offsets["reply[1].seq"] == 82 + 64 * 25 + 6
    assert layout.registers == 82 + 64 * 25 + 64 * 6


def test_wrapping_counters() -> None:
    assert u32_add(0xFFFFFFFF, 1) == 0
    assert u32_diff(2, 0xFFFFFFFF) == 3
    assert u32_diff(0xFFFFFFFF, 2) == -3
    assert Layout(8, 1).slot(1) == 0
    assert Layout(8, 1).slot(9) == 0


def test_requests_respect_modbus_limits() -> None:
    layout = Layout(64, 32)
    fields = [layout.by_key[k] for i in range(10) for k in layout.telegram_keys(i)]
    reads = spans(fields, MAX_READ, contiguous=False)
    assert all(g[-1].offset + g[-1].type.registers - g[0].offset <= MAX_READ for g in reads)
    assert len(reads) == 2  # 250 registers
    writes = spans(
        [layout.by_key[header("tel_ack")], layout.by_key[header("ctl_heartbeat")]],
        MAX_WRITE,
        contiguous=True,
    )
    assert len(writes) == 2  # not adjacent: two writes, never over a PLC-owned register


async def test_emulated_plc_registers_read_by_an_independent_client() -> None:
    layout = Layout(4, 2)
    image = ModbusServerImage("127.0.0.1", 0, 1, layout, register_base=100)
    async with EmulatedPlc(line("L1"), layout, image, MonotonicClock(), PLC_TIMING) as plc:
        plc.set_lane_status(2, LaneStatus.FULL)
        plc.request(0x01020304, "AB1", 0.0)
        plc.confirm(0x01020304, 1, DivertStatus.LANE_FULL)
        await wait_for(lambda: plc.mem[header("tel_write")] == 2, "two telegrams published")
        await asyncio.sleep(0.05)
        client = ModbusClient(host="127.0.0.1", port=image.port, unit_id=1, timeout=5)
        try:
            words = await asyncio.to_thread(client.read_holding_registers, 100, 82)
            refused = await asyncio.to_thread(client.write_single_register, 100 + 10, 7)
            accepted = await asyncio.to_thread(client.write_multiple_registers, 100 + 12, [0, 1])
        finally:
            client.close()
    assert words is not None, client.last_error_as_txt
    assert words[0:3] == [2, 4, 2]  # layout version, ring size, lane slots
    assert words[10:12] == [0, 2]  # tel_write = 2
    assert words[18:22] == [1, 0, 2, 1]  # lane 1 available, lane 2 full
    telegram0 = words[22 : 22 + 25]
    assert telegram0[0:2] == [0, 1]  # seq 1
    assert telegram0[2] == 1  # destination request
    assert telegram0[3:5] == [0x0102, 0x0304]  # tracking id
    assert telegram0[9:12] == [0x4142, 0x3100, 0]  # "AB1"
    telegram1 = words[22 + 25 : 22 + 50]
    assert telegram1[0:3] == [0, 2, 2]  # seq 2, divert confirmation
    assert telegram1[7:9] == [1, 1]  # lane 1, status lane full
    assert refused is False  # tel_write belongs to the PLC
    assert accepted is True  # tel_ack belongs to the controller
    assert plc.mem[header("tel_ack")] == 1


def test_interface_document_lists_every_header_field_at_its_offset() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "plc-interface.md").read_text()
    for f in Layout(64, 32):
        if f.key[0] != "header":
            continue
        name = node_name("L1", f.key).split(".", 1)[1]
        span = str(f.offset) if f.type.registers == 1 else f"{f.offset}–{f.offset + 1}"
        assert f"| {span} | `{name}` | {f.type.value} |" in text, name


def test_interface_document_lists_every_reason_code() -> None:
    """A PLC programmer logs the reply's reason code: each one is in the table of 3.9."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "plc-interface.md").read_text()
    table = text.split("### 3.9 Reason codes", 1)[1].split("\n## ", 1)[0]
    missing = [f"{int(r)} {r.name}" for r in Reason if f"\n| {int(r)} |" not in table]
    assert missing == []


def test_interface_document_is_on_the_layout_version_the_code_speaks() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "plc-interface.md").read_text()
    assert text.splitlines()[0].endswith(f"layout version {LAYOUT_VERSION}")
