"""The risk book: risk results held in memory by HAWB, filled from feeds ahead of arrival."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from controller.core.domain import RiskChannel, RiskResult
from controller.core.link import LinkState
from controller.risk.feeds import RiskFeed
from controller.risk.records import FeedBatch, FeedProblem

logger = logging.getLogger(__name__)


class RiskBook:
    """Risk results by HAWB; implements the ``RiskSource`` port.

    Lookups are one dict read: O(1), no I/O, never blocking. A result added later replaces the
    one held for its HAWB. An unknown HAWB looks up as None (the policy then inspects).

    ``max_entries`` bounds memory: when an add overfills the book, the results loaded longest
    ago are evicted first (a replaced result counts as loaded when it was replaced). An evicted
    HAWB looks up as None, so choose a bound well above the parcels expected between loading
    a manifest and the last of its parcels being scanned. None means no bound.

    Use it from one thread (the event loop's); it holds no lock.
    """

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None, got {max_entries}")
        self.max_entries = max_entries
        self._results: OrderedDict[str, RiskResult] = OrderedDict()
        self._counts: dict[RiskChannel, int] = dict.fromkeys(RiskChannel, 0)
        self._evicted = 0
        self._reported: dict[int, tuple[RiskFeed, frozenset[str]]] = {}
        self._feeds: tuple[RiskFeed, ...] = ()

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, hawb: object) -> bool:
        return hawb in self._results

    @property
    def link_state(self) -> LinkState:
        """The feeds' link states combined (up only when every feed is up); a feed without
        ``link_state`` counts as up once it has been fetched."""
        return LinkState.combine(getattr(feed, "link_state", LinkState.UP) for feed in self._feeds)

    def get(self, hawb: str) -> RiskResult | None:
        """The result held for ``hawb`` (exact match), or None."""
        return self._results.get(hawb)

    async def lookup(self, hawb: str) -> RiskResult | None:
        """``RiskSource.lookup``: the result held for ``hawb``, or None. Never blocks."""
        return self._results.get(hawb)

    def counts(self) -> dict[RiskChannel, int]:
        """How many results are held per channel; every channel is present."""
        return dict(self._counts)

    @property
    def evicted(self) -> int:
        """How many results ``max_entries`` has evicted since the book was made."""
        return self._evicted

    def add(self, batch: FeedBatch | Iterable[RiskResult]) -> int:
        """Hold the batch's results (its problems are not looked at); return how many."""
        results = batch.results if isinstance(batch, FeedBatch) else batch
        added = 0
        for result in results:
            old = self._results.pop(result.hawb, None)
            if old is not None:
                self._counts[old.channel] -= 1
            self._results[result.hawb] = result
            self._counts[result.channel] += 1
            added += 1
        evicted = 0
        if self.max_entries is not None:
            while len(self._results) > self.max_entries:
                _, gone = self._results.popitem(last=False)
                self._counts[gone.channel] -= 1
                evicted += 1
        if evicted:
            self._evicted += evicted
            logger.warning(
                "risk book full (max_entries=%d): evicted the %d results loaded longest ago",
                self.max_entries,
                evicted,
            )
        return added

    async def refresh_once(self, feeds: Sequence[RiskFeed]) -> list[FeedProblem]:
        """Fetch every feed (concurrently), add what came, and return this round's problems.

        Each problem is logged as a warning once: a problem a feed reported in its previous
        round too (an HTTP source that stays down) is not logged again. A feed that raises is
        reported as a problem; the other feeds' results still load.
        """
        self._feeds = tuple(feeds)
        batches = await asyncio.gather(*(self._fetch(feed) for feed in feeds))
        problems: list[FeedProblem] = []
        added = 0
        for feed, batch in zip(feeds, batches, strict=True):
            added += self.add(batch)
            problems.extend(batch.problems)
            texts = [str(problem) for problem in batch.problems]
            _, before = self._reported.get(id(feed), (feed, frozenset()))
            for text in texts:
                if text not in before:
                    logger.warning("risk feed problem: %s", text)
            self._reported[id(feed)] = (feed, frozenset(texts))
        if added:
            logger.info("risk book: %d results loaded, %d held", added, len(self._results))
        return problems

    async def run(self, feeds: Sequence[RiskFeed], poll_s: float) -> None:
        """Refresh from ``feeds`` now and then every ``poll_s`` seconds, until cancelled."""
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        while True:
            await self.refresh_once(feeds)
            await asyncio.sleep(poll_s)

    @staticmethod
    async def _fetch(feed: RiskFeed) -> FeedBatch:
        try:
            return await feed.fetch()
        except Exception as exc:
            logger.debug("risk feed %r raised", feed, exc_info=True)
            message = f"fetch failed: {type(exc).__name__}: {exc}"
            return FeedBatch([], [FeedProblem(repr(feed), None, "", "", message)])
