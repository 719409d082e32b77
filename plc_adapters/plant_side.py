"""The plant's half of the sorter contract, whatever carries it.

The stand-in plant, the digital twin and the tests drive a sorter line through this protocol:
the in-process sorter implements it directly, and the PLC emulations implement it behind a
real OPC UA or Modbus TCP server, so the same plant model runs against either. What a PLC
does with a reply at the divert is stated once, in :mod:`plc_adapters.rulebook`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from controller.core.domain import DestinationReply, DivertStatus, LaneStatus

ReplyHandler = Callable[[DestinationReply], None]


class PlantSide(Protocol):
    line: str
    on_reply: ReplyHandler | None
    """Called on the event loop for every reply the sorter credits to a parcel: one that
    arrived by the parcel's decision point (:func:`plc_adapters.rulebook.reply_credited`, on
    the sorter's clock), so a plant acting on it never uses a reply a real PLC would ignore.
    A sorter with no clock hands over every reply; the plant then applies the rule itself."""

    def request(self, tracking_id: int, barcode: str, scan_time: float) -> int:
        """A parcel left the scan tunnel; returns the telegram's sequence number."""
        ...

    def confirm(self, tracking_id: int, lane: int, status: DivertStatus) -> int:
        """Report what happened at the divert; returns the telegram's sequence number."""
        ...

    def set_lane_status(self, lane: int, status: LaneStatus) -> None: ...
