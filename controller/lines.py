"""The asyncio driver of the line trackers: one :class:`LineController` per sorter line.

Every rule of the decision flow lives in :class:`controller.core.tracker.LineTracker`; this
module only carries out what the tracker asks for, on the event loop and under the injected
clock: it gathers risk and X-ray results concurrently until the parcel's cutoff, waits for an
officer's review while time remains, makes the decision durable in the journal before the
sorter sees the reply, and journals everything else off the telegram loop's path. It tells
the tracker every second that time passes (its tracking watch closes parcels the PLC never
confirms), and raises the alarms the tracker asks for.

Each line journals through one backlog, in the order the tracker recorded: batched into one
write per loop turn while the journal takes writes. When it refuses one (a full disk), the
entries stay at the head of the backlog and the write is retried with capped backoff (50 ms
doubling to 2 s) until it takes them, followed by everything recorded meanwhile; whoever
waits for durability (a decision, a command) hears at once that it failed, so the PLC's
default lane stands and nothing waits on the outage. The alarm ``<line>/journal`` is raised
at the first failure and cleared once the backlog is written, its own rows going through the
same backlog. The backlog holds at most the line's ``journal_backlog_max`` entries. A
telegram's entries are never left out: at the cap the line takes no further telegram until
the journal has taken some of the backlog (the PLC's mailbox holds them meanwhile), so an
acknowledgement to the PLC means "journalled" (save an entry the journal can never store,
which is logged in full instead and its telegram acknowledged). Other entries beyond the cap (a late
decision, a deadline miss) are logged in full (at INFO, which is never rate-limited) instead
of journalled, counted, and ``<line>/journal-overflow`` says how many.

:class:`Controller` runs every line of a site and implements
:class:`controller.core.ports.OperatorCommands`: each command is checked against the
lifecycle, journalled durably with who and why (refused ones too), and only then applied;
a command the journal cannot take is refused and journalled as refused, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections import deque
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
    Telegram,
    XrayResult,
    XrayStatus,
)
from controller.core.holds import Hold, Holds
from controller.core.kpi import Kpis
from controller.core.lifecycle import Parcel
from controller.core.link import LinkState
from controller.core.policy import DecisionPolicy
from controller.core.ports import Journal, ReviewQueue, RiskSource, SorterPort, XrayPort
from controller.core.settings import Line, SiteCore
from controller.core.tracker import (
    Abandon,
    Alarm,
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

#: The PackML states in which a line moves and reports parcels ("" where the PLC reports none).
RUNNING_STATES = frozenset({"", "execute"})

Queued = tuple[tuple[JournalEntry, ...], asyncio.Future[str]]
"""Entries waiting in a line's journal backlog, and the future that says how they fared."""


class _Handled:
    """The telegrams a line has handled and not yet acknowledged, in the order they came,
    numbered, and a flag that news is waiting for the acknowledging task."""

    def __init__(self) -> None:
        self.waiting: deque[tuple[int, Telegram]] = deque()
        self.count = 0  # telegrams handled so far: a barrier covers those numbered below it
        self.news = asyncio.Event()

    def add(self, telegram: Telegram) -> None:
        self.waiting.append((self.count, telegram))
        self.count += 1
        self.news.set()

    def covered(self, count: int) -> list[tuple[int, Telegram]]:
        """Take the telegrams handled before the first ``count`` off the waiting list."""
        taken: list[tuple[int, Telegram]] = []
        while self.waiting and self.waiting[0][0] < count:
            taken.append(self.waiting.popleft())
        return taken

    def keep(self, telegrams: list[tuple[int, Telegram]]) -> None:
        """Put ``telegrams`` (taken by :meth:`covered`) back at the head, in order."""
        self.waiting.extendleft(reversed(telegrams))


class AlarmBoard(Protocol):
    """The active alarms, keyed by source, which an operator may acknowledge; a line raises
    its own alarms on it and journals their rows through its own backlog."""

    @property
    def active(self) -> Mapping[str, object]: ...

    def acknowledge(self, source: str, user: str, comment: str) -> None:
        """Mark the active alarm ``source`` acknowledged by ``user``."""
        ...

    def change(self, source: str, message: str, *, active: bool) -> JournalEntry | None:
        """Raise (``active``) or clear ``source``; the row recording the change, for the
        caller to journal, or None when it already was in that state."""
        ...


class LineController:
    """Drives the tracker of one sorter line from its telegrams and its ports."""

    #: Wall seconds a shutdown waits for decisions and journal writes in flight.
    DRAIN_LIMIT_S = 10.0
    #: Seconds (on the line's clock) between the first retries of a refused journal write,
    #: doubling up to the second.
    RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0
    #: At most this many entries in one journal write while a backlog is written.
    WRITE_CHUNK = 10_000
    #: Seconds (on the line's clock) between the tracker's ticks.
    TICK_S = 1.0

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
        alarms: AlarmBoard | None = None,
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
        self.alarms = alarms
        self._work: dict[int, asyncio.Task[None]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._backlog: deque[Queued] = deque()
        self._backlog_entries = 0
        self._backlog_max = line.journal_backlog_max
        self._flusher: asyncio.Task[None] | None = None
        self._in_flight = 0  # records at the head of the backlog in a journal write under way
        self._outage = ""  # why the journal refuses the line's writes; "" while it takes them
        self._unjournalled = 0  # entries logged instead, since the backlog was last written
        self._paused = False  # no telegram is taken: the backlog is at its cap
        self._room = asyncio.Event()  # set when the backlog falls under its cap
        self._ticker: asyncio.Task[None] | None = None

    # --- telegram loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the sorter until its telegram stream ends or this task is cancelled.

        Each telegram is handled at once and acknowledged to the sorter once the entries
        the tracker recorded for it are journalled (:meth:`_acknowledge`). Those entries are
        never left out of the journal: while the backlog is at its cap the next telegram
        waits until the journal has taken some of it, and the PLC's mailbox holds the rest.
        """
        handled = _Handled()
        acknowledging = asyncio.create_task(self._acknowledge(handled))
        acknowledging.add_done_callback(self._acknowledging_ended)
        try:
            async for telegram in self.sorter.telegrams():
                if self._backlog_entries >= self._backlog_max:
                    await self._backlog_room()
                now = self.clock.now()
                if isinstance(telegram, DestinationRequest):
                    effects = self.tracker.request(telegram, now)
                else:
                    effects = self.tracker.confirm(telegram, now)
                self.carry_out(effects, for_telegram=True)
                handled.add(telegram)
        finally:
            try:
                await self.drain()  # barriers that resolve meanwhile still acknowledge
            finally:
                acknowledging.cancel()

    def _acknowledging_ended(self, task: asyncio.Task[None]) -> None:
        """The acknowledgement task ends only when cancelled; anything else is a bug that
        stops acknowledgements (the PLC's mailbox then fills): say so at once."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("line %s: acknowledgements stopped: %r", self.line.id, exc, exc_info=exc)

    async def _acknowledge(self, handled: _Handled) -> None:
        """Acknowledge handled telegrams to the sorter once their entries are durable.

        One barrier (``record(())``) goes in after the telegrams handled so far, so one
        commit serves them all, and resolves once everything before it is written. While
        the journal refuses writes the barrier fails, and a new one is placed with capped
        backoff until one holds; what is not acknowledged when the controller stops is
        offered again at its next start (the tracker skips what was journalled). An adapter
        that raises on an acknowledgement is logged (once for a run of failures) and asked
        again with the next barrier, after the same backoff; the telegrams after it are
        acknowledged meanwhile (adapters acknowledge to the PLC in delivery order).
        """
        retry_s = 0.0  # the wait before the next barrier while barriers or adapter fail
        failures = 0  # acknowledgements the adapter refused since the last that all went
        while True:
            await handled.news.wait()
            handled.news.clear()
            count = handled.count
            # The barrier follows every entry recorded for the telegrams handled so far (a
            # decision settled at once joins the backlog with its telegram).
            error = await self.record(())
            if not error:
                refused: list[tuple[int, Telegram]] = []
                for numbered in handled.covered(count):
                    try:
                        self.sorter.acknowledge(numbered[1])
                    except Exception:
                        if not failures:
                            log.exception(
                                "line %s: the sorter refused an acknowledgement; it is asked "
                                "again with the next barrier",
                                self.line.id,
                            )
                        failures += 1
                        refused.append(numbered)
                handled.keep(refused)
                if refused:
                    error = "the sorter refused an acknowledgement"
                elif failures:
                    log.warning(
                        "line %s: the sorter takes acknowledgements again (%d refused)",
                        self.line.id,
                        failures,
                    )
                    failures = 0
            if error:  # not durable (yet), or not taken: try again later
                retry_s = min(2 * retry_s, self.RETRY_MAX_S) if retry_s else self.RETRY_FIRST_S
                await self.clock.sleep_until(self.clock.now() + retry_s)
                handled.news.set()
                continue
            retry_s = 0.0
            if handled.waiting:
                handled.news.set()

    async def _backlog_room(self) -> None:
        """Wait until the backlog is under its cap: a telegram's entries are never left out
        of the journal, so the line takes the next telegram only once it has room. The time
        waited counts as the line standing still (the PLC's news waits in its mailbox)."""
        log.warning(
            "line %s: journal backlog full (%d entries): no telegram is taken until the "
            "journal takes some of it",
            self.line.id,
            self._backlog_entries,
        )
        self._paused = True
        try:
            while self._backlog_entries >= self._backlog_max:
                self._room.clear()
                await self._room.wait()
        finally:
            self._paused = False
        log.info("line %s: journal backlog has room again: telegrams are taken", self.line.id)

    async def drain(self, limit_s: float | None = None) -> None:
        """Wait, at most ``limit_s`` wall seconds in all, for decisions in flight and then for
        journal writes still pending. What is still running then is cancelled and logged: the
        PLC's default lane stands, and recovery takes those parcels back at the next start;
        journal entries still in the backlog are logged in full. The tracker's ticks stop
        until the next event."""
        loop = asyncio.get_running_loop()
        until = loop.time() + (self.DRAIN_LIMIT_S if limit_s is None else limit_s)
        while True:
            tasks = [*self._work.values(), *self._writes]
            if self._flusher is not None and not self._flusher.done():
                tasks.append(self._flusher)
            tasks = [task for task in tasks if not task.done()]
            if not tasks:
                break
            _, stuck = await asyncio.wait(tasks, timeout=max(0.0, until - loop.time()))
            if stuck:
                for task in stuck:
                    task.cancel()
                log.warning("line %s: %d task(s) cut short at shutdown", self.line.id, len(stuck))
                break
        if self._ticker is not None:  # the next event starts it again
            self._ticker.cancel()
            self._ticker = None

    def view(self) -> LineView:
        tracker = self.tracker
        return LineView(
            line=self.line.id,
            health=self.sorter.health(),
            lanes=dict(self.sorter.lane_status()),
            on_belt=len(tracker.on_belt),
            at_inspection=sum(len(q) for q in tracker.in_inspection.values()),
            awaiting_review=tracker.awaiting_review(),
            journal_backlog=self._backlog_entries,
        )

    @property
    def holding_telegrams(self) -> bool:
        """Whether the line waits for room in its journal backlog before it takes the next
        telegram (the PLC's mailbox holds them meanwhile)."""
        return self._paused

    def restore(self, parcels: list[Parcel]) -> None:
        """Take back parcels that were open when the controller last stopped (see recovery)."""
        self.carry_out(self.tracker.restore(parcels, self.clock.now()))

    # --- effects -------------------------------------------------------------------------

    def carry_out(self, effects: list[Effect], *, for_telegram: bool = False) -> None:
        """Start what the tracker asked for; nothing here waits. The first event starts the
        tracker's ticks. ``for_telegram``: the effects of handling a telegram, whose entries
        are never left out of the journal (see :meth:`record`)."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._ticks())
        for effect in effects:
            if isinstance(effect, Record):
                if effect.awaiting is None:
                    self.record(effect.entries, for_telegram=for_telegram)
                else:
                    self._spawn_write(effect, for_telegram)
            elif isinstance(effect, Gather):
                self._start(effect.tracking_id, self._gather(effect))
            elif isinstance(effect, AskReview):
                self._start(effect.request.tracking_id, self._review(effect))
            elif isinstance(effect, Abandon):
                task = self._work.pop(effect.tracking_id, None)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            elif isinstance(effect, Alarm):
                self._alarm(effect.what, effect.message, active=effect.active)
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

    def _spawn_write(self, record: Record, for_telegram: bool = False) -> None:
        """A decision's entries: durable first, then the tracker says whether to reply. They
        join the backlog now, so that they precede whatever the tracker records next (a
        confirmation handled in the same loop turn); the wait is never cancelled with its
        parcel's other work: the audit keeps it."""
        written = self.record(record.entries, for_telegram=for_telegram)
        task = asyncio.create_task(self._durable(record, written))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _durable(self, record: Record, written: asyncio.Future[str]) -> None:
        assert record.awaiting is not None
        error = await written
        if error:
            log.error(
                "line %s: decision not durable, PLC default stands (its entries stay in the "
                "backlog): %s",
                self.line.id,
                error,
            )
        self.carry_out(self.tracker.journalled(record.awaiting, self.clock.now(), error))

    def _spawn_reply(self, reply: Reply) -> None:
        task = asyncio.create_task(self.sorter.reply(reply.reply))
        self._writes.add(task)
        task.add_done_callback(self._replied)

    def _replied(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("line %s: reply not handed to the sorter: %r", self.line.id, exc)

    def _alarm(self, what: str, message: str, *, active: bool) -> None:
        """Raise or clear the line's alarm ``<line>/<what>``; its row joins the backlog (past
        its cap: an alarm row is never left out)."""
        if self.alarms is None:  # a bare controller (tests): the log has it
            state = "raised" if active else "cleared"
            log.warning("line %s: alarm %s %s: %s", self.line.id, what, state, message)
            return
        entry = self.alarms.change(f"{self.line.id}/{what}", message, active=active)
        if entry is not None:
            self._queue((entry,), asyncio.get_running_loop().create_future())

    async def _ticks(self) -> None:
        """Tell the tracker that time passes, every :attr:`TICK_S`, traffic or not. The time
        the line stands still (link not up, not running) does not count against parcels, nor
        does the time the PLC's news waits for the controller: a journal outage (no telegram
        is acknowledged then), a full backlog (no telegram is taken) and a PLC that says its
        mailbox is full (the controller is behind) all leave the PLC's confirmations waiting
        in its mailbox or its backlog."""
        while True:
            await self.clock.sleep_until(self.clock.now() + self.TICK_S)
            try:
                health = self.sorter.health()
                running = (
                    health.link is LinkState.UP
                    and health.line_state in RUNNING_STATES
                    and not health.mailbox_full
                    and not self._outage
                    and not self._paused
                )
                self.carry_out(self.tracker.tick(self.clock.now(), running))
            except Exception:  # a bug here must not stop the watch for good
                log.exception("line %s: tick failed", self.line.id)

    # --- the journal backlog -------------------------------------------------------------

    def record(
        self, entries: Sequence[JournalEntry], *, for_telegram: bool = False
    ) -> asyncio.Future[str]:
        """Journal ``entries`` after everything recorded before them, in order, batched into
        one write per loop turn. The future gives "" once they are durable, or why they are
        not (yet): while the journal refuses writes it says so at once, and the entries are
        still written once it takes them again, unless the backlog is full (then they are
        logged instead). Nobody needs to await it. An empty call is a barrier: it resolves
        once all earlier entries are durable.

        Entries ``for_telegram`` (recorded while handling a telegram) always join the
        backlog, past its cap too: the line takes no telegram while the backlog is at its
        cap, so they add at most one telegram's entries to it, and the telegram is
        acknowledged only once they are journalled."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entries = tuple(entries)
        if entries and not for_telegram and self._full(len(entries)):
            self._overflow(entries)
            done.set_result(f"journal backlog of line {self.line.id} full: logged, not journalled")
            return done
        self._queue(entries, done)
        if self._outage:
            done.set_result(self._outage)  # nobody waits on a journal that refuses writes
        return done

    def _full(self, entries: int) -> bool:
        """Whether ``entries`` more would take the backlog past its cap."""
        return self._backlog_entries + entries > self._backlog_max

    async def journal_command(
        self, entry: JournalEntry, refusal: Callable[[str], JournalEntry]
    ) -> str:
        """Journal an operator command's row durably before the command takes effect: ""
        once it is. When it cannot be (the journal refuses writes, the backlog is full), the
        command is refused and why comes back; its row is then journalled as refused
        (``refusal(why)``) in place of the accepted one, never after it: one truthful row per
        command."""
        if self._outage or self._full(1):
            why = self._outage or f"journal backlog of line {self.line.id} full"
            self.record((refusal(why),))
            return why
        done = self.record((entry,))
        error = await done
        if error and not self._replace(done, (refusal(error),)):
            log.error(
                "line %s: a refused command's row left the backlog before it could be marked "
                "refused; its refusal follows it: %s",
                self.line.id,
                error,
            )
            self.record((refusal(error),))
        return error

    def _replace(self, done: asyncio.Future[str], entries: tuple[JournalEntry, ...]) -> bool:
        """Put ``entries`` in place of the record that ``done`` answers for, while it waits in
        the backlog with no write of it under way; whether it did. Whoever waits hears of a
        refused write between attempts (the failed write has ended, the flusher waits before
        the next), so a refused record is found here unless shutdown took it off."""
        backlog = self._backlog
        for from_end, (queued, future) in enumerate(reversed(backlog)):
            if future is done:
                if len(backlog) - 1 - from_end < self._in_flight:
                    return False
                backlog[-1 - from_end] = (entries, done)
                self._backlog_entries += len(entries) - len(queued)
                return True
        return False

    def _queue(self, entries: tuple[JournalEntry, ...], done: asyncio.Future[str]) -> None:
        self._backlog.append((entries, done))
        self._backlog_entries += len(entries)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Write the backlog from its head, in order; while the journal refuses, retry the
        head with capped backoff."""
        retry_s = self.RETRY_FIRST_S
        try:
            while self._backlog:
                error = await self._write_head()
                if not error:
                    retry_s = self.RETRY_FIRST_S
                    if not self._backlog and (self._outage or self._unjournalled):
                        self._caught_up()
                    continue
                if not self._outage:
                    self._refused(error)
                await self.clock.sleep_until(self.clock.now() + retry_s)
                retry_s = min(2 * retry_s, self.RETRY_MAX_S)
        except asyncio.CancelledError:
            self._abandon()
            raise

    async def _write_head(self) -> str:
        """Write the records at the head of the backlog (up to :attr:`WRITE_CHUNK` entries,
        at least one record) and take them off it; "" once written, else why not (they stay)."""
        batch: list[Queued] = []
        rows: list[JournalEntry] = []
        for queued in self._backlog:
            if batch and len(rows) + len(queued[0]) > self.WRITE_CHUNK:
                break
            batch.append(queued)
            rows += queued[0]
        if rows:
            self._in_flight = len(batch)
            try:
                await self.journal.write(rows)
            except (ValueError, TypeError):  # an entry the journal can never store
                self._in_flight = 0
                return await self._write_apart(len(batch))
            except Exception as exc:
                return _why(exc)
            finally:
                self._in_flight = 0
        for _ in batch:
            self._taken("")
        return ""

    async def _write_apart(self, records: int) -> str:
        """The first ``records`` records hold an entry the journal can never store: write
        them entry by entry, logging those it refuses in full (their record's future says
        so); stop at any other failure, the rest staying at the head."""
        for _ in range(records):
            entries, done = self._backlog[0]
            refused = ""
            while entries:
                self._in_flight = 1
                try:
                    await self.journal.write([entries[0]])
                except (ValueError, TypeError) as exc:
                    refused = f"the journal cannot store an entry: {_why(exc)}"
                    self._unjournal(entries[:1], refused)
                except Exception as exc:
                    return _why(exc)
                finally:
                    self._in_flight = 0
                entries = entries[1:]
                self._backlog[0] = (entries, done)
                self._backlog_entries -= 1
                self._shrunk()
            self._taken(refused)
        return ""

    def _taken(self, error: str) -> None:
        """The head record is written (or left out, ``error`` saying why): off the backlog."""
        entries, done = self._backlog.popleft()
        self._backlog_entries -= len(entries)
        self._shrunk()
        if not done.done():
            done.set_result(error)

    def _shrunk(self) -> None:
        """The backlog shrank: a telegram waiting for room may be taken now."""
        if self._paused and self._backlog_entries < self._backlog_max:
            self._room.set()

    def _refused(self, error: str) -> None:
        """The first refused write of an outage: whoever waits hears it now, and the alarm
        goes up."""
        self._outage = error
        log.error(
            "line %s: the journal refuses writes: %s; %d entries kept in order and retried",
            self.line.id,
            error,
            self._backlog_entries,
        )
        for _, done in self._backlog:
            if not done.done():
                done.set_result(error)
        message = (
            f"the journal refuses writes: {error}; the line keeps its entries in memory (up "
            f"to {self._backlog_max}) and writes them once it takes writes again"
        )
        self._alarm("journal", message, active=True)

    def _caught_up(self) -> None:
        """The backlog is written: clear the outage's alarms, saying what was left out."""
        left_out, self._unjournalled = self._unjournalled, 0
        note = f"; {left_out} entries were logged in full, not journalled" if left_out else ""
        if self._outage:
            self._outage = ""
            log.info("line %s: the journal takes writes again; backlog written", self.line.id)
            self._alarm(
                "journal", f"the journal takes writes again; backlog written{note}", active=False
            )
        if left_out:
            self._alarm("journal-overflow", f"backlog written{note}", active=False)

    def _overflow(self, entries: tuple[JournalEntry, ...]) -> None:
        if not self._unjournalled:
            message = (
                f"the line's journal backlog is full ({self._backlog_max} entries): further "
                "entries are logged in full, not journalled"
            )
            self._alarm("journal-overflow", message, active=True)
        self._unjournal(entries, "the journal backlog is full")

    def _unjournal(self, entries: Sequence[JournalEntry], why: str) -> None:
        """Log ``entries`` in full instead of journalling them: one line each, at INFO (the
        log never holds information back), and count them; the complaint is an error."""
        self._unjournalled += len(entries)
        for entry in entries:
            log.info(
                "line %s: journal entry not journalled (%s): %s", self.line.id, why, _json(entry)
            )
        log.error(
            "line %s: %d journal entries logged, not journalled, so far: %s",
            self.line.id,
            self._unjournalled,
            why,
        )

    def _abandon(self) -> None:
        """Shutdown cut the backlog short: log what is left in full, tell whoever waits."""
        why = "the controller stopped before the journal took them (they may be journalled)"
        while self._backlog:
            entries, done = self._backlog.popleft()
            if entries:
                self._unjournal(entries, why)
            if not done.done():
                done.set_result(why)
        self._backlog_entries = 0
        self._shrunk()


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
                alarms,
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
        the command was being journalled refuses it then, and that is journalled as well. A
        command the journal cannot take is refused, and journalled as refused only."""
        async with self._commands:
            now = self.clock.now()
            line_id, planned = self._plan(command, now)
            record = self.lines[line_id].record if line_id else self._record_site_wide
            if isinstance(planned, Refused):
                return await self._refuse(command, line_id, now, planned.message, record)
            entry = planned.entry
            if line_id:

                def refusal(error: str) -> JournalEntry:
                    data = command_data(command, accepted=False, refused=_not_journalled(error))
                    return entry._replace(ts=self.clock.now(), data=data)

                if error := await self.lines[line_id].journal_command(entry, refusal):
                    log.error("command %s not journalled, not applied: %s", command.command, error)
                    message = _not_journalled(error)
                    log.info("command refused: %s: %s", command.command, message)
                    return CommandResult(accepted=False, message=message)
            elif error := await record((entry,)):
                # The journal took nothing of it: the refusal is its only row.
                log.error("command %s not journalled, not applied: %s", command.command, error)
                message = _not_journalled(error)
                return await self._refuse(command, line_id, self.clock.now(), message, record)
            applied = planned.commit(self.clock.now())
            if isinstance(applied, Refused):
                message = f"not applied: {applied.message}"
                return await self._refuse(command, line_id, self.clock.now(), message, record)
            if line_id:
                self.lines[line_id].carry_out(applied)
            if error := await record(()):  # the effect is durable before the answer
                log.error(
                    "command %s applied; its effect is not journalled yet (the line's backlog "
                    "keeps it): %s",
                    command,
                    error,
                )
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


def _not_journalled(error: str) -> str:
    return f"could not journal the command, nothing changed: {error}"


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


def _why(exc: Exception) -> str:
    """An exception in one short line: a driver's error may go on with the statement and
    every parameter (an alarm message, a deadline miss's reason, a log line carry this)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def _json(entry: JournalEntry) -> str:
    """An entry in full as one JSON object (a decision's inputs rendered)."""
    fields = entry._asdict()
    fields["data"] = dict(entry.data)
    fields["reasons"] = [int(reason) for reason in entry.reasons]
    return json.dumps(fields, default=str, sort_keys=True)
