"""Alarms for the floor: one record when a condition starts and one when it clears.

Adapters report conditions as often as they see them; :class:`Alarms` turns that into
log-once-per-outage: a start record, a clear record, both journalled, with the active set
kept for the dashboard and for operators to acknowledge. Journal writes run off the caller's
path as tasks; leaving ``async with`` (or :meth:`Alarms.aclose`) awaits them, so a shutdown
never drops an alarm row that was already raised. A caller with a journal path of its own
(a sorter line, whose journal backlog outlives an outage) takes the row from
:meth:`Alarms.change` and journals it itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from controller.core.domain import EntryKind, JournalEntry
from controller.core.ports import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    source: str
    message: str
    since: float
    acknowledged_by: str = ""
    comment: str = ""


class Alarms:
    """Implements :class:`controller.core.ports.AlarmSink` (and the controller's alarm board:
    ``active`` and ``acknowledge``); journals each change off the loop."""

    def __init__(self, journal: Journal | None, now: Callable[[], float]) -> None:
        self._journal = journal
        self._now = now
        self.active: dict[str, ActiveAlarm] = {}
        self.history: list[tuple[float, str, str, bool]] = []
        self._pending: set[asyncio.Task[None]] = set()

    def alarm(self, source: str, message: str, *, active: bool) -> None:
        entry = self.change(source, message, active=active)
        if entry is not None and self._journal is not None:
            task = asyncio.get_running_loop().create_task(self._journal.write([entry]))
            self._pending.add(task)
            task.add_done_callback(self._settled)

    def change(self, source: str, message: str, *, active: bool) -> JournalEntry | None:
        """Like :meth:`alarm`, but the row recording the change comes back for the caller to
        journal (None when the alarm is already in that state: nothing new to say)."""
        if active == (source in self.active):
            return None
        now = self._now()
        if active:
            self.active[source] = ActiveAlarm(source, message, now)
            log.warning("alarm %s: %s", source, message)
        else:
            del self.active[source]
            log.info("alarm %s cleared: %s", source, message)
        self.history.append((now, source, message, active))
        return JournalEntry(
            ts=now,
            kind=EntryKind.ALARM,
            line=source.split("/", 1)[0],
            tracking_id=0,
            state_to="active" if active else "cleared",
            data={"source": source, "message": message},
        )

    def acknowledge(self, source: str, user: str, comment: str) -> None:
        """Mark the active alarm ``source`` as seen by ``user`` (the controller journals the
        operator's command before calling this); it stays active until its condition clears."""
        alarm = self.active.get(source)
        if alarm is not None:
            self.active[source] = dataclasses.replace(alarm, acknowledged_by=user, comment=comment)

    @property
    def pending(self) -> int:
        """Alarm rows handed to the journal and not yet durable."""
        return len(self._pending)

    async def drain(self) -> None:
        """Wait until every alarm row raised so far is written (or its write failed)."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    async def aclose(self) -> None:
        """Stop: await the pending journal writes (bound it with a timeout if you must)."""
        await self.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alarm row not journalled: %r", task.exception())
