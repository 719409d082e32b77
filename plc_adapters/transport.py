"""What a wire protocol must provide to carry the sorter layout: read and write fields.

Library errors are translated at this boundary into two meanings: :class:`LinkDownError` (the
PLC is unreachable or stopped answering: retry with backoff) and :class:`LinkRejectedError` (it
answered, but refused us or does not match the settings: retry slowly, tell the operator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from plc_adapters.layout import Key, Value


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
