"""The live stream: one overview per tick, serialised once, sent to every browser.

:class:`Broadcaster` takes the overview JSON (built and serialised once) every ``every_s``
seconds and offers it to each subscriber's small queue. A browser that has not
taken the previous updates (its queue is full) is dropped, never buffered without limit:
its page reconnects and gets the current view. Serving the stream costs the decision path
one snapshot per tick, whatever the number of browsers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4
"""Updates a browser may fall behind before it is dropped."""
_GONE = b""


class TooManyClientsError(Exception):
    pass


class LaneRates:
    """Parcels per minute per ``"line/lane"``, from the decision counts of the last minute."""

    def __init__(self, span_s: float = 60.0) -> None:
        self.span_s = span_s
        self._samples: deque[tuple[float, Mapping[str, int]]] = deque()

    def update(self, now: float, counts: Mapping[str, int]) -> dict[str, float]:
        samples = self._samples
        samples.append((now, dict(counts)))
        while len(samples) > 2 and samples[1][0] <= now - self.span_s:
            samples.popleft()
        first_at, first = samples[0]
        elapsed = now - first_at
        if elapsed <= 0:
            return {}
        return {lane: (n - first.get(lane, 0)) * 60.0 / elapsed for lane, n in counts.items()}


class Broadcaster:
    """Builds the overview each tick and fans it out; run :meth:`run` as a task."""

    def __init__(self, overview: Callable[[], bytes], every_s: float, max_clients: int) -> None:
        self._overview = overview
        self.every_s = every_s
        self.max_clients = max_clients
        self._clients: set[asyncio.Queue[bytes]] = set()
        self.dropped = 0
        self.sent = 0
        self.latest: bytes = b""

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def run(self) -> None:
        while True:
            try:
                self.publish(self._overview())
            except Exception:  # a view that cannot be built must not end the stream
                log.exception("live view not built; trying again next tick")
            await asyncio.sleep(self.every_s)

    def publish(self, message: bytes) -> None:
        self.latest = message
        for queue in list(self._clients):
            try:
                queue.put_nowait(message)
                self.sent += 1
            except asyncio.QueueFull:
                self._drop(queue)

    def close(self) -> None:
        """End every stream now and take no new ones (the console is stopping)."""
        self.max_clients = 0
        for queue in list(self._clients):
            self._drop(queue)

    def _drop(self, queue: asyncio.Queue[bytes]) -> None:
        self._clients.discard(queue)
        self.dropped += 1
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(_GONE)

    def events(self, alive: Callable[[], bool] = lambda: True) -> AsyncIterator[bytes]:
        """Server-Sent Events for one browser: the latest view at once, then each new one,
        until it falls behind (dropped), goes away, or ``alive()`` turns False (its session
        ended). Raises :class:`TooManyClientsError`
        here, before the response starts, so that the API can still answer 503."""
        if len(self._clients) >= self.max_clients:
            raise TooManyClientsError(f"{self.max_clients} live clients already connected")
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_DEPTH)
        if self.latest:
            queue.put_nowait(self.latest)  # the current view at once, then each new one
        self._clients.add(queue)
        return self._stream(queue, alive)

    async def _stream(
        self, queue: asyncio.Queue[bytes], alive: Callable[[], bool]
    ) -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            while True:
                message = await queue.get()
                if message == _GONE or not alive():
                    return
                yield b"data: " + message + b"\n\n"
        finally:
            self._clients.discard(queue)
