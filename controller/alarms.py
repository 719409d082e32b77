"""Alarms for the floor: one record when a condition starts and one when it clears.

Adapters report conditions as often as they see them; :class:`Alarms` turns that into
log-once-per-outage: a start record, a clear record, both journalled, with the active set
kept for the dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controller.domain import EntryKind, JournalEntry
from controller.ports import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    source: str
    message: str
    since: float


class Alarms:
    """Implements :class:`controller.ports.AlarmSink`; journals each transition off the loop."""

    def __init__(self, journal: Journal | None, now: Callable[[], float]) -> None:
        self._journal = journal
        self._now = now
        self.active: dict[str, ActiveAlarm] = {}
        self.history: list[tuple[float, str, str, bool]] = []
        self._pending: set[asyncio.Task[None]] = set()

    def alarm(self, source: str, message: str, *, active: bool) -> None:
        if active == (source in self.active):
            return  # already in that state: nothing new to say
        now = self._now()
        if active:
            self.active[source] = ActiveAlarm(source, message, now)
            log.warning("alarm %s: %s", source, message)
        else:
            del self.active[source]
            log.info("alarm %s cleared: %s", source, message)
        self.history.append((now, source, message, active))
        if self._journal is not None:
            entry = JournalEntry(
                ts=now,
                kind=EntryKind.ALARM,
                line=source.split("/", 1)[0],
                tracking_id=0,
                state_to="active" if active else "cleared",
                data={"source": source, "message": message},
            )
            task = asyncio.get_running_loop().create_task(self._journal.write([entry]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
