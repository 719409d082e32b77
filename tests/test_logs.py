"""Service logs: a repeated complaint is said once per window with a count; JSON lines."""

from __future__ import annotations

import json
import logging

from controller.app.logs import JsonLines, RepeatFilter


def _record(message: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
    return logging.LogRecord("cargogate.test", level, __file__, 1, message, args, None)


def test_a_repeated_error_passes_once_per_window_then_with_the_count_held_back() -> None:
    now = [0.0]
    repeats = RepeatFilter(window_s=60.0, clock=lambda: now[0])
    passed = [
        repeats.filter(_record("PLC %s unreachable", logging.ERROR, "L1")) for _ in range(100)
    ]
    assert passed == [True] + [False] * 99
    now[0] = 61.0
    again = _record("PLC %s unreachable", logging.ERROR, "L1")
    assert repeats.filter(again)
    assert again.getMessage() == "PLC L1 unreachable (99 more like this in the last 60 s)"
    assert repeats.filter(_record("another complaint"))  # its own key
    assert all(repeats.filter(_record("progress", logging.INFO)) for _ in range(5))


def test_json_lines_are_one_object_per_record() -> None:
    try:
        raise ValueError("bad row")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "cargogate.risk", logging.WARNING, __file__, 1, "row %d", (7,), sys.exc_info()
        )
    line = json.loads(JsonLines().format(record))
    assert line["level"] == "warning"
    assert line["logger"] == "cargogate.risk"
    assert line["message"] == "row 7"
    assert "ValueError: bad row" in line["exception"]
    assert line["time"].endswith("+00:00")
