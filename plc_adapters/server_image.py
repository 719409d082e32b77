"""What an emulated PLC and the protocol server in front of it need of each other.

The emulated PLC (:mod:`plc_adapters.emulator`) publishes its memory through a
:class:`ServerImage`; the OPC UA and Modbus TCP server images (:mod:`plc_adapters.opcua_server`,
:mod:`plc_adapters.modbus_server`) serve a :class:`ServedPlc`. Both protocols are stated here,
below both sides, so the server images need not import the emulator (and the controller's wire
modules import neither).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from plc_adapters.layout import Key, Value


class ServedPlc(Protocol):
    """The PLC memory a server image serves (an :class:`plc_adapters.emulator.EmulatedPlc`)."""

    @property
    def line(self) -> str: ...

    @property
    def mem(self) -> Mapping[Key, Value]:
        """Every field of the layout, by key: what a client reads."""
        ...

    def written(self, key: Key, value: Value) -> bool:
        """A client wrote ``key``; False (refused) if the PLC owns it."""
        ...

    def clock_ms(self) -> int:
        """The PLC's millisecond tick, live (what ``plc_clock_ms`` reads)."""
        ...


class ServerImage(Protocol):
    """A protocol server exposing a :class:`ServedPlc`'s memory."""

    @property
    def endpoint(self) -> str: ...

    async def start(self, plc: ServedPlc) -> None:
        """Bind and serve ``plc.mem``; controller writes go to :meth:`ServedPlc.written`."""
        ...

    async def stop(self) -> None:
        """Stop serving and release the port; never raises."""
        ...

    def changed(self, key: Key, value: Value) -> None:
        """The PLC wrote a field it owns (publish it, in order, by the next :meth:`flush`)."""
        ...

    async def flush(self) -> None: ...
