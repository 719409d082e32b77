"""Conversion between :class:`JournalEntry` values and journal rows.

Everything a row holds must be storable on both SQLite and PostgreSQL, so conversion checks
it up front: a bad entry fails its own ``write`` call and never the batch it would join.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from controller.core.domain import JournalEntry

_TEXT_FIELDS = ("line", "hawb", "state_from", "state_to", "destination", "policy_version")


def entry_to_row(entry: JournalEntry) -> dict[str, Any]:
    """The row for an entry, without ``site``, ``seq`` and ``wall_time`` (the writer adds them).

    Raises ValueError or TypeError when the entry cannot be stored portably: a ``ts`` that is
    not finite (SQLite stores NaN as NULL, and the hash chain's JSON has no NaN), a NUL
    character in a text field (PostgreSQL refuses it), or ``data`` that is not JSON (mappings with
    string keys, sequences, str, int, float, bool, None; enums are stored by value). Floats
    that are not finite are stored as the strings "NaN", "Infinity" and "-Infinity".
    """
    ts = float(entry.ts)
    if not math.isfinite(ts):
        raise ValueError(f"JournalEntry.ts must be finite, got {ts!r}")
    row: dict[str, Any] = {
        "ts": ts,
        "kind": _kind_value(entry.kind),
        "tracking_id": int(entry.tracking_id),
        "lane": None if entry.lane is None else int(entry.lane),
        "reasons": [int(reason) for reason in entry.reasons],
        "data": json_value(entry.data, "data"),
    }
    for name in _TEXT_FIELDS:
        value = getattr(entry, name)
        if not isinstance(value, str):
            raise TypeError(f"JournalEntry.{name} must be str, got {type(value).__name__}")
        if "\x00" in value:
            raise ValueError(f"JournalEntry.{name} contains a NUL character: {value!r}")
        row[name] = str(value)  # a StrEnum member (a parcel state) is stored as its value
    return row


def _kind_value(kind: object) -> str:
    if isinstance(kind, Enum):
        return str(kind.value)
    if isinstance(kind, str):
        return kind
    raise TypeError(f"JournalEntry.kind must be an EntryKind, got {type(kind).__name__}")


def json_value(value: object, path: str) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None)."""
    if isinstance(value, Enum):
        return json_value(value.value, path)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, Enum):
                key = key.value
            if not isinstance(key, str):
                raise TypeError(f"{path}: JSON object keys must be str, got {key!r}")
            out[key] = json_value(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [json_value(item, f"{path}[{i}]") for i, item in enumerate(items)]
    raise TypeError(f"{path}: {type(value).__name__} is not JSON-serialisable")
