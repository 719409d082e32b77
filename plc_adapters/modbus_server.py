"""The emulated PLC's Modbus TCP server: its memory as one block of holding registers.

Only the PLC emulator (``cargogate plc-emulator``, the tests and the round-trip benchmark)
loads this module; the controller's client (:mod:`plc_adapters.modbus_wire`) never does.
pymodbus is imported here and in :mod:`plc_adapters.modbus_wire` and nowhere else (pin
``pymodbus==3.16.*``: its simulator and server arguments change between minor versions).
Registers are encoded by :mod:`plc_adapters.layout`, as the client decodes them.
"""

from __future__ import annotations

import contextlib
import logging

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from plc_adapters.layout import (
    Field,
    FieldType,
    Key,
    Layout,
    Owner,
    Value,
    decode,
    encode,
    fit_barcode,
    header,
)
from plc_adapters.server_image import ServedPlc
from plc_adapters.transport import quiet_protocol_loggers

log = logging.getLogger(__name__)


class ModbusServerImage:
    """Server side: the emulated PLC's memory as holding registers, served on ``port``.

    Reads are answered from the PLC memory at request time (``plc_clock_ms`` live); writes to
    registers the PLC owns are refused with exception 2 (illegal data address), and a write
    the PLC refuses by its value (a claim of ``CtlOwner`` while another controller owns it)
    with exception 3 (illegal data value), leaving the registers as they were.
    """

    def __init__(
        self, host: str, port: int, unit: int, layout: Layout, register_base: int = 0
    ) -> None:
        self.host, self.port, self.unit = host, port, unit
        self.layout = layout
        self.base = register_base
        self.regs = [0] * layout.registers
        self._field_at: list[Field] = []
        for f in layout:
            self._field_at += [f] * f.type.registers
        self._clock = layout.by_key[header("plc_clock_ms")]
        self._plc: ServedPlc | None = None
        self._server: ModbusTcpServer | None = None
        quiet_protocol_loggers()

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.host}:{self.port}/unit/{self.unit}"

    async def start(self, plc: ServedPlc) -> None:
        self._plc = plc
        for f in self.layout:
            self.changed(f.key, plc.mem[f.key])
        device = SimDevice(
            id=self.unit,
            simdata=[SimData(self.base, count=self.layout.registers, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        if self.port == 0:  # the OS chose a free port: keep it for restarts
            sockets = getattr(server.transport, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        log.info("emulated PLC %s serving %s", plc.line, self.endpoint)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]

    def changed(self, key: Key, value: Value) -> None:
        """Encode a PLC write into the registers; a barcode longer than the 32 bytes that fit
        gets the too-long mark instead of being cut into a valid-looking one."""
        f = self.layout.by_key[key]
        if f.type is FieldType.ASCII32 and isinstance(value, bytes):
            value = fit_barcode(value)
        self.regs[f.offset : f.offset + f.type.registers] = encode(f.type, value)

    async def flush(self) -> None:
        """Nothing to do: reads are served from the registers kept up to date by ``changed``."""

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        offset = address - self.base
        if offset < 0 or offset + count > self.layout.registers:
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is None:
            c = self._clock
            if self._plc is not None and offset < c.offset + 2 and c.offset < offset + count:
                self.changed(c.key, self._plc.clock_ms())
            at = address - start_address
            current_registers[at : at + count] = self.regs[offset : offset + count]
            return None
        touched = {id(f): f for f in self._field_at[offset : offset + count]}
        if any(f.owner is not Owner.CONTROLLER for f in touched.values()):
            return ExcCodes.ILLEGAL_ADDRESS
        before = self.regs[offset : offset + count]
        self.regs[offset : offset + count] = [int(v) for v in set_values]
        if self._plc is not None:
            for f in touched.values():
                words = self.regs[f.offset : f.offset + f.type.registers]
                if not self._plc.written(f.key, decode(f.type, words)):
                    self.regs[offset : offset + count] = before
                    return ExcCodes.ILLEGAL_VALUE
        return None
