"""The asyncio driver of the line trackers: one :class:`LineController` per sorter line.

Every rule of the decision flow lives in :class:`controller.core.tracker.LineTracker`; this
module only carries out what the tracker asks for, on the event loop and under the injected
clock: it gathers risk and X-ray results concurrently until the parcel's cutoff, waits for an
officer's review while time remains, makes the decision durable in the journal before the
sorter sees the reply, and journals everything else off the telegram loop's path.

:class:`Controller` runs every line of a site and implements
:class:`controller.core.ports.OperatorCommands`: each command is checked against the
lifecycle, journalled durably with who and why (refused ones too), and only then applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol

from controller.core.clock import Clock
from controller.core.commands import (
    AcknowledgeAlarm,
    Command,
    CommandResult,
    ForceClose,
    LiftHold,
    PlaceHold,
    RecordInspection,
    RecordVerdict,
)
from controller.core.domain import (
    DestinationRequest,
    EntryKind,
    JournalEntry,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.holds import Hold, Holds
from controller.core.kpi import Kpis
from controller.core.lifecycle import Parcel
from controller.core.policy import DecisionPolicy
from controller.core.ports import Journal, ReviewQueue, RiskSource, SorterPort, XrayPort
from controller.core.settings import Line, SiteCore
from controller.core.tracker import (
    Abandon,
    AskReview,
    Effect,
    Gather,
    LineTracker,
    Planned,
    Record,
    Refused,
    Reply,
    command_data,
)
from controller.core.views import ControllerView, LineView, ParcelView, ReviewView

log = logging.getLogger(__name__)


class LineController:
    """Drives the tracker of one sorter line from its telegrams and its ports."""

    #: Wall seconds a shutdown waits for decisions and journal writes in flight.
    DRAIN_LIMIT_S = 10.0

    def __init__(
        self,
        line: Line,
        sorter: SorterPort,
        risk: RiskSource,
        xray: XrayPort,
        journal: Journal,
        clock: Clock,
        policy: DecisionPolicy,
        kpis: Kpis,
        holds: Holds,
        review: ReviewQueue | None = None,
    ) -> None:
        self.line = line
        self.sorter = sorter
        self.risk = risk
        self.xray = xray
        self.journal = journal
        self.clock = clock
        self.review = review
        self.tracker = LineTracker(
            line, policy, kpis, holds, sorter.lane_status, ask_reviews=review is not None
        )
        self._work: dict[int, asyncio.Task[None]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._backlog: list[tuple[tuple[JournalEntry, ...], asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- telegram loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the sorter until its telegram stream ends or this task is cancelled."""
        try:
            async for telegram in self.sorter.telegrams():
                now = self.clock.now()
                if isinstance(telegram, DestinationRequest):
                    self.carry_out(self.tracker.request(telegram, now))
                else:
                    self.carry_out(self.tracker.confirm(telegram, now))
        finally:
            await self.drain()

    async def drain(self, limit_s: float | None = None) -> None:
        """Wait, at most ``limit_s`` wall seconds in all, for decisions in flight and then for
        journal writes still pending. What is still running then is cancelled and logged: the
        PLC's default lane stands, and recovery takes those parcels back at the next start."""
        loop = asyncio.get_running_loop()
        until = loop.time() + (self.DRAIN_LIMIT_S if limit_s is None else limit_s)
        while True:
            tasks = [*self._work.values(), *self._writes]
            if self._flusher is not None and not self._flusher.done():
                tasks.append(self._flusher)
            tasks = [task for task in tasks if not task.done()]
            if not tasks:
                return
            _, stuck = await asyncio.wait(tasks, timeout=max(0.0, until - loop.time()))
            if stuck:
                for task in stuck:
                    task.cancel()
                log.warning("line %s: %d task(s) cut short at shutdown", self.line.id, len(stuck))
                return

    def view(self) -> LineView:
        tracker = self.tracker
        return LineView(
            line=self.line.id,
            health=self.sorter.health(),
            lanes=dict(self.sorter.lane_status()),
            on_belt=len(tracker.on_belt),
            at_inspection=sum(len(q) for q in tracker.in_inspection.values()),
            awaiting_review=tracker.awaiting_review(),
        )

    def restore(self, parcels: list[Parcel]) -> None:
        """Take back parcels that were open when the controller last stopped (see recovery)."""
        self.carry_out(self.tracker.restore(parcels, self.clock.now()))

    # --- effects -------------------------------------------------------------------------

    def carry_out(self, effects: list[Effect]) -> None:
        """Start what the tracker asked for; nothing here waits."""
        for effect in effects:
            if isinstance(effect, Record):
                if effect.awaiting is None:
                    self.record(effect.entries)
                else:
                    self._spawn_write(effect)
            elif isinstance(effect, Gather):
                self._start(effect.tracking_id, self._gather(effect))
            elif isinstance(effect, AskReview):
                self._start(effect.request.tracking_id, self._review(effect))
            elif isinstance(effect, Abandon):
                task = self._work.pop(effect.tracking_id, None)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            else:
                self._spawn_reply(effect)

    def _start(self, tracking_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._work[tracking_id] = task
        task.add_done_callback(lambda done: self._finished(tracking_id, done))

    def _finished(self, tracking_id: int, task: asyncio.Task[None]) -> None:
        if self._work.get(tracking_id) is task:
            del self._work[tracking_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("line %s parcel %s: decision failed: %r", self.line.id, tracking_id, exc)

    async def _gather(self, gather: Gather) -> None:
        """Risk and X-ray results concurrently, until the cutoff."""
        xray_task = asyncio.create_task(self._xray(gather.tracking_id, gather.hawb))
        risk: RiskResult | None = None
        try:
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout_at(gather.cutoff):
                    risk = await self._risk(gather.hawb)  # the X-ray runs meanwhile
                    await asyncio.wait((xray_task,))
        finally:
            xray_task.cancel()  # no-op when done; stops it when late or when abandoned
        xray = xray_task.result() if xray_task.done() and not xray_task.cancelled() else None
        self.carry_out(self.tracker.evidence(gather.tracking_id, risk, xray, self.clock.now()))

    async def _review(self, ask: AskReview) -> None:
        request = ask.request
        outcome = None
        if self.review is not None:
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout_at(request.deadline):
                    try:
                        outcome = await self.review.review(request)
                    except Exception as exc:  # a broken review source means: no verdict
                        log.warning("line %s: review failed: %r", self.line.id, exc)
        self.carry_out(self.tracker.reviewed(request.tracking_id, outcome, self.clock.now()))

    async def _risk(self, hawb: str) -> RiskResult | None:
        try:
            return await self.risk.lookup(hawb)
        except Exception as exc:  # a broken risk source means: no risk result
            log.warning("line %s: risk lookup for %s failed: %r", self.line.id, hawb, exc)
            return None

    async def _xray(self, tracking_id: int, hawb: str) -> XrayResult:
        try:
            return await self.xray.analyse(self.line.id, tracking_id, hawb)
        except Exception as exc:  # the port should report faults itself; fail secure if not
            return XrayResult.fault(XrayStatus.FAILED, repr(exc))

    def _spawn_write(self, record: Record) -> None:
        """A decision's entries: durable first, then the tracker says whether to reply. The
        write is never cancelled with its parcel's other work: the audit keeps it."""
        task = asyncio.create_task(self._durable(record))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _durable(self, record: Record) -> None:
        assert record.awaiting is not None
        error = await self.record(record.entries)
        if error:
            log.error("line %s: journal write failed, PLC default stands: %s", self.line.id, error)
        self.carry_out(self.tracker.journalled(record.awaiting, self.clock.now(), error))

    def _spawn_reply(self, reply: Reply) -> None:
        task = asyncio.create_task(self.sorter.reply(reply.reply))
        self._writes.add(task)
        task.add_done_callback(self._replied)

    def _replied(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("line %s: reply not handed to the sorter: %r", self.line.id, exc)

    def record(self, entries: Sequence[JournalEntry]) -> asyncio.Future[str]:
        """Journal ``entries`` after everything recorded before them, in order, batched into
        one write per loop turn. The future gives "" once they are durable, or why they are
        not; nobody needs to await it. An empty call is a barrier: it resolves once all
        earlier entries are durable."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._backlog.append((tuple(entries), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return done

    async def _flush(self) -> None:
        while self._backlog:
            batch, self._backlog = self._backlog, []
            rows = [entry for entries, _ in batch for entry in entries]
            error = ""
            if rows:
                try:
                    await self.journal.write(rows)
                except Exception as exc:  # the log keeps what the journal could not
                    error = repr(exc)
                    log.error(
                        "line %s: journal write of %d entries failed: %s; entries: %s",
                        self.line.id,
                        len(rows),
                        error,
                        [(e.kind.value, e.tracking_id, e.state_from, e.state_to) for e in rows],
                    )
            for _, done in batch:
                if not done.done():
                    done.set_result(error)


class AlarmBoard(Protocol):
    """The active alarms, keyed by source, which an operator may acknowledge."""

    @property
    def active(self) -> Mapping[str, object]: ...

    def acknowledge(self, source: str, user: str, comment: str) -> None:
        """Mark the active alarm ``source`` acknowledged by ``user``."""
        ...


class Controller:
    """Every line of one site, run together in one task group, sharing KPIs and holds."""

    def __init__(
        self,
        site: SiteCore,
        sorters: Mapping[str, SorterPort],
        risk: RiskSource,
        xray: XrayPort,
        journal: Journal,
        clock: Clock,
        review: ReviewQueue | None = None,
        holds: Holds | None = None,
        alarms: AlarmBoard | None = None,
    ) -> None:
        missing = [line.id for line in site.lines if line.id not in sorters]
        if missing:
            raise ValueError(f"no sorter adapter for line(s): {', '.join(missing)}")
        self.site = site
        self.clock = clock
        self.journal = journal
        self.alarms = alarms
        self.policy = DecisionPolicy(site.policy)
        self.holds = holds or Holds()
        self.kpis = Kpis(site.clearance.target_s, tuple(site.clearance.windows_s))
        self.lines = {
            line.id: LineController(
                line,
                sorters[line.id],
                risk,
                xray,
                journal,
                clock,
                self.policy,
                self.kpis,
                self.holds,
                review,
            )
            for line in site.lines
        }
        self._commands = asyncio.Lock()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for line in self.lines.values():
                group.create_task(line.run())

    def open_parcels(self) -> int:
        return sum(line.tracker.open_parcels() for line in self.lines.values())

    def view(self, oldest: int = 20) -> ControllerView:
        """A frozen snapshot of the site as the controller sees it, taken in one go."""
        now = self.clock.now()
        lines = tuple(line.view() for line in self.lines.values())
        return ControllerView(
            clock_s=now,
            kpis=self.kpis.view(now),
            lines=lines,
            holds=len(self.holds),
            open_parcels=sum(line.on_belt + line.at_inspection for line in lines),
            oldest_open=self.parcels(limit=oldest),
        )

    def parcels(
        self, line: str | None = None, state: str | None = None, limit: int = 100
    ) -> tuple[ParcelView, ...]:
        """The open parcels that arrived first, on ``line`` and in ``state`` when given."""
        lines = [self.lines[line]] if line in self.lines else [] if line else self.lines.values()
        parcels = heapq.nsmallest(
            limit,
            (
                p
                for controller in lines
                for p in controller.tracker.parcels()
                if state is None or p.state == state
            ),
            key=lambda p: p.arrived_at,
        )
        return tuple(
            ParcelView(p.line, p.tracking_id, p.hawb, str(p.state), p.arrived_at, p.laps)
            for p in parcels
        )

    def reviews(self) -> tuple[ReviewView, ...]:
        """Every parcel waiting for an officer's verdict, least time left first."""
        waiting = [r for line in self.lines.values() for r in line.tracker.reviews()]
        return tuple(sorted(waiting, key=lambda r: r.deadline))

    def restore(self, parcels: Iterable[Parcel], holds: Iterable[Hold]) -> None:
        """Take back what the journal shows open at start-up: parcels and holds."""
        for hold in holds:
            self.holds.hold(hold.hawb, hold.reason, hold.user, hold.since)
        by_line: dict[str, list[Parcel]] = {}
        for parcel in parcels:
            by_line.setdefault(parcel.line, []).append(parcel)
        for line_id, taken in by_line.items():
            line = self.lines.get(line_id)
            if line is None:
                log.error("journal has %d open parcel(s) on unknown line %s", len(taken), line_id)
                continue
            line.restore(taken)

    # --- operator commands (controller.core.ports.OperatorCommands) ------------------------

    async def execute(self, command: Command) -> CommandResult:
        """Check the command, journal it durably (who, why, accepted or refused), then apply
        it; its effect (a state change) is journalled in order after it, and the answer comes
        once that is durable too. Commands run one at a time; a parcel that moved on while
        the command was being journalled refuses it then, and that is journalled as well."""
        async with self._commands:
            now = self.clock.now()
            line_id, planned = self._plan(command, now)
            record = self.lines[line_id].record if line_id else self._record_site_wide
            if isinstance(planned, Refused):
                return await self._refuse(command, line_id, now, planned.message, record)
            if error := await record((planned.entry,)):
                log.error("command %s not journalled, not applied: %s", command.command, error)
                message = f"could not journal the command, nothing changed: {error}"
                return CommandResult(accepted=False, message=message)
            applied = planned.commit(self.clock.now())
            if isinstance(applied, Refused):
                message = f"not applied: {applied.message}"
                return await self._refuse(command, line_id, self.clock.now(), message, record)
            if line_id:
                self.lines[line_id].carry_out(applied)
            if error := await record(()):  # the effect is durable before the answer
                log.error("command %s applied but its effect not journalled: %s", command, error)
            return CommandResult(accepted=True, message=_accepted(command))

    async def _refuse(
        self,
        command: Command,
        line_id: str,
        now: float,
        message: str,
        record: Callable[[Sequence[JournalEntry]], Awaitable[str]],
    ) -> CommandResult:
        await record((_command_entry(command, line_id, now, refused=message),))
        log.info("command refused: %s: %s", command.command, message)
        return CommandResult(accepted=False, message=message)

    async def _record_site_wide(self, entries: Sequence[JournalEntry]) -> str:
        """Journal a site-wide command's rows (holds, alarms); "" once durable, else why."""
        if not entries:
            return ""
        try:
            await self.journal.write(list(entries))
        except Exception as exc:
            return repr(exc)
        return ""

    def _plan(self, command: Command, now: float) -> tuple[str, Planned | Refused]:
        """The line the command concerns ("" for site-wide) and its plan or refusal."""
        if isinstance(command, PlaceHold | LiftHold):
            return "", self._plan_hold(command, now)
        if isinstance(command, AcknowledgeAlarm):
            return "", self._plan_ack(command, now)
        if isinstance(command, RecordInspection):
            refusal = Refused(f"no parcel of HAWB {command.hawb!r} waits at inspection")
            for line_id, line in self.lines.items():
                planned = line.tracker.plan(command, now)
                if isinstance(planned, Planned):
                    return line_id, planned
            return "", refusal
        if command.line not in self.lines:
            known = ", ".join(self.lines)
            return "", Refused(f"line {command.line!r} is not on this site (lines: {known})")
        return command.line, self.lines[command.line].tracker.plan(command, now)

    def _plan_hold(self, command: PlaceHold | LiftHold, now: float) -> Planned | Refused:
        held = self.holds.get(command.hawb)
        if isinstance(command, PlaceHold) and held is not None:
            return Refused(f"HAWB {command.hawb!r} is already held by {held.user}: {held.reason}")
        if isinstance(command, LiftHold) and held is None:
            return Refused(f"HAWB {command.hawb!r} is not held")

        def commit(at: float) -> list[Effect]:
            if isinstance(command, PlaceHold):
                self.holds.hold(command.hawb, command.reason, command.user, at)
            else:
                self.holds.lift(command.hawb)
            return []

        return Planned(_command_entry(command, "", now), commit)

    def _plan_ack(self, command: AcknowledgeAlarm, now: float) -> Planned | Refused:
        alarms = self.alarms
        if alarms is None or command.source not in alarms.active:
            return Refused(f"no active alarm {command.source!r} to acknowledge")

        def commit(at: float) -> list[Effect] | Refused:
            if command.source not in alarms.active:
                return Refused(f"alarm {command.source!r} cleared meanwhile")
            alarms.acknowledge(command.source, command.user, command.comment)
            return []

        return Planned(_command_entry(command, "", now), commit)


def _command_entry(command: Command, line: str, now: float, refused: str = "") -> JournalEntry:
    """A site-wide command's entry, or any refused command's."""
    return JournalEntry(
        ts=now,
        kind=EntryKind.COMMAND,
        line=line or getattr(command, "line", ""),
        tracking_id=getattr(command, "tracking_id", 0),
        hawb=getattr(command, "hawb", ""),
        data=command_data(command, accepted=not refused, refused=refused),
    )


def _accepted(command: Command) -> str:
    if isinstance(command, PlaceHold):
        return f"HAWB {command.hawb} held"
    if isinstance(command, LiftHold):
        return f"hold on HAWB {command.hawb} lifted"
    if isinstance(command, RecordInspection):
        return f"HAWB {command.hawb}: inspection recorded as {command.outcome.value}"
    if isinstance(command, RecordVerdict):
        return f"parcel {command.tracking_id} on {command.line}: review {command.outcome.value}"
    if isinstance(command, ForceClose):
        return f"parcel {command.tracking_id} on {command.line} closed as exception"
    return f"alarm {command.source} acknowledged"
