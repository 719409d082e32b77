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
skipped. A header that lacks a required column, a repeated column or broken CSV quoting
rejects the whole file with one problem.

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
rest of the batch loads. The parsers never raise on bad input. When one batch names a HAWB
twice, the later valid record wins and a problem names both places.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from controller.core.domain import RiskChannel, RiskResult

HAWB_MAX_LEN = 35
_HAWB_RE = re.compile(r"[A-Za-z0-9-]+")
_VALUE_SHOWN_MAX = 80

FIELDS: tuple[str, ...] = ("hawb", "channel", "score", "declared_goods", "flight")
REQUIRED_FIELDS: tuple[str, ...] = ("hawb", "channel", "score")
_JSON_TOP_KEYS = frozenset({"flight", "results", "cursor"})

Unit = Literal["line", "record"]


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


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """What one parse or one fetch produced: valid results and the problems met."""

    results: list[RiskResult] = field(default_factory=list)
    problems: list[FeedProblem] = field(default_factory=list)

    @classmethod
    def merge(cls, batches: Iterable[FeedBatch]) -> FeedBatch:
        """One batch holding every result and problem, in order (later results win)."""
        results: list[RiskResult] = []
        problems: list[FeedProblem] = []
        for batch in batches:
            results.extend(batch.results)
            problems.extend(batch.problems)
        return cls(results, problems)


def _show(value: object) -> str:
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
    report them before validating)."""

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


class _Collector:
    """Gathers one batch: validates records, keeps the later of duplicates, notes problems."""

    def __init__(self, source: str, unit: Unit, default_flight: str = "") -> None:
        self.source = source
        self.unit: Unit = unit
        self.default_flight = default_flight
        self.problems: list[FeedProblem] = []
        self._by_hawb: dict[str, tuple[int, RiskResult]] = {}

    def problem(self, line: int | None, field_name: str, value: str, message: str) -> None:
        self.problems.append(FeedProblem(self.source, line, field_name, value, message, self.unit))

    def add(self, line: int, data: Mapping[str, Any]) -> None:
        try:
            record = FeedRecord.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else ""
                if err["type"] == "missing":
                    self.problem(line, name, "", "is required")
                else:
                    message = err["msg"].removeprefix("Value error, ")
                    self.problem(line, name, _show(err.get("input")), message)
            return
        result = record.to_result(self.default_flight)
        earlier = self._by_hawb.get(result.hawb)
        if earlier is not None:
            self.problem(
                line,
                "hawb",
                _show(result.hawb),
                f"duplicate of {self.unit} {earlier[0]}; {self.unit} {line} wins",
            )
        self._by_hawb[result.hawb] = (line, result)

    def batch(self) -> FeedBatch:
        return FeedBatch([result for _, result in self._by_hawb.values()], self.problems)


def _fatal(source: str, message: str, line: int | None = None, value: str = "") -> FeedBatch:
    return FeedBatch([], [FeedProblem(source, line, "", value, message)])


def parse_csv(text: str, source: str) -> FeedBatch:
    """Parse a CSV risk feed (format in this module's docstring). Never raises."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
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
        collector = _Collector(source, "line")
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
                _show(",".join(header)),
            )
        for name in header:
            if name not in FIELDS:
                collector.problem(header_line, name, "", "unknown column; ignored")
        end = header_line
        for row in reader:
            line, end = end + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                if len(row) < len(header):
                    absent = header[len(row)]
                    message = f"missing: the row has {len(row)} values, the header {len(header)}"
                    collector.problem(line, absent, "", message)
                else:
                    message = f"the row has {len(row)} values, the header {len(header)}; skipped"
                    collector.problem(line, "", "", message)
                continue
            data = dict(zip(header, row, strict=True))
            collector.add(line, {name: data[name] for name in FIELDS if name in data})
    except csv.Error as exc:
        return _fatal(source, f"not valid CSV: {exc}", reader.line_num or None)
    return collector.batch()


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
            top_problems.append(FeedProblem(source, None, "flight", _show(flight), "must be text"))
        raw_cursor = document.get("cursor")
        if isinstance(raw_cursor, str) or (
            isinstance(raw_cursor, int) and not isinstance(raw_cursor, bool)
        ):
            cursor = str(raw_cursor)
        elif raw_cursor is not None:
            top_problems.append(
                FeedProblem(source, None, "cursor", _show(raw_cursor), "must be text or an integer")
            )
    else:
        return _fatal(
            source,
            f"a JSON feed must be a list of records or an object with 'results'; "
            f"got {type(document).__name__}",
        ), None
    collector = _Collector(source, "record", default_flight)
    collector.problems.extend(top_problems)
    unknown_seen: set[str] = set()
    for index, item in enumerate(records, start=1):
        if not isinstance(item, dict):
            collector.problem(index, "", _show(item), "must be an object")
            continue
        for key in item:
            if key not in FIELDS and key not in unknown_seen:
                unknown_seen.add(key)
                collector.problem(index, str(key), "", "unknown field; ignored")
        collector.add(index, {key: value for key, value in item.items() if key in FIELDS})
    return collector.batch(), cursor


def parse_json(text: str, source: str) -> FeedBatch:
    """Parse a JSON risk feed (format in this module's docstring). Never raises."""
    return parse_json_page(text, source)[0]
