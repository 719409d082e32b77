"""What a wire protocol must provide to carry the sorter layout: read and write fields.

Library errors are translated at this boundary into two meanings: :class:`LinkDownError` (the
PLC is unreachable or stopped answering: retry with backoff) and :class:`LinkRejectedError` (it
answered, but refused us or does not match the settings: retry slowly, tell the operator).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from plc_adapters.layout import Key, Value

PROTOCOL_LOGGERS = ("asyncua", "pymodbus")


def quiet_protocol_loggers() -> None:
    """Default the protocol libraries' loggers to WARNING where an adapter or a server is built.

    asyncua logs every read, write and publish at INFO (tens of lines a second per OPC UA
    line, client and server), which buries the adapters' own reports; the adapters already say
    what matters (alarms, link states) in their own words. A level the application set itself
    (``cargogate``'s terminal, a test, an operator debugging) is left as it is.
    """
    for name in PROTOCOL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


class LinkDownError(Exception):
    """The PLC cannot be reached or did not answer in time."""


class LinkRejectedError(LinkDownError):
    """The PLC answered but refused the session or does not match the configured layout."""


class Transport(Protocol):
    """One connection to one line's PLC. Only the sorter adapter that owns it calls it."""

    @property
    def endpoint(self) -> str: ...

    async def connect(self, wake: Callable[[], None]) -> None:
        """Open the session; ``wake`` is called when the PLC signals new telegrams (if the
        protocol can signal; polling covers the rest). Raises :class:`LinkDownError`."""
        ...

    async def close(self) -> None:
        """Close the session; never raises."""
        ...

    async def read(self, keys: Sequence[Key]) -> list[Value]:
        """Values of ``keys`` in order, read as few requests as the protocol allows."""
        ...

    async def write(self, items: Sequence[tuple[Key, Value]]) -> None:
        """Write the values; returns once the PLC acknowledged them all."""
        ...
