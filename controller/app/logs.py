"""Log lines fit for a service: repeated errors rate-limited, and JSON lines for journald.

A PLC that drops off the network, a risk feed that is down or a scanner folder that is
gone makes the same complaint many times a second. :class:`RepeatFilter` lets the first
of each (logger, level, message) through, holds back the repeats for ``window_s`` and then
lets the next one through with how many were held back, so the log says everything once
and the disk does not fill. :class:`JsonLines` writes one JSON object per line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime


class RepeatFilter(logging.Filter):
    """At most one record per (logger, level, message template) every ``window_s``; the
    next one after the window carries how many were held back."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # information is not a complaint: never held back
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        since, held = self._seen.get(key, (float("-inf"), 0))
        if now - since < self.window_s:
            self._seen[key] = (since, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.window_s:g} s)"
        if len(self._seen) > 10_000:  # forget the oldest complaints
            oldest = sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]
            for old in oldest:
                del self._seen[old]
        return True


class JsonLines(logging.Formatter):
    """One JSON object per record: ``time`` (ISO-8601 UTC), ``level``, ``logger``,
    ``message``, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
