"""One site's services with one lifecycle: built from the site file, started and stopped as one.

:class:`Services` enters every part with an ``async with`` on one
:class:`contextlib.AsyncExitStack`, in dependency order (journal, event publisher, forwarder,
alarms, then the adapters), recovers the parcels and holds the journal shows open, loads the
risk feeds, and :meth:`Services.run` serves with every background task in one
:class:`asyncio.TaskGroup`. Leaving stops them in reverse, each step bounded: adapters close
(links drop, the inference session ends), pending alarm rows and threat reports are written,
the forwarder ships the journal tail, the event publisher publishes it, and the journal
flushes last. Every adapter's link state is one call away (:meth:`Services.links`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from controller.alarms import Alarms
from controller.app.command_channel import CommandChannel
from controller.app.parts import Plant, assemble
from controller.app.registry import Registry, default_registry
from controller.app.site import SiteConfig
from controller.app.systemd import Notifier
from controller.console.app import create_app
from controller.console.context import ConsoleContext
from controller.console.schemas import ThresholdOut
from controller.console.server import ConsoleServer
from controller.core.clock import Clock
from controller.core.link import LinkState
from controller.core.views import AlarmView, SiteView, XrayView
from controller.events.mqtt import MqttPublisher
from controller.lines import Controller
from controller.recovery import hold_on_clock, recover
from controller.risk.book import RiskBook
from controller.scada.opcua import ScadaServer
from controller.store.audit import SqlAuditLog
from controller.store.forwarder import JournalForwarder
from controller.store.journal import SqliteJournal
from controller.store.users import SqlUserDirectory

log = logging.getLogger(__name__)

CLOSE_LIMIT_S = 10.0
"""How long one part may take to stop before the shutdown moves on without it."""
READY_WAIT_S = 30.0
"""How long start-up waits for the sorters' links before telling systemd it is ready anyway."""
SHIP_LIMIT_S = 10.0
"""How long the forwarder may ship the journal tail at shutdown (the rest goes next start)."""


Reporter = Callable[[SiteView], None]


class StartupError(Exception):
    """A part could not start (a missing model, a port in use ...): names the part; the
    cause is chained."""

    def __init__(self, part: str, cause: BaseException) -> None:
        super().__init__(f"{part}: {type(cause).__name__}: {cause}")
        self.part = part


class Services:
    """Every part of one site with one lifecycle: ``async with`` starts and stops them all;
    :meth:`run` serves (entering the lifecycle itself when called outside one).

    Building (the constructor) does no I/O beyond what a plant needs to prepare; it builds
    every part ``config`` names through ``registry`` (default: every installed plugin).
    """

    def __init__(self, config: SiteConfig, registry: Registry | None = None) -> None:
        self.parts = parts = assemble(config, registry or default_registry())
        self.config: SiteConfig = parts.config
        self.controller: Controller = parts.controller
        self.journal: SqliteJournal = parts.journal
        self.alarms: Alarms = parts.alarms
        self.forwarder: JournalForwarder | None = parts.forwarder
        self.events: MqttPublisher | None = parts.events
        self.book: RiskBook = parts.book
        self.clock: Clock = parts.clock
        self.plant: Plant = parts.plant
        self._stack: contextlib.AsyncExitStack | None = None
        self.console: ConsoleServer | None = None
        """The console while the services run (its ``url`` names where)."""
        self.scada: ScadaServer | None = None
        """The SCADA OPC UA server while the services run (its ``endpoint`` names where)."""

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._stack is not None

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("the services are already started")
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(self.journal)  # stops last: every row lands
            if self.events is not None:  # next: it reads where the earlier runs' rows end
                await stack.enter_async_context(bounded(self.events, "events"))
            if self.forwarder is not None:
                await stack.enter_async_context(bounded(self.forwarder, "forwarder"))
                stack.push_async_callback(self._ship_tail, self.forwarder)
            await stack.enter_async_context(bounded(self.alarms, "alarms"))
            reports = self.parts.intake.reports if self.parts.intake else None
            drain = getattr(reports, "drain", None)
            if drain is not None:
                stack.push_async_callback(_drain, drain, "threat reports")
            for name, part in self.parts.named:
                try:
                    await stack.enter_async_context(bounded(lifecycle(part), name))
                except Exception as exc:
                    raise StartupError(name, exc) from exc
            await self.recover()
            await self._first_risk_load()
            if self.config.commands.enabled:  # operators act once the state is recovered
                channel = CommandChannel.from_settings(self.config.commands, self.controller)
                try:
                    await stack.enter_async_context(channel)
                except Exception as exc:
                    raise StartupError("commands", exc) from exc
            if self.config.console.enabled:
                try:
                    self.console = await stack.enter_async_context(self._console())
                except Exception as exc:
                    raise StartupError("console", exc) from exc
            if self.config.scada.enabled:
                try:
                    self.scada = await stack.enter_async_context(self._scada())
                except Exception as exc:
                    raise StartupError("scada", exc) from exc
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def _console(self) -> AsyncIterator[ConsoleServer]:
        """The console on this site's parts: the controller takes its commands, the journal
        answers its searches, the site's database keeps its users."""
        config = self.config
        audit = SqlAuditLog(config.store.journal_path, config.site.id)
        users = SqlUserDirectory(config.store.journal_path)
        ctx = ConsoleContext(
            settings=config.console,
            read=self.snapshot,
            commands=self.controller,
            audit=audit,
            users=users,
            lane_kinds={
                line.id: {lane.id: str(lane.kind) for lane in line.lanes} for line in config.lines
            },
            speed=float(getattr(self.clock, "speed", 1.0)),
            images=self.parts.images,
            ready=lambda: self.started,
            parcels=self.controller.parcels,
            clock=self.clock.now,
            thresholds={
                name: ThresholdOut(clear=c.clear, alarm=c.alarm)
                for name, c in config.policy.classes.items()
            },
        )
        try:
            async with ConsoleServer(create_app(ctx), config.console) as server:
                yield server
        finally:
            await audit.aclose()
            await asyncio.to_thread(users.close)

    def _scada(self) -> ScadaServer:
        """The SCADA server over this site's snapshots (read-only; docs/scada.md)."""
        config = self.config
        return ScadaServer(
            config.scada,
            self.snapshot,
            lane_kinds={
                line.id: {lane.id: str(lane.kind) for lane in line.lanes} for line in config.lines
            },
            speed=float(getattr(self.clock, "speed", 1.0)),
        )

    async def _ship_tail(self, forwarder: JournalForwarder) -> None:
        """Ship what the central database still lacks, for at most :data:`SHIP_LIMIT_S`;
        the rest stays in the local journal and goes on the next start."""
        try:
            async with asyncio.timeout(SHIP_LIMIT_S):
                while await forwarder.forward_once() > 0:
                    pass
        except TimeoutError:
            log.info(
                "journal tail not all shipped within %g s; the rest goes next start", SHIP_LIMIT_S
            )
        except Exception:
            log.exception("shipping the journal tail failed; it goes on the next start")

    async def recover(self) -> None:
        """Take back the parcels and holds the journal shows open (a restart loses none)."""
        wall_now, now = datetime.now(UTC), self.clock.now()
        store = self.config.store
        recovered = await asyncio.to_thread(
            recover, self.journal.url, self.config.site.id, now, wall_now, store.recovery_horizon_h
        )
        holds = [hold_on_clock(hold, now, wall_now) for hold in recovered.holds]
        self.controller.restore(recovered.parcels, holds)
        if recovered.parcels or recovered.holds:
            log.info(
                "recovered %d open parcel(s) and %d hold(s) from the journal",
                len(recovered.parcels),
                len(recovered.holds),
            )
        if recovered.beyond_horizon:
            self.alarms.alarm(
                "recovery/beyond-horizon",
                f"{recovered.beyond_horizon} parcel(s) open in the journal arrived more than "
                f"{store.recovery_horizon_h:g} h ago: not taken back, find them by hand",
                active=True,
            )

    async def _first_risk_load(self) -> None:
        """Load every feed once before the first scan."""
        if self.parts.feeds:
            problems = await self.book.refresh_once([feed for feed, _ in self.parts.feeds])
            log.info("risk feeds: %d results loaded, %d problems", len(self.book), len(problems))

    # --- serving -----------------------------------------------------------------------------

    async def run(
        self,
        duration_s: float | None = None,
        stop: asyncio.Event | None = None,
        report: Reporter | None = None,
        report_every_s: float = 1.0,
    ) -> SiteView:
        """Serve until ``stop`` is set, or until the plant has played ``duration_s`` wall
        seconds and the lines have drained what it sent. Returns the final snapshot."""
        if self._stack is None:
            async with self:
                return await self.run(duration_s, stop, report, report_every_s)
        stop = stop or asyncio.Event()
        notifier = Notifier()
        async with asyncio.TaskGroup() as group:
            background = [
                group.create_task(work, name=name)
                for name, work in self._background(report, report_every_s)
            ]
            if notifier.enabled:
                background.append(group.create_task(self._systemd(notifier), name="systemd"))
            serving = group.create_task(self.controller.run(), name="controller")
            playing = group.create_task(self.plant.play(duration_s, stop), name="plant")
            stopping = group.create_task(stop.wait(), name="stop")
            await asyncio.wait({serving, playing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set() and playing.done() and not serving.done():
                # the plant ended its sorters' streams: let the lines finish what it sent
                await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            notifier.notify("STOPPING=1")
            for task in (serving, playing, stopping, *background):
                task.cancel()
        final = self.snapshot()
        if report is not None:
            report(final)
        return final

    def _background(
        self, report: Reporter | None, every_s: float
    ) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The tasks that run beside the lines for as long as the site serves."""
        work: list[tuple[str, Coroutine[Any, Any, None]]] = []
        if self.parts.feeds:
            poll = min(poll_s for _, poll_s in self.parts.feeds)
            work.append(("risk feeds", self.book.run([f for f, _ in self.parts.feeds], poll)))
        if self.forwarder is not None:
            work.append(("forwarder", self.forwarder.run()))
        if self.events is not None:
            work.append(("events", self.events.run(self.snapshot)))
        intake = self.parts.intake
        if intake is not None:
            work.append(("intake matcher", intake.matcher.run()))
            for name, source in intake.sources.items():
                work.append((f"intake {name}", source.run()))
        if report is not None:
            work.append(("report", self._report(report, every_s)))
        return work

    async def _systemd(self, notifier: Notifier) -> None:
        """Tell systemd the site is ready once its sorters' links are up (or after
        :data:`READY_WAIT_S`, saying which are not), then feed its watchdog while the
        journal writer runs."""
        loop = asyncio.get_running_loop()
        until = loop.time() + READY_WAIT_S
        while (down := self._sorters_down()) and loop.time() < until:  # noqa: ASYNC110 (links are plain attributes, polled)
            await asyncio.sleep(0.2)
        status = f"serving {len(self.config.lines)} line(s)"
        notifier.notify(
            "READY=1", f"STATUS={status}" + (f"; not up: {', '.join(down)}" if down else "")
        )
        await notifier.watchdog(
            lambda: "" if self.journal.writing else "the journal writer has stopped"
        )

    def _sorters_down(self) -> list[str]:
        return [
            line
            for line, sorter in self.parts.sorters.items()
            if getattr(sorter, "link_state", LinkState.UP) is not LinkState.UP
        ]

    async def _report(self, report: Reporter, every_s: float) -> None:
        while True:
            report(self.snapshot())
            await asyncio.sleep(every_s)

    # --- state -------------------------------------------------------------------------------

    def links(self) -> dict[str, LinkState]:
        """The link state of every part that has one (sorters, feeds, the inference service,
        the central database, the event broker), read from plain attributes: no client is
        asked."""
        states: dict[str, LinkState] = {}
        if self.forwarder is not None:
            states["central database"] = self.forwarder.link_state
        if self.events is not None:
            states["event broker"] = self.events.link_state
        if self.parts.feeds:
            states["risk feeds"] = self.book.link_state
        for name, part in self.parts.named:
            state = getattr(part, "link_state", None)
            if isinstance(state, LinkState):
                states[name] = state
        return states

    def snapshot(self) -> SiteView:
        """The whole site at this moment, as every reader sees it (taken in one go)."""
        alarms = tuple(
            AlarmView(a.source, a.message, a.since, a.acknowledged_by, a.comment)
            for a in sorted(self.alarms.active.values(), key=lambda a: a.since)
        )
        holds = sorted(self.controller.holds.items().values(), key=lambda h: h.since)
        return SiteView(
            site=self.config.site.id,
            controller=self.controller.view(),
            risk_results=len(self.book),
            risk_results_evicted=self.book.evicted,
            journal_rows=self.journal.rows_written,
            journal_commits=self.journal.commits,
            forwarder=self.forwarder.status if self.forwarder else None,
            plant=dict(self.plant.counts()),
            links=self.links(),
            alarms=alarms,
            reviews=self.controller.reviews(),
            holds=tuple(holds),
            xray=_xray_view(self.parts.xray),
        )


def _xray_view(xray: object) -> XrayView | None:
    """The inference service's counters, when the X-ray port keeps them (the ONNX one)."""
    stats, state = getattr(xray, "stats", None), getattr(xray, "state", None)
    if stats is None or state is None:
        return None
    return XrayView(
        state=str(state),
        images=int(getattr(stats, "images", 0)),
        failures=int(getattr(stats, "failures", 0)),
        restarts=int(getattr(stats, "restarts", 0)),
        last_run_s=float(getattr(stats, "last_run_s", 0.0)),
    )


@contextlib.asynccontextmanager
async def lifecycle(part: object) -> AsyncIterator[object]:
    """The one lifecycle every adapter gets: ``async with`` if it is an async context
    manager; otherwise its ``aclose()`` (or a coroutine ``close()``) at exit; otherwise none."""
    enter, leave = getattr(part, "__aenter__", None), getattr(part, "__aexit__", None)
    if enter is not None and leave is not None:
        async with part:  # type: ignore[attr-defined]
            yield part
        return
    closer = getattr(part, "aclose", None) or getattr(part, "close", None)
    try:
        yield part
    finally:
        if closer is not None and inspect.iscoroutinefunction(closer):
            await closer()


@contextlib.asynccontextmanager
async def bounded(
    manager: contextlib.AbstractAsyncContextManager[Any], name: str, limit_s: float = CLOSE_LIMIT_S
) -> AsyncIterator[object]:
    """``manager`` whose exit may take at most ``limit_s``: a part that hangs while stopping
    is logged and left behind so the rest of the shutdown (the journal) still happens."""
    value = await manager.__aenter__()
    try:
        yield value
    except BaseException as exc:
        await _within(manager.__aexit__(type(exc), exc, exc.__traceback__), name, limit_s)
        raise
    else:
        await _within(manager.__aexit__(None, None, None), name, limit_s)


async def _drain(drain: Callable[[], Coroutine[Any, Any, object]], name: str) -> None:
    """Await ``drain()`` (pending writes), bounded."""
    await _within(drain(), name)


async def _within(
    work: Coroutine[Any, Any, object], name: str, limit_s: float = CLOSE_LIMIT_S
) -> None:
    try:
        async with asyncio.timeout(limit_s):
            await work
    except TimeoutError:
        log.error("%s did not stop within %g s; shutting down without it", name, limit_s)
    except Exception:
        log.exception("%s failed while stopping", name)
