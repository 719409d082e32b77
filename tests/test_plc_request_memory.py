"""The wire sorter remembers each tracking id's last request only as long as a reply can
matter: a line that runs for days keeps a flat memory (the soak benchmark found it growing
by ~300 bytes a parcel until 100,000 ids per line were kept)."""

from __future__ import annotations

from controller.core.clock import MonotonicClock
from plc_adapters.layout import Layout, TelegramKind
from plc_adapters.modbus_wire import ModbusTransport
from plc_adapters.wire_sorter import _REQUESTS_KEPT_S, WireSorter


def test_requests_older_than_any_reply_could_be_are_forgotten() -> None:
    layout = Layout(8, 8)
    # never connected: only the telegram checker and the request memory are exercised
    transport = ModbusTransport("127.0.0.1", 1, 1, layout, timeout_s=0.1, retries=0)
    sorter = WireSorter("L1", transport, layout, MonotonicClock())
    per_s = 6.0  # a line at ~21,600 parcels/h
    parcels = int(3 * _REQUESTS_KEPT_S * per_s)
    for n in range(1, parcels + 1):
        values: list[int | bytes] = [n, TelegramKind.DESTINATION_REQUEST, n, 0, 0, 0]
        values.append(f"H{n:09d}".encode())
        assert sorter._deliver(values, n / per_s) is not None
    kept = len(sorter._requests)
    assert kept <= _REQUESTS_KEPT_S * per_s + 1, kept
    assert parcels in sorter._requests  # the newest is always known
    assert 1 not in sorter._requests
