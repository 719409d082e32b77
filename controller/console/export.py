"""Audit records as CSV, for supervisors who take a search away to a spreadsheet.

The writer streams: it yields text chunks as it goes, so a console endpoint can send a large
export without holding it in memory. Cells that a spreadsheet would read as a formula are
defused (OWASP "CSV injection"): HAWBs, notes and alarm messages come from outside, and
these files are opened on the floor.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC
from enum import Enum
from typing import Final

from controller.core.audit import AuditRecord

COLUMNS: Final = (
    "seq",
    "wall_time",
    "kind",
    "line",
    "tracking_id",
    "hawb",
    "state_from",
    "state_to",
    "destination",
    "lane",
    "reasons",
    "policy_version",
    "user",
    "data",
)

_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a cell (tab and CR per OWASP too)."""

CHUNK_CHARS: Final = 64 * 1024
"""Rows are gathered into chunks of about this many characters before being yielded."""


def records_csv(records: Iterable[AuditRecord]) -> Iterator[str]:
    """CSV text (RFC 4180, CRLF line ends): the header as the first chunk, then the rows.

    ``wall_time`` is ISO-8601 in UTC with a ``Z``; ``reasons`` are space-separated codes;
    ``data`` is the entry's JSON. Any cell beginning with ``= + - @``, a tab or a CR gets a
    leading apostrophe, so a spreadsheet shows it as text instead of running it.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield _take(buffer)
    for record in records:
        writer.writerow([_defuse(cell) for cell in _cells(record)])
        if buffer.tell() >= CHUNK_CHARS:
            yield _take(buffer)
    if buffer.tell():
        yield _take(buffer)


def _cells(record: AuditRecord) -> tuple[str, ...]:
    return (
        str(record.seq),
        record.wall_time.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        str(record.kind.value if isinstance(record.kind, Enum) else record.kind),
        record.line,
        str(record.tracking_id),
        record.hawb,
        record.state_from,
        record.state_to,
        record.destination,
        "" if record.lane is None else str(record.lane),
        " ".join(str(int(code)) for code in record.reasons),
        record.policy_version,
        record.user,
        json.dumps(record.data, ensure_ascii=False, sort_keys=True, default=_json_default),
    )


def _defuse(cell: str) -> str:
    return f"'{cell}" if cell.startswith(_FORMULA_STARTS) else cell


def _json_default(value: object) -> object:
    """Data read from the journal is plain JSON already; this covers records built by hand."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
