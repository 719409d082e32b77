"""The risk book: risk results held in memory by HAWB, filled from feeds ahead of arrival.

Storage: a million results must fit in tens of megabytes, not the ~650 MB that one Python
object per result and field cost. Results live in *segments*: numpy columns sorted by HAWB
(see :mod:`controller.risk.columns`), looked up by binary search; a :class:`RiskResult` is
built only when a parcel asks for one. Results added a few at a time (the twin adds one per
arriving parcel) wait in a small dict until there are enough to fold into a segment. Segments
are merged as they pile up (each at least twice the size of the next newer one), so there are
never more than a few dozen, and rows a later load replaced are dropped when they make up
half of a segment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from controller.core.domain import RiskChannel, RiskResult
from controller.core.link import LinkState
from controller.core.ports import AlarmSink
from controller.risk.columns import (
    CHANNELS,
    DIRECT,
    SEVERITY,
    Codes,
    Ids,
    Keys,
    ResultColumns,
    Scores,
    Texts,
    Unit,
    as_keys,
    describe_place,
    key_of,
    most_severe,
    outranks,
)
from controller.risk.feeds import RiskFeed
from controller.risk.records import Conflict, FeedBatch, FeedProblem, describe, shown

logger = logging.getLogger(__name__)

ROW_BY_ROW_MAX = 256
"""Batches up to this size are added one result at a time; larger ones column-wise."""
RECENT_MAX = 4096
"""Results held as objects (added a few at a time) before they are folded into a segment."""
ALARMS_PER_LOAD = 50
"""Conflict alarms raised for one load; beyond that one alarm counts the rest."""
DETAILED_PER_LOAD = 1000
"""Conflicts with what is held described (as problems, logged) for one load; beyond that
they are counted in one problem, so a re-issued manifest that conflicts everywhere costs a
count rather than a million log lines and seconds of the event loop."""
_RECENT_BYTES = 400
"""About what one result waiting as objects costs (for :attr:`RiskBook.nbytes`)."""

Stamps = npt.NDArray[np.int64]
Name = TypeVar("Name", bound=Hashable)
T = TypeVar("T", bound=np.generic)
Rows = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class _Held:
    """A result waiting as an object: where it came from and when it was (re)loaded."""

    result: RiskResult
    origin: int
    place: int
    stamp: int


@dataclass
class _Report:
    """What one load found: its conflicts, every one counted, the first
    :data:`DETAILED_PER_LOAD` (with what is held) described as problems and alarms."""

    conflicts: list[Conflict]
    problems: list[FeedProblem] = field(default_factory=list)
    described: int = 0
    more: int = 0

    @property
    def total(self) -> int:
        """Conflicts within the batch and with what is held, described or not."""
        return len(self.conflicts) + self.more

    def room(self) -> int:
        """How many more conflicts with what is held may be described in this load."""
        return max(0, DETAILED_PER_LOAD - self.described)

    def add(self, problem: FeedProblem) -> None:
        self.problems.append(problem)
        self.described += 1

    def uncounted(self, count: int) -> None:
        self.more += count

    def close(self, origin: tuple[str, Unit]) -> None:
        """Add one problem counting the conflicts not described."""
        if self.more:
            self.problems.append(
                FeedProblem(
                    origin[0],
                    None,
                    "",
                    "",
                    f"{self.more} more conflicting risk results in this load, not listed one "
                    "by one; each resolved to the most severe",
                )
            )


class _Segment:
    """Results in columns sorted by HAWB (flights and origins are ids into the book's
    tables). A row is dead once a later load replaced it or the bound evicted it. ``stamp``
    orders rows by when they were last loaded: the load's number, then the place in it."""

    __slots__ = (
        "channel",
        "flight",
        "goods",
        "hawb",
        "live",
        "n_live",
        "origin",
        "place",
        "score",
        "stamp",
        "texts",
    )

    def __init__(
        self,
        hawb: Keys,
        channel: Codes,
        score: Scores,
        goods: Ids,
        texts: Texts,
        flight: Ids,
        origin: Ids,
        place: Ids,
        stamp: Stamps,
    ) -> None:
        self.hawb, self.channel, self.score = hawb, channel, score
        self.goods, self.texts, self.flight = goods, texts, flight
        self.origin, self.place, self.stamp = origin, place, stamp
        self.live: npt.NDArray[np.bool_] = np.ones(len(hawb), dtype=np.bool_)
        self.n_live = len(hawb)

    def __len__(self) -> int:
        return len(self.hawb)

    @property
    def nbytes(self) -> int:
        arrays = (self.hawb, self.channel, self.score, self.goods, self.flight, self.origin)
        return sum(a.nbytes for a in (*arrays, self.place, self.stamp, self.live)) + (
            self.texts.nbytes
        )

    def find(self, key: bytes) -> int:
        """The live row holding ``key``, or -1."""
        if len(key) > self.hawb.itemsize:
            return -1
        row = int(np.searchsorted(self.hawb, key))
        if row < len(self.hawb) and self.hawb[row] == key and self.live[row]:
            return row
        return -1

    def match(self, keys: Keys) -> tuple[Rows, Rows]:
        """For sorted unique ``keys``: which of them are held live here, and at which rows."""
        width = max(keys.itemsize, self.hawb.itemsize)
        mine = self.hawb if self.hawb.itemsize == width else self.hawb.astype(f"S{width}")
        theirs = keys if keys.itemsize == width else keys.astype(f"S{width}")
        rows = np.minimum(np.searchsorted(mine, theirs), len(mine) - 1)
        hit = (mine[rows] == theirs) & self.live[rows]
        which = np.flatnonzero(hit)
        return which, rows[which]

    def kill(self, rows: Rows, counts: list[int]) -> None:
        """Mark ``rows`` dead and take them out of ``counts`` (per channel code)."""
        self.live[rows] = False
        self.n_live -= len(rows)
        for code, count in enumerate(np.bincount(self.channel[rows], minlength=3).tolist()):
            counts[code] -= count

    def compacted(self) -> _Segment:
        """This segment with its live rows only (and only the texts they use)."""
        if self.n_live == len(self):
            return self
        live = self.live
        texts, goods = self.texts.keep(self.goods[live])
        return _Segment(
            self.hawb[live],
            self.channel[live],
            self.score[live],
            goods,
            texts,
            self.flight[live],
            self.origin[live],
            self.place[live],
            self.stamp[live],
        )


def _merge(older: _Segment, newer: _Segment) -> _Segment:
    """One segment with the live rows of both (their live HAWBs never overlap), in order."""
    a, b = older.compacted(), newer.compacted()
    width = max(a.hawb.itemsize, b.hawb.itemsize)
    ka = a.hawb.astype(f"S{width}", copy=False)
    kb = b.hawb.astype(f"S{width}", copy=False)
    size = len(ka) + len(kb)
    from_b = np.zeros(size, dtype=np.bool_)
    from_b[np.searchsorted(ka, kb) + np.arange(len(kb))] = True
    from_a = ~from_b

    def interleave(x: npt.NDArray[T], y: npt.NDArray[T], dtype: npt.DTypeLike) -> npt.NDArray[T]:
        out: npt.NDArray[T] = np.empty(size, dtype=dtype)
        out[from_a] = x
        out[from_b] = y
        return out

    texts, bases = Texts.concat([a.texts, b.texts])
    goods = interleave(a.goods, b.goods + np.int32(bases[1]), np.int32)
    if len(texts) > 2 * size + 64:
        texts, goods = texts.keep(goods)
    return _Segment(
        interleave(ka, kb, ka.dtype),
        interleave(a.channel, b.channel, np.int8),
        interleave(a.score, b.score, np.float64),
        goods,
        texts,
        interleave(a.flight, b.flight, np.int32),
        interleave(a.origin, b.origin, np.int32),
        interleave(a.place, b.place, np.int32),
        interleave(a.stamp, b.stamp, np.int64),
    )


class RiskBook:
    """Risk results by HAWB; implements the ``RiskSource`` port.

    Lookups are a dict read and a binary search per segment: microseconds, no I/O, never
    blocking. An unknown HAWB looks up as None (the policy then inspects).

    Conflicts: a result for a HAWB already held replaces it only if it is more severe (RED
    over YELLOW over GREEN; of one channel, the higher score); otherwise the held result
    stays. So no later file, feed or fetch can downgrade a result. Different results for one
    HAWB (in one batch or across loads) raise an alarm on ``alarms`` named
    ``risk/conflict/<HAWB>`` that gives both results and where each came from, and are
    reported as feed problems; an identical repeat is not a conflict. At most
    :data:`ALARMS_PER_LOAD` such alarms and :data:`DETAILED_PER_LOAD` such problems per load,
    then one of each that counts the rest (every conflict is still resolved the same way).

    ``max_entries`` bounds memory: when an add overfills the book, the results loaded longest
    ago are evicted first (a result counts as loaded again whenever a load names it again). An
    evicted HAWB looks up as None, so choose a bound well above the parcels expected between
    loading a manifest and the last of its parcels being scanned. None means no bound.

    Use it from one thread (the event loop's); it holds no lock.
    """

    def __init__(self, max_entries: int | None = None, *, alarms: AlarmSink | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None, got {max_entries}")
        self.max_entries = max_entries
        self.alarms = alarms
        """Where conflicts are raised (the site's alarm board); None: only logged."""
        self._recent: dict[str, _Held] = {}
        self._segments: list[_Segment] = []
        self._flights: list[str] = []
        self._flight_ids: dict[str, int] = {}
        self._origins: list[tuple[str, Unit]] = []
        self._origin_ids: dict[tuple[str, Unit], int] = {}
        self._counts = [0, 0, 0]  # live results per channel code
        self._live = 0
        self._loads = 0
        self._evicted = 0
        self._reported: dict[int, tuple[RiskFeed, frozenset[str]]] = {}
        self._feeds: tuple[RiskFeed, ...] = ()

    def __len__(self) -> int:
        return self._live

    def __contains__(self, hawb: object) -> bool:
        return isinstance(hawb, str) and self.get(hawb) is not None

    @property
    def link_state(self) -> LinkState:
        """The feeds' link states combined (up only when every feed is up); a feed without
        ``link_state`` counts as up once it has been fetched."""
        return LinkState.combine(getattr(feed, "link_state", LinkState.UP) for feed in self._feeds)

    @property
    def nbytes(self) -> int:
        """About how much memory the held results take (results waiting as objects are
        counted at an estimate)."""
        tables = sum(len(name) + 80 for name in self._flights)
        tables += sum(len(name) + 80 for name, _ in self._origins)
        segments = sum(segment.nbytes for segment in self._segments)
        return segments + tables + len(self._recent) * _RECENT_BYTES

    def get(self, hawb: str) -> RiskResult | None:
        """The result held for ``hawb`` (exact match), or None."""
        held = self._recent.get(hawb)
        if held is not None:
            return held.result
        key = key_of(hawb)
        if key is None:
            return None
        for segment in reversed(self._segments):
            row = segment.find(key)
            if row >= 0:
                return self._result(segment, row, hawb)
        return None

    async def lookup(self, hawb: str) -> RiskResult | None:
        """``RiskSource.lookup``: the result held for ``hawb``, or None. Never blocks."""
        return self.get(hawb)

    def counts(self) -> dict[RiskChannel, int]:
        """How many results are held per channel; every channel is present."""
        return dict(zip(CHANNELS, self._counts, strict=True))

    @property
    def evicted(self) -> int:
        """How many results ``max_entries`` has evicted since the book was made."""
        return self._evicted

    def add(self, batch: FeedBatch | Iterable[RiskResult]) -> int:
        """Hold the batch's results, each HAWB held already resolved to the most severe
        result; return how many results the batch had. Conflicts are logged and raised as
        alarms; the batch's own problems are not looked at."""
        if not isinstance(batch, FeedBatch):
            results = list(batch)
            if len(results) <= ROW_BY_ROW_MAX:  # the twin adds one per arriving parcel
                report = self._load_direct(results)
                self._log(report)
                return len(results)
            batch = FeedBatch(results)
            for problem in batch.problems:
                logger.warning("risk result not held: %s", problem)
        self._log(self._load(batch))
        return len(batch)

    async def refresh_once(self, feeds: Sequence[RiskFeed]) -> list[FeedProblem]:
        """Fetch every feed (concurrently), add what came, and return this round's problems
        (conflicts with results held already among them).

        Each problem is logged as a warning once: a problem a feed reported in its previous
        round too (an HTTP source that stays down) is not logged again. A feed that raises is
        reported as a problem; the other feeds' results still load.
        """
        self._feeds = tuple(feeds)
        batches = await asyncio.gather(*(self._fetch(feed) for feed in feeds))
        problems: list[FeedProblem] = []
        added = 0
        for feed, batch in zip(feeds, batches, strict=True):
            found = batch.problems + self._load(batch).problems
            added += len(batch)
            problems.extend(found)
            texts = [str(problem) for problem in found]
            _, before = self._reported.get(id(feed), (feed, frozenset()))
            for text in texts:
                if text not in before:
                    logger.warning("risk feed problem: %s", text)
            self._reported[id(feed)] = (feed, frozenset(texts))
        if added:
            logger.info("risk book: %d results loaded, %d held", added, len(self))
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
            return FeedBatch((), [FeedProblem(repr(feed), None, "", "", message)])

    # --- loading ---------------------------------------------------------------------------

    def _load(self, batch: FeedBatch) -> _Report:
        """Hold ``batch``; raise its conflicts and those with what is held; report the latter
        (the batch reported its own)."""
        columns = batch.columns
        report = _Report(list(batch.conflicts))
        if len(columns):
            self._loads += 1
            flights = self._ids(columns.flights, self._flights, self._flight_ids)
            origins = self._ids(columns.origins, self._origins, self._origin_ids)
            flight = self._renumber(flights, columns.flight)
            origin = self._renumber(origins, columns.origin)
            stamps = (np.int64(self._loads) << np.int64(32)) + columns.place.astype(np.int64)
            if len(columns) <= ROW_BY_ROW_MAX:
                self._load_rows(columns, origin, stamps, report)
            else:
                self._load_columns(columns, flight, origin, stamps, report)
            self._evict_over_bound()
            report.close(columns.origins[0])
        self._raise(report)
        return report

    def _load_direct(self, results: list[RiskResult]) -> _Report:
        """A few results handed over without a feed, one at a time."""
        report = _Report([])
        self._loads += 1
        direct: tuple[str, Unit] = (DIRECT, "record")
        origin = self._ids([direct], self._origins, self._origin_ids)[0]
        for place, result in enumerate(results, start=1):
            if key_of(result.hawb) is None:
                logger.warning("risk result not held: the book cannot hold HAWB %r", result.hawb)
                continue
            held = _Held(result, int(origin), place, (self._loads << 32) + place)
            self._put(held, report)
        if len(self._recent) > RECENT_MAX:
            self._fold()
        self._evict_over_bound()
        report.close(direct)
        self._raise(report)
        return report

    @staticmethod
    def _ids(names: Sequence[Name], table: list[Name], ids: dict[Name, int]) -> Ids:
        """The book's id of each of a batch's table entries (new ones are added)."""
        found = []
        for name in names:
            index = ids.get(name)
            if index is None:
                index = ids[name] = len(table)
                table.append(name)
            found.append(index)
        return np.array(found, dtype=np.int32)

    @staticmethod
    def _renumber(mapping: Ids, ids: Ids) -> Ids:
        """``mapping[ids]``, or ``ids`` itself where the mapping changes nothing."""
        if np.array_equal(mapping, np.arange(len(mapping))):
            return ids
        return mapping[ids]

    def _load_rows(
        self,
        columns: ResultColumns,
        origin: Ids,
        stamps: Stamps,
        report: _Report,
    ) -> None:
        """A small batch, one result at a time, in the order it was read."""
        for row in np.lexsort((columns.place, columns.origin)).tolist():
            held = _Held(
                columns.result(row), int(origin[row]), int(columns.place[row]), int(stamps[row])
            )
            self._put(held, report)
        if len(self._recent) > RECENT_MAX:
            self._fold()

    def _put(self, new: _Held, report: _Report) -> None:
        hawb = new.result.hawb
        waiting = self._recent.get(hawb)
        if waiting is not None:
            del self._recent[hawb]  # re-inserted below: the dict's order is the load order
            if waiting.result == new.result:
                self._recent[hawb] = replace(waiting, stamp=new.stamp)
                return
            self._conflict(new, waiting.result, self._where(waiting), report)
            if outranks(new.result, waiting.result):
                self._counts[SEVERITY[waiting.result.channel]] -= 1
                self._counts[SEVERITY[new.result.channel]] += 1
                self._recent[hawb] = new
            else:
                self._recent[hawb] = replace(waiting, stamp=new.stamp)
            return
        key = key_of(hawb)
        assert key is not None  # columns hold only keys the book can hold
        for segment in reversed(self._segments):
            row = segment.find(key)
            if row < 0:
                continue
            held = self._result(segment, row, hawb)
            if held == new.result or not outranks(new.result, held):
                if held != new.result:
                    where = self._describe(int(segment.origin[row]), int(segment.place[row]))
                    self._conflict(new, held, where, report)
                segment.stamp[row] = new.stamp
                return
            where = self._describe(int(segment.origin[row]), int(segment.place[row]))
            self._conflict(new, held, where, report)
            segment.kill(np.array([row]), self._counts)
            self._live -= 1
            break
        self._recent[hawb] = new
        self._counts[SEVERITY[new.result.channel]] += 1
        self._live += 1

    def _load_columns(
        self, columns: ResultColumns, flight: Ids, origin: Ids, stamps: Stamps, report: _Report
    ) -> None:
        """A large batch, column-wise: match it against every segment at once."""
        self._fold()  # what waits as objects joins the segments: one place to match against
        if columns.sorted_unique:
            rows: Rows = np.arange(len(columns))
        else:
            if columns.by_key:  # sorted in the feed's worker thread
                rows = np.arange(len(columns))
            else:
                read_order = np.lexsort((columns.place, columns.origin))
                rows = read_order[np.argsort(columns.hawb[read_order], kind="stable")]
            if (columns.hawb[rows][1:] == columns.hawb[rows][:-1]).any():
                rows = self._resolve(columns, rows, flight, origin, report)
        keys = columns.hawb[rows]
        fresh = np.ones(len(rows), dtype=np.bool_)
        hashes = columns.texts.hashes
        for segment in self._segments:
            if not segment.n_live:
                continue
            which, held_rows = segment.match(keys)
            if not which.size:
                continue
            new_rows = rows[which]
            new_code, held_code = columns.channel[new_rows], segment.channel[held_rows]
            new_score, held_score = columns.score[new_rows], segment.score[held_rows]
            same = (
                (new_code == held_code)
                & (new_score == held_score)
                & (flight[new_rows] == segment.flight[held_rows])
                & (
                    hashes[columns.goods[new_rows]]
                    == segment.texts.hashes[segment.goods[held_rows]]
                )
            )
            differ, room = np.flatnonzero(~same), report.room()
            for k in differ[:room].tolist():
                new_row, held_row = int(new_rows[k]), int(held_rows[k])
                new = self._held(columns, new_row, origin, stamps)
                held = self._result(segment, held_row, new.result.hawb)
                where = self._describe(int(segment.origin[held_row]), int(segment.place[held_row]))
                self._conflict(new, held, where, report)
            report.uncounted(max(0, len(differ) - room))
            wins = (new_code > held_code) | ((new_code == held_code) & (new_score > held_score))
            segment.kill(held_rows[wins], self._counts)
            self._live -= int(wins.sum())
            stays = ~wins
            segment.stamp[held_rows[stays]] = stamps[new_rows[stays]]
            fresh[which[stays]] = False
        if fresh.all() and len(rows) == len(columns) and columns.sorted_unique:
            segment = _Segment(  # all of it, as it came: no copies
                columns.hawb,
                columns.channel,
                columns.score,
                columns.goods,
                columns.texts,
                flight,
                origin,
                columns.place,
                stamps,
            )
        else:
            rows = rows[fresh]
            if not rows.size:
                self._settle()
                return
            texts, goods = columns.texts, columns.goods[rows]
            if len(texts) > 2 * len(rows) + 64:  # most texts belong to rows not kept
                texts, goods = texts.keep(goods)
            segment = _Segment(
                keys[fresh],
                columns.channel[rows],
                columns.score[rows],
                goods,
                texts,
                flight[rows],
                origin[rows],
                columns.place[rows],
                stamps[rows],
            )
        for code, count in enumerate(np.bincount(segment.channel, minlength=3).tolist()):
            self._counts[code] += count
        self._live += len(segment)
        self._segments.append(segment)
        self._settle()

    @staticmethod
    def _held(columns: ResultColumns, row: int, origin: Ids, stamps: Stamps) -> _Held:
        place = int(columns.place[row])
        return _Held(columns.result(row), int(origin[row]), place, int(stamps[row]))

    def _resolve(
        self, columns: ResultColumns, rows: Rows, flight: Ids, origin: Ids, report: _Report
    ) -> Rows:
        """One row per HAWB of a batch that repeats HAWBs (two files of one fetch): the most
        severe (the first read of equal severity). ``rows`` is sorted by HAWB, repeats in
        the order they were read."""
        kept, losers, winners = most_severe(
            columns.hawb[rows], columns.channel[rows], columns.score[rows]
        )
        loser_rows, winner_rows = rows[losers], rows[winners]
        hashes = columns.texts.hashes
        same = (
            (columns.channel[loser_rows] == columns.channel[winner_rows])
            & (columns.score[loser_rows] == columns.score[winner_rows])
            & (flight[loser_rows] == flight[winner_rows])
            & (hashes[columns.goods[loser_rows]] == hashes[columns.goods[winner_rows]])
        )
        differ, room = np.flatnonzero(~same), report.room()
        for k in differ[:room].tolist():
            # the pair as read: the later row is the newcomer, the report is its source's
            earlier, later = sorted((int(losers[k]), int(winners[k])))
            held_row, new_row = int(rows[earlier]), int(rows[later])
            new = _Held(
                columns.result(new_row), int(origin[new_row]), int(columns.place[new_row]), 0
            )
            self._conflict(new, columns.result(held_row), columns.where(held_row), report)
        report.uncounted(max(0, len(differ) - room))
        return rows[kept]

    def _fold(self) -> None:
        """Move the results waiting as objects into a segment of their own."""
        if not self._recent:
            return
        waiting = sorted(self._recent.values(), key=lambda held: held.result.hawb.encode())
        self._recent = {}
        texts: dict[str, int] = {}
        results = [held.result for held in waiting]
        flights = self._ids([r.flight for r in results], self._flights, self._flight_ids)
        self._segments.append(
            _Segment(
                as_keys([r.hawb.encode() for r in results]),
                np.array([SEVERITY[r.channel] for r in results], dtype=np.int8),
                np.array([r.score for r in results], dtype=np.float64),
                np.array(
                    [texts.setdefault(r.declared_goods, len(texts)) for r in results],
                    dtype=np.int32,
                ),
                Texts.of(list(texts)),
                flights,
                np.array([held.origin for held in waiting], dtype=np.int32),
                np.array([held.place for held in waiting], dtype=np.int32),
                np.array([held.stamp for held in waiting], dtype=np.int64),
            )
        )
        self._settle()

    def _settle(self) -> None:
        """Drop empty segments, compact half-dead ones, merge while the newest is at least
        half the size of the one before it (so there are O(log n) segments)."""
        segments = [s if s.n_live * 2 > len(s) else s.compacted() for s in self._segments]
        segments = [s for s in segments if len(s)]
        while len(segments) >= 2 and len(segments[-2]) <= 2 * len(segments[-1]):
            newer, older = segments.pop(), segments.pop()
            segments.append(_merge(older, newer))
        self._segments = segments

    def _evict_over_bound(self) -> None:
        if self.max_entries is None or self._live <= self.max_entries:
            return
        excess = self._live - self.max_entries
        waiting = list(self._recent.values())
        parts = [np.array([held.stamp for held in waiting], dtype=np.int64)]
        lives = [np.flatnonzero(segment.live) for segment in self._segments]
        parts += [segment.stamp[live] for segment, live in zip(self._segments, lives, strict=True)]
        oldest = np.sort(np.argpartition(np.concatenate(parts), excess - 1)[:excess])
        bounds = np.cumsum([len(part) for part in parts])
        for held_index in oldest[oldest < bounds[0]].tolist():
            held = waiting[held_index]
            del self._recent[held.result.hawb]
            self._counts[SEVERITY[held.result.channel]] -= 1
        for i, (segment, live) in enumerate(zip(self._segments, lives, strict=True)):
            start, end = bounds[i], bounds[i + 1]
            chosen = oldest[(oldest >= start) & (oldest < end)] - start
            if chosen.size:
                segment.kill(live[chosen], self._counts)
        self._live -= excess
        self._evicted += excess
        logger.warning(
            "risk book full (max_entries=%d): evicted the %d results loaded longest ago",
            self.max_entries,
            excess,
        )
        self._settle()

    # --- reading and reporting -------------------------------------------------------------

    def _result(self, segment: _Segment, row: int, hawb: str) -> RiskResult:
        return RiskResult(
            hawb=hawb,
            channel=CHANNELS[int(segment.channel[row])],
            score=float(segment.score[row]),
            declared_goods=segment.texts[int(segment.goods[row])],
            flight=self._flights[int(segment.flight[row])],
        )

    def _describe(self, origin: int, place: int) -> str:
        return describe_place(self._origins[origin], place)

    def _where(self, held: _Held) -> str:
        return self._describe(held.origin, held.place)

    def _conflict(self, new: _Held, held: RiskResult, held_from: str, report: _Report) -> None:
        """Note that ``new`` (being loaded) differs from ``held``: a conflict to raise and a
        problem of the source ``new`` came from (beyond :data:`DETAILED_PER_LOAD` in one
        load, only counted)."""
        if not report.room():
            report.uncounted(1)
            return
        new_from = self._where(new)
        if outranks(new.result, held):
            kept, kept_from, other, other_from = new.result, new_from, held, held_from
        else:
            kept, kept_from, other, other_from = held, held_from, new.result, new_from
        hawb = new.result.hawb
        report.conflicts.append(Conflict(hawb, kept, kept_from, other, other_from))
        name, unit = self._origins[new.origin]
        message = (
            f"conflicts with {describe(held, new.result)} from {held_from}; "
            f"the most severe, {describe(kept, other)}, is kept"
        )
        report.add(FeedProblem(name, new.place or None, "hawb", shown(hawb), message, unit))

    def _raise(self, report: _Report) -> None:
        conflicts = report.conflicts
        if self.alarms is None or not report.total:
            return
        for conflict in conflicts[:ALARMS_PER_LOAD]:
            self._alarm(f"risk/conflict/{conflict.hawb}", str(conflict))
        if report.total > ALARMS_PER_LOAD:
            self._alarm(
                f"risk/conflicts/load-{self._loads}",
                f"{report.total} conflicting risk results in one load (each resolved to the "
                f"most severe); the first {ALARMS_PER_LOAD} have alarms of their own, the feed "
                "problems name the rest",
            )

    @staticmethod
    def _log(report: _Report) -> None:
        for problem in report.problems:
            logger.warning("risk result conflict: %s", problem)

    def _alarm(self, source: str, message: str) -> None:
        assert self.alarms is not None
        try:
            self.alarms.alarm(source, message, active=True)
        except Exception:
            logger.exception("could not raise alarm %s: %s", source, message)
