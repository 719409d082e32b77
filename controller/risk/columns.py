"""Risk results column-wise, in numpy arrays: how a parsed batch travels to the book.

A million results as Python objects (a ``RiskResult`` with its strings and float) cost some
650 bytes each; as columns they cost about 50: the HAWB as fixed-width bytes, the channel as
one byte, the score as a float64, and ids into small tables for the texts that repeat
(declared goods, flights, where a row came from). :class:`RiskResult` objects are built only
when someone asks for one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from controller.core.domain import RiskChannel, RiskResult

Unit = Literal["line", "record"]

CHANNELS: tuple[RiskChannel, ...] = (RiskChannel.GREEN, RiskChannel.YELLOW, RiskChannel.RED)
"""Channels by severity: a channel's code in the columns is its index here."""
SEVERITY: dict[RiskChannel, int] = {channel: code for code, channel in enumerate(CHANNELS)}

KEY_MAX_BYTES = 64
"""The longest HAWB (UTF-8 bytes) the book can hold; feeds allow 35 characters."""

DIRECT = "added directly"
"""The origin named for results handed to the book without a feed."""

Keys = npt.NDArray[np.bytes_]
Codes = npt.NDArray[np.int8]
Scores = npt.NDArray[np.float64]
Ids = npt.NDArray[np.int32]
Offsets = npt.NDArray[np.int64]
Hashes = npt.NDArray[np.int64]


def outranks(a: RiskResult, b: RiskResult) -> bool:
    """True when ``a`` is more severe than ``b``: a higher channel, or the same channel and a
    higher score. Neither outranks the other when both are equal."""
    return (SEVERITY[a.channel], a.score) > (SEVERITY[b.channel], b.score)


def key_of(hawb: object) -> bytes | None:
    """The bytes a HAWB is stored under, or None when the book cannot hold it (not text,
    empty, a NUL character, not encodable, longer than :data:`KEY_MAX_BYTES`)."""
    if not isinstance(hawb, str) or not hawb or "\x00" in hawb:
        return None
    try:
        key = hawb.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return key if len(key) <= KEY_MAX_BYTES else None


def as_keys(keys: Sequence[bytes] | Sequence[str]) -> Keys:
    """A fixed-width bytes array just wide enough for ``keys`` (str keys must be ASCII)."""
    width = max(1, max(map(len, keys), default=1))
    return np.array(keys, dtype=f"S{width}")


def empty_keys() -> Keys:
    """No keys (width 1: numpy has no zero-width bytes type)."""
    return np.empty(0, dtype="S1")


@dataclass(frozen=True, eq=False)
class Texts:
    """Strings as one UTF-8 blob with offsets, and each string's hash (to tell two texts
    apart without decoding them). Entry ``i`` is ``blob[offsets[i]:offsets[i + 1]]``."""

    blob: bytes
    offsets: Offsets
    hashes: Hashes

    @classmethod
    def of(cls, strings: Sequence[str]) -> Texts:
        """The table of ``strings`` (lone surrogates, as JSON may carry, survive)."""
        joined = "".join(strings)
        blob = joined.encode("utf-8", "surrogatepass")
        if len(blob) == len(joined):
            lengths: Iterable[int] = map(len, strings)
        else:
            lengths = (len(s.encode("utf-8", "surrogatepass")) for s in strings)
        offsets = np.zeros(len(strings) + 1, dtype=np.int64)
        offsets[1:] = np.fromiter(lengths, dtype=np.int64, count=len(strings)).cumsum()
        hashes = np.fromiter(map(hash, strings), dtype=np.int64, count=len(strings))
        return cls(blob, offsets, hashes)

    @classmethod
    def empty(cls) -> Texts:
        return cls(b"", np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.hashes)

    def __getitem__(self, index: int) -> str:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.blob[start:end].decode("utf-8", "surrogatepass")

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.offsets.nbytes + self.hashes.nbytes

    @staticmethod
    def concat(parts: Sequence[Texts]) -> tuple[Texts, list[int]]:
        """One table holding every part's entries; also each part's first id in it."""
        if len(parts) == 1:
            return parts[0], [0]
        bases: list[int] = []
        offsets: list[Offsets] = [np.zeros(1, dtype=np.int64)]
        count = size = 0
        for part in parts:
            bases.append(count)
            offsets.append(part.offsets[1:] + size)
            count += len(part)
            size += len(part.blob)
        blob = b"".join(part.blob for part in parts)
        hashes = np.concatenate([part.hashes for part in parts])
        return Texts(blob, np.concatenate(offsets), hashes), bases

    def keep(self, ids: Ids) -> tuple[Texts, Ids]:
        """Only the entries ``ids`` use (garbage left by dropped rows goes); ``ids`` renumbered."""
        used, renumbered = np.unique(ids, return_inverse=True)
        if len(used) == len(self):
            return self, ids
        starts, ends = self.offsets[used], self.offsets[used + 1]
        blob = b"".join(self.blob[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True))
        offsets = np.zeros(len(used) + 1, dtype=np.int64)
        offsets[1:] = (ends - starts).cumsum()
        return Texts(blob, offsets, self.hashes[used]), renumbered.astype(np.int32)


@dataclass(frozen=True, eq=False)
class ResultColumns:
    """Risk results as parallel arrays, one row per result.

    ``goods`` indexes ``texts``, ``flight`` indexes ``flights`` and ``origin`` indexes
    ``origins`` (where the row came from: a file or URL, and whether ``place`` counts lines or
    JSON records; ``place`` 0 means unknown). ``by_key`` promises that the rows are sorted by
    ``hawb``, repeats of one in the order they were read, and ``sorted_unique`` that there are
    no repeats either: either spares the book (on the event loop) a sort.
    """

    hawb: Keys
    channel: Codes
    score: Scores
    goods: Ids
    texts: Texts
    flight: Ids
    flights: tuple[str, ...]
    origin: Ids
    origins: tuple[tuple[str, Unit], ...]
    place: Ids
    sorted_unique: bool = False
    by_key: bool = False

    def __len__(self) -> int:
        return len(self.hawb)

    @classmethod
    def empty(cls) -> ResultColumns:
        ids = np.empty(0, dtype=np.int32)
        return cls(
            empty_keys(),
            np.empty(0, dtype=np.int8),
            np.empty(0, dtype=np.float64),
            ids,
            Texts.empty(),
            ids,
            (),
            ids,
            (),
            ids,
            sorted_unique=True,
            by_key=True,
        )

    @classmethod
    def from_results(
        cls, results: Iterable[RiskResult], origin: str = DIRECT
    ) -> tuple[ResultColumns, list[tuple[int, RiskResult]]]:
        """Columns of ``results`` in their order (``place`` counts them from 1); also the
        results the book could not hold (see :func:`key_of`), with their place."""
        keys: list[bytes] = []
        codes: list[int] = []
        scores: list[float] = []
        goods: list[int] = []
        flight: list[int] = []
        places: list[int] = []
        texts: dict[str, int] = {}
        flights: dict[str, int] = {}
        rejected: list[tuple[int, RiskResult]] = []
        for place, result in enumerate(results, start=1):
            key = key_of(result.hawb)
            if key is None:
                rejected.append((place, result))
                continue
            keys.append(key)
            codes.append(SEVERITY[result.channel])
            scores.append(float(result.score))
            goods.append(texts.setdefault(result.declared_goods, len(texts)))
            flight.append(flights.setdefault(result.flight, len(flights)))
            places.append(place)
        if not keys:
            return cls.empty(), rejected
        columns = cls(
            as_keys(keys),
            np.array(codes, dtype=np.int8),
            np.array(scores, dtype=np.float64),
            np.array(goods, dtype=np.int32),
            Texts.of(list(texts)),
            np.array(flight, dtype=np.int32),
            tuple(flights),
            np.zeros(len(keys), dtype=np.int32),
            ((origin, "record"),),
            np.array(places, dtype=np.int32),
        )
        return columns, rejected

    @staticmethod
    def concat(parts: Sequence[ResultColumns]) -> ResultColumns:
        """Every part's rows, in order (no longer sorted or unique, unless there is one part);
        see :meth:`sorted_by_key`."""
        parts = [part for part in parts if len(part)]
        if not parts:
            return ResultColumns.empty()
        if len(parts) == 1:
            return parts[0]
        texts, text_bases = Texts.concat([part.texts for part in parts])
        flights: list[str] = []
        origins: list[tuple[str, Unit]] = []
        flight_ids: list[Ids] = []
        origin_ids: list[Ids] = []
        for part in parts:
            flight_ids.append(part.flight + np.int32(len(flights)))
            origin_ids.append(part.origin + np.int32(len(origins)))
            flights.extend(part.flights)
            origins.extend(part.origins)
        goods = [part.goods + np.int32(base) for part, base in zip(parts, text_bases, strict=True)]
        return ResultColumns(
            np.concatenate([part.hawb for part in parts]),
            np.concatenate([part.channel for part in parts]),
            np.concatenate([part.score for part in parts]),
            np.concatenate(goods),
            texts,
            np.concatenate(flight_ids),
            tuple(flights),
            np.concatenate(origin_ids),
            tuple(origins),
            np.concatenate([part.place for part in parts]),
        )

    def sorted_by_key(self) -> ResultColumns:
        """These rows sorted by HAWB, repeats in the order they were read (for a batch of
        several sources: its parts were concatenated in the order read)."""
        if self.by_key:
            return self
        order = np.lexsort((self.place, self.origin))
        order = order[np.argsort(self.hawb[order], kind="stable")]
        keys = self.hawb[order]
        unique = not bool((keys[1:] == keys[:-1]).any())
        return replace(self.take(order), by_key=True, sorted_unique=unique)

    def take(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> ResultColumns:
        """The rows ``rows`` selects (a mask or indices), sharing the tables."""
        return replace(
            self,
            hawb=self.hawb[rows],
            channel=self.channel[rows],
            score=self.score[rows],
            goods=self.goods[rows],
            flight=self.flight[rows],
            origin=self.origin[rows],
            place=self.place[rows],
        )

    def result(self, row: int) -> RiskResult:
        """Row ``row`` as a domain value."""
        return RiskResult(
            hawb=bytes(self.hawb[row]).decode("utf-8"),
            channel=CHANNELS[int(self.channel[row])],
            score=float(self.score[row]),
            declared_goods=self.texts[int(self.goods[row])],
            flight=self.flights[int(self.flight[row])],
        )

    def results(self) -> list[RiskResult]:
        """Every row as a domain value, in the order they were read (source, then place).
        Builds one object per row: for tests and small batches."""
        order = np.lexsort((self.place, self.origin))
        return [self.result(row) for row in order.tolist()]

    def where(self, row: int) -> str:
        """Where row ``row`` came from, for people: ``m.csv line 4``, ``feed.json record 2``."""
        return describe_place(self.origins[int(self.origin[row])], int(self.place[row]))

    def same(self, a: int, b: int) -> bool:
        """Whether rows ``a`` and ``b`` hold the same result (the same texts: equal hashes)."""
        return bool(
            self.channel[a] == self.channel[b]
            and self.score[a] == self.score[b]
            and self.flights[int(self.flight[a])] == self.flights[int(self.flight[b])]
            and self.texts.hashes[self.goods[a]] == self.texts.hashes[self.goods[b]]
        )


def describe_place(origin: tuple[str, Unit], place: int) -> str:
    name, unit = origin
    return f"{name} {unit} {place}" if place > 0 and name != DIRECT else name


def most_severe(
    keys: Keys, channel: Codes, score: Scores
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """For rows sorted by key, repeats of a key in the order they were read: the row kept for
    each key (the most severe; of equal severity the first read), in key order; and every
    other row of a repeated key (a loser) with the row kept in its place."""
    count = len(keys)
    starts = np.ones(count, dtype=np.bool_)
    starts[1:] = keys[1:] != keys[:-1]
    group = np.cumsum(starts) - 1
    order = np.lexsort((np.arange(count), -score, -channel.astype(np.int16), group))
    first = np.ones(count, dtype=np.bool_)
    first[1:] = group[order][1:] != group[order][:-1]
    kept = order[first]
    winner = kept[group]
    losers = np.flatnonzero(winner != np.arange(count))
    return kept, losers, winner[losers]
