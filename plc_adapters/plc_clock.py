"""Mapping the PLC's millisecond tick onto the controller's clock, never later than reality.

Each poll reads ``plc_clock_ms`` in the same request as the ring indexes. The tick was taken
somewhere between sending the request (controller time ``sent``) and the answer, and a PLC may
show a tick up to ``staleness_s`` old (its scan cycle), so the offset ``controller - PLC`` is at
least ``sent - tick/1000 - staleness_s - 0.001`` (the last term covers tick truncation). The
mapper keeps the largest such lower bound over a sliding window of samples (the window follows
clock drift), and maps a telegram's scan tick with it: the result can only be *earlier* than
the true scan time, so a deadline computed from it is never later than the real one.
"""

from __future__ import annotations

from collections import deque


class PlcClockMapper:
    """Converts wrapping 32-bit PLC millisecond ticks to controller-clock seconds."""

    def __init__(self, staleness_s: float = 0.02, window: int = 256) -> None:
        self.staleness_s = staleness_s
        self._bounds: deque[float] = deque(maxlen=window)
        self._last_raw: int | None = None
        self._wraps = 0

    def reset(self) -> None:
        """Forget every sample (the PLC restarted, its tick may have jumped)."""
        self._bounds.clear()
        self._last_raw = None
        self._wraps = 0

    @property
    def ready(self) -> bool:
        return bool(self._bounds)

    def sample(self, sent: float, tick_ms: int) -> None:
        """Record a tick read by a request sent at controller time ``sent``."""
        ticks = self._unwrap(tick_ms)
        self._bounds.append(sent - ticks / 1000.0 - self.staleness_s - 0.001)

    def to_controller(self, tick_ms: int, received: float) -> float:
        """Controller time of a past tick; never later than ``received`` (when it was read)."""
        if not self._bounds or self._last_raw is None:
            return received - self.staleness_s
        age_ms = (self._last_raw - tick_ms) & 0xFFFFFFFF
        if age_ms >= 0x8000_0000:  # a tick "from the future": the PLC's clock jumped
            return received - self.staleness_s
        ticks = self._wraps * 0x1_0000_0000 + self._last_raw - age_ms
        return min(ticks / 1000.0 + max(self._bounds), received)

    def _unwrap(self, raw: int) -> int:
        if self._last_raw is not None and raw < self._last_raw:
            if self._last_raw - raw >= 0x8000_0000:
                self._wraps += 1  # wrapped past 2**32
            else:
                self.reset()  # went backwards: the PLC restarted its clock
        self._last_raw = raw
        return self._wraps * 0x1_0000_0000 + raw
