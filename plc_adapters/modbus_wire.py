"""Modbus TCP for the sorter layout: the client transport and the emulated PLC's server.

This is the only module that imports pymodbus (its argument names and bit order change
between minor versions; pin ``pymodbus==3.16.*``). The whole layout is one block of holding
registers starting at ``register_base``; word order and string packing are in
:mod:`plc_adapters.layout` and ``docs/plc-interface.md``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from plc_adapters.emulator import EmulatedPlc
from plc_adapters.layout import Field, Key, Layout, Owner, Value, decode, encode, header
from plc_adapters.transport import LinkDownError, LinkRejectedError

log = logging.getLogger(__name__)

MAX_READ = 125  # registers per read request (Modbus limit)
MAX_WRITE = 123  # registers per write-multiple request (Modbus limit)


def spans(fields: Sequence[Field], limit: int, contiguous: bool) -> list[list[Field]]:
    """Group fields (sorted by offset) into requests of at most ``limit`` registers.

    Reads may skip unused registers inside a span; writes (``contiguous``) never do."""
    groups: list[list[Field]] = []
    for field in sorted(fields, key=lambda f: f.offset):
        if groups:
            first, last = groups[-1][0], groups[-1][-1]
            end = field.offset + field.type.registers
            adjacent = field.offset == last.offset + last.type.registers
            if end - first.offset <= limit and (adjacent or not contiguous):
                groups[-1].append(field)
                continue
        groups.append([field])
    return groups


class ModbusTransport:
    """Client side: one Modbus TCP connection to one line's PLC, unit id ``unit``."""

    def __init__(
        self,
        host: str,
        port: int,
        unit: int,
        layout: Layout,
        register_base: int = 0,
        timeout_s: float = 0.2,
        retries: int = 1,
    ) -> None:
        self.endpoint = f"modbus://{host}:{port}/unit/{unit}"
        self.host, self.port, self.unit = host, port, unit
        self.layout = layout
        self.base = register_base
        self.timeout_s = timeout_s
        self.retries = retries
        self._client: AsyncModbusTcpClient | None = None

    async def connect(self, wake: Callable[[], None]) -> None:
        await self.close()
        client = AsyncModbusTcpClient(
            self.host,
            port=self.port,
            timeout=self.timeout_s,
            retries=self.retries,
            reconnect_delay=0,  # the sorter adapter supervises reconnects itself
        )
        try:
            connected = await client.connect()
        except (OSError, ModbusException) as exc:
            client.close()
            raise _down(exc) from None
        if not connected:
            client.close()
            raise _down(ConnectionError("connection refused or timed out"))
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def read(self, keys: Sequence[Key]) -> list[Value]:
        client = self._require()
        fields = [self.layout.by_key[k] for k in keys]
        values: dict[Key, Value] = {}
        for group in spans(fields, MAX_READ, contiguous=False):
            start = group[0].offset
            count = group[-1].offset + group[-1].type.registers - start
            try:
                rr = await client.read_holding_registers(
                    self.base + start, count=count, device_id=self.unit
                )
            except (TimeoutError, OSError, ModbusException) as exc:
                raise _down(exc) from None
            if rr.isError():
                raise _rejected(f"read of {count} registers at {self.base + start}", rr)
            words = list(rr.registers)
            for f in group:
                at = f.offset - start
                values[f.key] = decode(f.type, words[at : at + f.type.registers])
        return [values[k] for k in keys]

    async def write(self, items: Sequence[tuple[Key, Value]]) -> None:
        client = self._require()
        by_key = dict(items)
        fields = [self.layout.by_key[k] for k, _ in items]
        for group in spans(fields, MAX_WRITE, contiguous=True):
            words = [w for f in group for w in encode(f.type, by_key[f.key])]
            address = self.base + group[0].offset
            try:
                rr = await client.write_registers(address, words, device_id=self.unit)
            except (TimeoutError, OSError, ModbusException) as exc:
                raise _down(exc) from None
            if rr.isError():
                raise _rejected(f"write of {len(words)} registers at {address}", rr)

    def _require(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            raise _down(ConnectionError("not connected"))
        return self._client


def _down(exc: BaseException) -> LinkDownError:
    return LinkDownError(f"{type(exc).__name__}: {exc}")


def _rejected(what: str, response: object) -> LinkRejectedError:
    code = getattr(response, "exception_code", None)
    return LinkRejectedError(f"{what} answered with Modbus exception {code}")


class ModbusServerImage:
    """Server side: the emulated PLC's memory as holding registers, served on ``port``.

    Reads are answered from the PLC memory at request time (``plc_clock_ms`` live); writes to
    registers the PLC owns are refused with exception 2 (illegal data address).
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
        self._plc: EmulatedPlc | None = None
        self._server: ModbusTcpServer | None = None

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.host}:{self.port}/unit/{self.unit}"

    async def start(self, plc: EmulatedPlc) -> None:
        self._plc = plc
        for f in self.layout:
            self.regs[f.offset : f.offset + f.type.registers] = encode(f.type, plc.mem[f.key])
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
        f = self.layout.by_key[key]
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
        self.regs[offset : offset + count] = [int(v) for v in set_values]
        if self._plc is not None:
            for f in touched.values():
                words = self.regs[f.offset : f.offset + f.type.registers]
                self._plc.written(f.key, decode(f.type, words))
        return None
