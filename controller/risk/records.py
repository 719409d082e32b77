"""Risk feed records: the file formats, one record's validation, and the parsers.

A risk feed carries the customs risk results computed from the advance manifest, one record
per house air waybill (HAWB). A record has these fields:

    hawb            required; 1..35 ASCII letters, digits or '-'; compared exactly
    channel         required; GREEN, YELLOW or RED, in any letter case
    score           required; a number in [0, 1]
    declared_goods  optional text, may be empty (JSON null counts as empty)
    flight          optional text (JSON null or an empty cell count as absent)

Surrounding whitespace is stripped from every text value.

CSV (UTF-8, comma-separated, standard quoting, one header row)::

    hawb,channel,score,declared_goods,flight
    LH8400-000001,GREEN,0.05,books,LH8400
    LH8400-000002,red,0.91,"phone, charger",LH8400

The header names the columns in any order and letter case; ``hawb``, ``channel`` and ``score``
must be there, ``declared_goods`` and ``flight`` may be left out. An unknown column is reported
once, as a problem on line 1, and ignored. A row whose number of values differs from the
header's is reported and skipped (a stray comma shifts every later value). Blank lines are
skipped. A row with broken quoting (a quote never closed, text after a closing quote) is
reported on the line where it began and skipped, and reading goes on from the next line, so a
stray quote costs its own row and not the rows it would have swallowed; the same holds for a
row spanning several lines whose number of values is wrong. A header that lacks a required
column, repeats a column or has broken quoting rejects the whole file with one problem.

JSON (UTF-8): either a list of record objects, or an object::

    {"flight": "LH8400", "cursor": "opaque", "results": [
        {"hawb": "LH8400-000001", "channel": "GREEN", "score": 0.05, "declared_goods": "books"}
    ]}

The top-level ``flight`` applies to records that do not name one. ``cursor`` is read only by
the HTTP feed (see :mod:`controller.risk.feeds`). Other top-level keys, and unknown keys in a
record, are reported once per batch and ignored. A document that is not JSON, or not of this
shape, rejects the whole file with one problem.

Examples: ``config/feeds/example-manifest-LH8400.csv`` and
``config/feeds/example-manifest-CV7312.json``.

Problems: a bad record is reported as a :class:`FeedProblem` naming its place (CSV: the
physical line number, the header being line 1; JSON: the record's 1-based index in
``results``, shown as "record N"), the field and the offending value; it is skipped and the
rest of the batch loads. The parsers never raise on bad input.

Repeats: when one batch names a HAWB twice with different results, the most severe is kept
(RED over YELLOW over GREEN; of one channel, the higher score; of equal severity, the first),
a problem on the later place names both, and the batch carries a :class:`Conflict` for the
risk book to raise as an alarm. A repeat identical to the first is reported and ignored. The
risk book applies the same rule across batches, files and feeds, so a later or another
manifest can never downgrade a result.

Speed: rows are checked a chunk at a time with plain string and numpy operations; only a row
those checks doubt goes through :class:`FeedRecord`, which decides it and words its problems.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from controller.core.domain import RiskChannel, RiskResult
from controller.risk.columns import (
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
    most_severe,
)

HAWB_MAX_LEN = 35
_HAWB_RE = re.compile(r"[A-Za-z0-9-]+")
_PLAIN_HAWB = re.compile(r"[A-Za-z0-9-]{1,35}")
_VALUE_SHOWN_MAX = 80

FIELDS: tuple[str, ...] = ("hawb", "channel", "score", "declared_goods", "flight")
REQUIRED_FIELDS: tuple[str, ...] = ("hawb", "channel", "score")
_FIELD_SET = frozenset(FIELDS)
_JSON_TOP_KEYS = frozenset({"flight", "results", "cursor"})
_CODES: dict[str, int] = {channel.value: code for channel, code in SEVERITY.items()}
_NUMBER_TYPES = frozenset({str, int, float})

_CHUNK = 1024
"""Rows checked together: large enough for the bulk checks to pay, small enough that a
chunk's row objects die young (cheap for the garbage collector, kind to the CPU cache)."""
_PIECE = 1 << 20
"""Characters of CSV text handed to the csv reader at a time (no copy of the whole text)."""
_BREAK = re.compile(r"\r\n|\r|\n")
"""A line break as the csv reader's input (``newline=""``) counts them."""
_MISSING: Final = object()
"""Stands for a field a record does not have."""

__all__ = [
    "FIELDS",
    "HAWB_MAX_LEN",
    "REQUIRED_FIELDS",
    "Conflict",
    "FeedBatch",
    "FeedProblem",
    "FeedRecord",
    "Unit",
    "describe",
    "parse_csv",
    "parse_json",
    "parse_json_page",
    "shown",
]


@dataclass(frozen=True, slots=True)
class FeedProblem:
    """One thing wrong in a feed. ``line`` is None for a problem with the whole source.

    ``value`` is the offending value as shown to people (its ``repr``), or "" when there is
    none; ``unit`` says whether ``line`` counts text lines or JSON records.
    """

    source: str
    line: int | None
    field: str
    value: str
    message: str
    unit: Unit = "line"

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source} {self.unit} {self.line}"
        if self.field and self.value:
            return f"{where}: {self.field} = {self.value}: {self.message}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


def describe(result: RiskResult, against: RiskResult | None = None) -> str:
    """A result as people compare it: ``RED 0.91``; with the goods and flight too when only
    those differ from ``against``."""
    text = f"{result.channel.value} {result.score!r}"
    if against is not None and (result.channel, result.score) == (against.channel, against.score):
        extra = []
        if result.declared_goods != against.declared_goods:
            extra.append(f"declared_goods {result.declared_goods!r}")
        if result.flight != against.flight:
            extra.append(f"flight {result.flight!r}")
        if extra:
            text += f" ({', '.join(extra)})"
    return text


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two different risk results for one HAWB and where each came from. ``kept`` is the one
    held: the more severe, or of equal severity the one held first."""

    hawb: str
    kept: RiskResult
    kept_from: str
    other: RiskResult
    other_from: str

    def __str__(self) -> str:
        kept, other = describe(self.kept, self.other), describe(self.other, self.kept)
        return (
            f"HAWB {self.hawb}: conflicting risk results {kept} from {self.kept_from} and "
            f"{other} from {self.other_from}; the most severe, {kept}, is kept"
        )


class FeedBatch:
    """What one parse or one fetch produced: the valid results (held as
    :class:`~controller.risk.columns.ResultColumns`), the problems met, and the conflicts
    resolved within the batch (for the book to raise as alarms).

    ``FeedBatch(results, problems)`` also takes plain :class:`RiskResult` values; one whose
    HAWB the book cannot hold (empty, with a NUL, over 64 bytes) becomes a problem instead.
    """

    __slots__ = ("columns", "conflicts", "problems")

    def __init__(
        self,
        results: Iterable[RiskResult] | ResultColumns = (),
        problems: Iterable[FeedProblem] = (),
        conflicts: Iterable[Conflict] = (),
    ) -> None:
        self.problems: list[FeedProblem] = list(problems)
        self.conflicts: list[Conflict] = list(conflicts)
        if isinstance(results, ResultColumns):
            self.columns = results
            return
        self.columns, rejected = ResultColumns.from_results(results)
        for place, result in rejected:
            message = "the book cannot hold this HAWB (empty, a NUL, or over 64 bytes)"
            self.problems.append(
                FeedProblem(DIRECT, place, "hawb", shown(result.hawb), message, "record")
            )

    @property
    def results(self) -> list[RiskResult]:
        """The results as domain values, in the order they were read (one object each: for
        tests and small batches; the book reads :attr:`columns`)."""
        return self.columns.results()

    def __len__(self) -> int:
        return len(self.columns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeedBatch):
            return NotImplemented
        return (self.results, self.problems, self.conflicts) == (
            other.results,
            other.problems,
            other.conflicts,
        )

    def __repr__(self) -> str:
        return (
            f"FeedBatch(results={self.results if len(self) <= 20 else f'<{len(self)}>'}, "
            f"problems={self.problems!r}, conflicts={self.conflicts!r})"
        )

    @classmethod
    def merge(cls, batches: Iterable[FeedBatch]) -> FeedBatch:
        """One batch holding every result, problem and conflict, in order. Repeats across
        the batches stay in it (the book resolves them); the rows come sorted by HAWB, so the
        sort happens here (a feed's worker thread), not on the event loop."""
        batches = list(batches)
        columns = ResultColumns.concat([batch.columns for batch in batches]).sorted_by_key()
        problems = [problem for batch in batches for problem in batch.problems]
        conflicts = [conflict for batch in batches for conflict in batch.conflicts]
        return cls(columns, problems, conflicts)


def shown(value: object) -> str:
    """A value as it appears in a problem: its repr, cut to a readable length."""
    text = repr(value)
    if len(text) > _VALUE_SHOWN_MAX:
        text = text[: _VALUE_SHOWN_MAX - 3] + "..."
    return text


def _required_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text")
    text = value.strip()
    if not text:
        raise ValueError("is required")
    return text


class FeedRecord(BaseModel):
    """One risk feed record, validated. Unknown fields are refused (the parsers strip and
    report them before validating). The parsers' quick checks accept only what this model
    accepts, with the same values; anything else they hand to this model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hawb: str
    channel: RiskChannel
    score: float
    declared_goods: str = ""
    flight: str | None = None

    @field_validator("hawb", mode="before")
    @classmethod
    def _check_hawb(cls, value: object) -> str:
        text = _required_text(value)
        if len(text) > HAWB_MAX_LEN:
            raise ValueError(f"must be at most {HAWB_MAX_LEN} characters, got {len(text)}")
        if not _HAWB_RE.fullmatch(text):
            raise ValueError("may contain only letters A-Z, digits and '-'")
        return text

    @field_validator("channel", mode="before")
    @classmethod
    def _check_channel(cls, value: object) -> RiskChannel:
        text = _required_text(value).upper()
        try:
            return RiskChannel(text)
        except ValueError:
            raise ValueError("must be GREEN, YELLOW or RED") from None

    @field_validator("score", mode="before")
    @classmethod
    def _check_score(cls, value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, int | float):
            number = float(value)
        else:
            text = _required_text(value)
            try:
                number = float(text)
            except ValueError:
                raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if not 0.0 <= number <= 1.0:
            raise ValueError("must be between 0 and 1")
        return number

    @field_validator("declared_goods", mode="before")
    @classmethod
    def _check_goods(cls, value: object) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError("must be text")
        return value.strip()

    @field_validator("flight", mode="before")
    @classmethod
    def _check_flight(cls, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be text")
        return value.strip() or None

    def to_result(self, default_flight: str = "") -> RiskResult:
        """The domain value; ``default_flight`` stands in when the record names no flight."""
        return RiskResult(
            hawb=self.hawb,
            channel=self.channel,
            score=self.score,
            declared_goods=self.declared_goods,
            flight=self.flight or default_flight,
        )


# --- quick checks: whole chunks at once -----------------------------------------------------


def _plain_hawbs(values: list[Any]) -> bool:
    """Whether every value is already a clean HAWB (text of 1..35 ASCII letters, digits and
    '-', nothing to strip), checked with a few passes over the joined chunk."""
    try:
        joined = "\n".join(values)
    except TypeError:
        return False
    if not joined.isascii() or joined.count("\n") != len(values) - 1:
        return False
    lengths = list(map(len, values))
    if min(lengths) < 1 or max(lengths) > HAWB_MAX_LEN:
        return False
    return joined.replace("-", "").replace("\n", "").isalnum()


def _number(value: object) -> float:
    """``float(value)`` for text and numbers as the record model reads them; NaN otherwise."""
    if type(value) in _NUMBER_TYPES:
        try:
            return float(value)  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            pass
    return math.nan


def _numbers(values: list[Any]) -> Scores:
    """The values as float64, NaN where a value is not plainly a number (the model decides)."""
    count = len(values)
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            return np.fromiter(map(float, values), dtype=np.float64, count=count)
        except (ValueError, OverflowError):
            pass
    return np.fromiter(map(_number, values), dtype=np.float64, count=count)


def _texts(values: list[Any] | None, count: int, default: str = "") -> list[str | None]:
    """Stripped text per value (``default`` for empty, null or absent); None where a value is
    not text (the model decides)."""
    if values is None:
        return [default] * count
    try:
        texts: list[str | None] = list(map(str.strip, values))
    except TypeError:
        return [
            (value.strip() or default)
            if type(value) is str
            else default
            if value is None or value is _MISSING
            else None
            for value in values
        ]
    return [text or default for text in texts] if default else texts


def _intern(table: dict[str, int], values: list[str]) -> Ids:
    """Each value's id in ``table`` (new values are given the next ids)."""
    for value in set(values).difference(table):
        table[value] = len(table)
    return np.fromiter(map(table.__getitem__, values), dtype=np.int32, count=len(values))


class _Builder:
    """Gathers one batch: checks rows a chunk at a time into columns, resolves repeats of a
    HAWB (the most severe stays), notes problems."""

    def __init__(self, source: str, unit: Unit, default_flight: str = "") -> None:
        self.source = source
        self.unit: Unit = unit
        self.default_flight = default_flight
        self.problems: list[FeedProblem] = []
        self._texts: dict[str, int] = {}
        self._flights: dict[str, int] = {}
        self._keys: list[Keys] = []
        self._channel: list[Codes] = []
        self._score: list[Scores] = []
        self._goods: list[Ids] = []
        self._flight: list[Ids] = []
        self._place: list[Ids] = []

    def problem(self, line: int | None, field_name: str, value: str, message: str) -> None:
        self.problems.append(FeedProblem(self.source, line, field_name, value, message, self.unit))

    def add(
        self,
        places: list[int],
        hawb: list[Any],
        channel: list[Any],
        score: list[Any],
        goods: list[Any] | None,
        flight: list[Any] | None,
    ) -> None:
        """Check one chunk of raw rows: one list per field (``_MISSING`` where a record lacks
        the field; None for a column the source does not have)."""
        count = len(places)
        if not count:
            return
        doubtful: set[int] = set()
        if not _plain_hawbs(hawb):
            doubtful.update(
                row
                for row, value in enumerate(hawb)
                if type(value) is not str or not _PLAIN_HAWB.fullmatch(value)
            )
        try:
            codes: list[int] = list(map(_CODES.get, channel, itertools.repeat(-1)))
        except TypeError:  # an unhashable value (a JSON list or object)
            codes = [_CODES.get(value, -1) if type(value) is str else -1 for value in channel]
        if -1 in codes:
            for row, code in enumerate(codes):
                if code < 0:
                    value = channel[row]
                    code = _CODES.get(value.strip().upper(), -1) if type(value) is str else -1
                    if code < 0:
                        doubtful.add(row)
                    codes[row] = code
        scores = _numbers(score)
        out_of_range = ~((scores >= 0.0) & (scores <= 1.0))  # NaN is out of range too
        if out_of_range.any():
            doubtful.update(np.flatnonzero(out_of_range).tolist())
        goods_texts = _texts(goods, count)
        flight_texts = _texts(flight, count, self.default_flight)
        if None in goods_texts or None in flight_texts:
            doubtful.update(
                row for row in range(count) if goods_texts[row] is None or flight_texts[row] is None
            )

        dropped: set[int] = set()
        fields = (hawb, channel, score, goods, flight)
        for row in sorted(doubtful):
            data = {
                name: column[row]
                for name, column in zip(FIELDS, fields, strict=True)
                if column is not None and column[row] is not _MISSING
            }
            try:
                record = FeedRecord.model_validate(data)
            except ValidationError as exc:
                self._report(places[row], exc)
                dropped.add(row)
                continue
            result = record.to_result(self.default_flight)
            hawb[row] = result.hawb
            codes[row] = SEVERITY[result.channel]
            scores[row] = result.score
            goods_texts[row] = result.declared_goods
            flight_texts[row] = result.flight
        if dropped:
            kept = [row for row in range(count) if row not in dropped]
            if not kept:
                return
            places = [places[row] for row in kept]
            hawb = [hawb[row] for row in kept]
            codes = [codes[row] for row in kept]
            scores = scores[kept]
            goods_texts = [goods_texts[row] for row in kept]
            flight_texts = [flight_texts[row] for row in kept]

        self._keys.append(as_keys(hawb))
        self._channel.append(np.array(codes, dtype=np.int8))
        self._score.append(scores)
        self._goods.append(_intern(self._texts, goods_texts))  # type: ignore[arg-type]
        self._flight.append(_intern(self._flights, flight_texts))  # type: ignore[arg-type]
        self._place.append(np.array(places, dtype=np.int32))

    def _report(self, line: int, exc: ValidationError) -> None:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "missing":
                self.problem(line, name, "", "is required")
            else:
                message = err["msg"].removeprefix("Value error, ")
                self.problem(line, name, shown(err.get("input")), message)

    def batch(self) -> FeedBatch:
        """The batch: results sorted by HAWB without repeats, problems in place order."""
        conflicts: list[Conflict] = []
        if self._keys:
            keys = np.concatenate(self._keys)
            order = np.argsort(keys, kind="stable")  # stable: repeats stay in place order
            columns = ResultColumns(
                keys[order],
                np.concatenate(self._channel)[order],
                np.concatenate(self._score)[order],
                np.concatenate(self._goods)[order],
                Texts.of(list(self._texts)),
                np.concatenate(self._flight)[order],
                tuple(self._flights),
                np.zeros(len(keys), dtype=np.int32),
                ((self.source, self.unit),),
                np.concatenate(self._place)[order],
                sorted_unique=True,
                by_key=True,
            )
            if (columns.hawb[1:] == columns.hawb[:-1]).any():
                columns = self._resolve(columns, conflicts)
        else:
            columns = ResultColumns.empty()
        self.problems.sort(key=lambda p: (p.line is not None, p.line or 0))
        return FeedBatch(columns, self.problems, conflicts)

    def _resolve(self, columns: ResultColumns, conflicts: list[Conflict]) -> ResultColumns:
        """Keep one row per HAWB: the most severe (the first of equal severity). Each other
        row is reported on the later of its place and the kept one's."""
        kept, losers, winners = most_severe(columns.hawb, columns.channel, columns.score)
        unit = self.unit
        for loser, winner in zip(losers.tolist(), winners.tolist(), strict=True):
            loser_place, winner_place = int(columns.place[loser]), int(columns.place[winner])
            later, earlier = max(loser_place, winner_place), min(loser_place, winner_place)
            held, new = (winner, loser) if winner_place < loser_place else (loser, winner)
            kept_result, other = columns.result(winner), columns.result(loser)
            hawb = kept_result.hawb
            if columns.same(winner, loser):
                self.problem(later, "hawb", shown(hawb), f"repeats {unit} {earlier}; ignored")
                continue
            self.problem(
                later,
                "hawb",
                shown(hawb),
                f"conflicts with {unit} {earlier} "
                f"({describe(columns.result(held), columns.result(new))}); the most severe, "
                f"{describe(kept_result, other)} of {unit} {winner_place}, is kept",
            )
            conflicts.append(
                Conflict(hawb, kept_result, columns.where(winner), other, columns.where(loser))
            )
        return columns.take(kept)


def _fatal(source: str, message: str, line: int | None = None, value: str = "") -> FeedBatch:
    return FeedBatch((), [FeedProblem(source, line, "", value, message)])


# --- CSV ------------------------------------------------------------------------------------


class _Lines:
    """The physical lines of CSV text as the csv reader takes them (line ends kept), from any
    line on; handed over a piece at a time, never as one copy of the whole text."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts: npt.NDArray[np.int64] | None = None

    def starting_at(self, line: int) -> Iterator[str]:
        pieces = (io.StringIO(piece, newline="") for piece in self._pieces(self._offset(line)))
        return itertools.chain.from_iterable(pieces)

    def _offset(self, line: int) -> int:
        """Where physical line ``line`` (1-based) starts; the index is built on first need."""
        if line <= 1:
            return 0
        if self._starts is None:
            ends = (match.end() for match in _BREAK.finditer(self._text))
            self._starts = np.fromiter(ends, dtype=np.int64)
        index = line - 2
        return int(self._starts[index]) if index < len(self._starts) else len(self._text)

    def _pieces(self, start: int) -> Iterator[str]:
        text, size, pos = self._text, len(self._text), start
        while pos < size:
            cut = text.find("\n", pos + _PIECE)  # cut after a "\n": always a line end
            end = size if cut < 0 else cut + 1
            yield text[pos:end]
            pos = end


class _RecountError(Exception):
    """A chunk's line count did not add up: read it again one row at a time."""


def _breaks(row: list[str]) -> int:
    """Line breaks inside a record's values (quoted values may span lines)."""
    return sum(len(_BREAK.findall(value)) for value in row if "\n" in value or "\r" in value)


class _CsvRows:
    """Hands CSV records to the builder a chunk at a time, with their line numbers; reports
    records with the wrong number of values."""

    def __init__(self, builder: _Builder, header: list[str]) -> None:
        self.builder = builder
        self.header = header
        self.width = len(header)
        self.pick = [header.index(name) if name in header else None for name in FIELDS]
        self.rows: list[list[str]] = []
        self.places: list[int] = []

    def take_chunk(self, chunk: list[list[str]], first: int, end: int) -> int:
        """Records read from line ``first`` to ``end``; return the line to read on from when
        one of them swallowed lines after it (0: go on)."""
        width = self.width
        if end - first + 1 == len(chunk) and set(map(len, chunk)) == {width}:
            self.rows += chunk  # one line each, the common case
            self.places += range(first, end + 1)
            if len(self.rows) >= _CHUNK:
                self.flush()
            return 0
        spans = [_breaks(row) for row in chunk]
        if first + len(chunk) + sum(spans) - 1 != end:
            raise _RecountError
        line = first
        for row, span in zip(chunk, spans, strict=True):
            restart = self.take(row, line, line + span)
            if restart:
                return restart
            line += span + 1
        return 0

    def take(self, row: list[str], line: int, end: int) -> int:
        """One record read from line ``line`` to ``end``; as :meth:`take_chunk`."""
        width = self.width
        if len(row) == width:
            self.rows.append(row)
            self.places.append(line)
            if len(self.rows) >= _CHUNK:
                self.flush()
            return 0
        if not row or (len(row) == 1 and not row[0].strip()):
            return 0
        spans = f" (it spans lines {line}-{end}: a stray quote?)" if end > line else ""
        if len(row) < width:
            message = f"missing: the row has {len(row)} values, the header {width}"
            self.builder.problem(line, self.header[len(row)], "", message + spans)
        else:
            message = f"the row has {len(row)} values, the header {width}; skipped"
            self.builder.problem(line, "", "", message + spans)
        return line + 1 if end > line else 0  # read the lines it swallowed as rows

    def flush(self) -> None:
        rows, places = self.rows, self.places
        if not rows:
            return
        self.rows, self.places = [], []
        hawb, channel, score, goods, flight = (
            None if index is None else list(map(itemgetter(index), rows)) for index in self.pick
        )
        assert hawb is not None  # the header has the required columns
        assert channel is not None
        assert score is not None
        self.builder.add(places, hawb, channel, score, goods, flight)


def parse_csv(text: str, source: str) -> FeedBatch:
    """Parse a CSV risk feed (format in this module's docstring). Never raises."""
    lines = _Lines(text.removeprefix("\ufeff"))
    reader = csv.reader(lines.starting_at(1), strict=True)
    try:
        header: list[str] | None = None
        header_line = 0
        while header is None:
            row = next(reader, None)
            if row is None:
                return _fatal(source, "no header row; the file is empty")
            if row:
                header = [name.strip().lower() for name in row]
                header_line = reader.line_num
    except csv.Error as exc:
        return _fatal(source, f"not valid CSV: {exc}", reader.line_num or None)
    builder = _Builder(source, "line")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        return _fatal(source, f"header repeats column(s) {', '.join(repeated)}", header_line)
    missing = [name for name in REQUIRED_FIELDS if name not in header]
    if missing:
        return _fatal(
            source,
            f"header lacks required column(s) {', '.join(missing)}; "
            f"expected a header like {','.join(FIELDS)}",
            header_line,
            shown(",".join(header)),
        )
    for name in header:
        if name not in FIELDS:
            builder.problem(header_line, name, "", "unknown column; ignored")
    records = _CsvRows(builder, header)
    base = 0  # physical line = base + reader.line_num
    end = header_line  # the last physical line read
    careful = 0  # records still to read one at a time (to find the one a chunk broke on)
    while True:
        restart = 0
        try:
            while not restart:
                first = end + 1
                if careful:
                    row = next(reader, None)
                    if row is None:
                        break
                    careful -= 1
                    end = base + reader.line_num
                    restart = records.take(row, first, end)
                else:
                    chunk = list(itertools.islice(reader, _CHUNK))
                    if not chunk:
                        break
                    end = base + reader.line_num
                    restart = records.take_chunk(chunk, first, end)
        except csv.Error as exc:
            if careful:
                builder.problem(first, "", "", f"not valid CSV: {exc}; the row is skipped")
                restart = first + 1
            else:  # somewhere in this chunk: read it again a record at a time
                restart, careful = first, _CHUNK
        except _RecountError:
            restart, careful = first, _CHUNK
        if not restart:
            break
        reader = csv.reader(lines.starting_at(restart), strict=True)
        base = end = restart - 1
    records.flush()
    return builder.batch()


# --- JSON -----------------------------------------------------------------------------------


def _add_items(builder: _Builder, items: list[dict[str, Any]], places: list[int]) -> None:
    if items:
        hawb, channel, score, goods, flight = (
            [item.get(name, _MISSING) for item in items] for name in FIELDS
        )
        builder.add(places, hawb, channel, score, goods, flight)


def parse_json_page(text: str, source: str) -> tuple[FeedBatch, str | None]:
    """Parse a JSON risk feed; also return its top-level ``cursor`` (None when absent or
    unusable). Never raises."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return _fatal(source, f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno), None
    except RecursionError:
        return _fatal(source, "not valid JSON: nested too deeply"), None
    default_flight = ""
    cursor: str | None = None
    top_problems: list[FeedProblem] = []
    if isinstance(document, list):
        records: list[Any] = document
    elif isinstance(document, dict):
        raw_records = document.get("results")
        if not isinstance(raw_records, list):
            got = f"got {type(raw_records).__name__}" if "results" in document else "it is missing"
            return _fatal(source, f"'results' must be a list of records; {got}"), None
        records = raw_records
        for key in document:
            if key not in _JSON_TOP_KEYS:
                top_problems.append(FeedProblem(source, None, str(key), "", "unknown key; ignored"))
        flight = document.get("flight")
        if isinstance(flight, str):
            default_flight = flight.strip()
        elif flight is not None:
            top_problems.append(FeedProblem(source, None, "flight", shown(flight), "must be text"))
        raw_cursor = document.get("cursor")
        if isinstance(raw_cursor, str) or (
            isinstance(raw_cursor, int) and not isinstance(raw_cursor, bool)
        ):
            cursor = str(raw_cursor)
        elif raw_cursor is not None:
            top_problems.append(
                FeedProblem(source, None, "cursor", shown(raw_cursor), "must be text or an integer")
            )
    else:
        return _fatal(
            source,
            f"a JSON feed must be a list of records or an object with 'results'; "
            f"got {type(document).__name__}",
        ), None
    builder = _Builder(source, "record", default_flight)
    builder.problems.extend(top_problems)
    unknown_seen: set[str] = set()
    items: list[dict[str, Any]] = []
    places: list[int] = []
    for index, item in enumerate(records, start=1):
        if not isinstance(item, dict):
            builder.problem(index, "", shown(item), "must be an object")
            continue
        if not item.keys() <= _FIELD_SET:
            for key in item:
                if key not in _FIELD_SET and key not in unknown_seen:
                    unknown_seen.add(key)
                    builder.problem(index, str(key), "", "unknown field; ignored")
        items.append(item)
        places.append(index)
        if len(items) == _CHUNK:
            _add_items(builder, items, places)
            items, places = [], []
    _add_items(builder, items, places)
    return builder.batch(), cursor


def parse_json(text: str, source: str) -> FeedBatch:
    """Parse a JSON risk feed (format in this module's docstring). Never raises."""
    return parse_json_page(text, source)[0]
