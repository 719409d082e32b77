"""Modbus TCP for the sorter layout: the controller's client transport.

pymodbus is imported here and in :mod:`plc_adapters.modbus_server` (the emulated PLC's server)
and nowhere else: its argument names and bit order change between minor versions, so pin
``pymodbus==3.16.*`` and look in these two modules when upgrading. The whole layout is one block
of holding registers starting at ``register_base``; word order and string packing are in
:mod:`plc_adapters.layout` and ``docs/plc-interface.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from plc_adapters.layout import Field, Key, Layout, Value, decode, encode
from plc_adapters.transport import LinkDownError, LinkRejectedError, quiet_protocol_loggers

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
        quiet_protocol_loggers()

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
