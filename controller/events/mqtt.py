"""Publishes a site's journal to an MQTT broker: at least once, in journal order, and never
in the way of sorting.

The outbox pattern, as the central-database forwarder (:mod:`controller.store.forwarder`)
ships the journal: the publisher tails the local journal by ``seq`` from a durable watermark
(:mod:`controller.events.progress`), publishes each row at QoS 1, and moves the watermark on
only once the broker has acknowledged (PUBACK) every row up to it. It only reads the
journal, in a task of its own, so a broker that is down or slow never holds up a decision:
rows wait in the journal while the publisher reconnects with capped exponential backoff, and
it resumes from the watermark. Rows acknowledged but not yet recorded when the connection
or the process fails are published again: consumers deduplicate by ``(site, seq)``.

Beside the rows it keeps retained state topics (:mod:`controller.events.topics`): each
alarm's while it is active, each lane's state, the site's KPIs every ``kpi_every_s``, and
its own online status (its MQTT will says offline should the connection drop). Alarm topics
follow the journal: a raising row sets one, its clearing row empties it. The site's alarm
board starts empty at every start, so once the rows journalled before this start are out,
the alarms they left active are cleared (a condition still present is raised again, with a
row of its own).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt
import sqlalchemy as sa

from controller.core.domain import LaneStatus
from controller.core.link import LinkState
from controller.core.settings import ConfigError
from controller.core.views import SiteView
from controller.events.progress import Progress, ProgressFile, progress_path_for
from controller.events.settings import MqttEventsSettings
from controller.events.topics import (
    Message,
    Topics,
    kpi_payload,
    lane_payload,
    lane_state,
    row_messages,
    status_payload,
)
from controller.store.read import chain_head
from controller.store.schema import journal_table
from controller.store.sqlite import sqlite_engine

log = logging.getLogger(__name__)

BATCH: Final = 500
"""Rows read and published together (all in flight at once; one watermark write)."""
POLL_S: Final = 0.25
"""How often the journal is read for new rows while the publisher has caught up."""
VIEW_EVERY_S: Final = 1.0
"""How often the site view is read for lane states (and, when due, KPIs)."""
TIMEOUT_S: Final = 10.0
"""How long a connection attempt, or a publish awaiting its PUBACK, may take."""
KEEPALIVE_S: Final = 15
"""MQTT keep-alive: a broker that stops answering is given up within twice this."""
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_CAP_S: Final = 30.0
TAIL_LIMIT_S: Final = 5.0
"""How long stopping may spend publishing the rows written since the last batch."""
SETTLE_S: Final = 1.0
"""How long a stop or a dropped connection waits for the PUBACKs of the batch on the wire."""
MAX_INFLIGHT: Final = 100
"""QoS 1 publishes on the wire at once, awaiting their PUBACK."""

View = Callable[[], SiteView]


def target_name(settings: MqttEventsSettings) -> str:
    """The watermark's key: the broker and the topic prefix (a new one starts from row 1)."""
    scheme = "mqtts" if settings.tls else "mqtt"
    return f"{scheme}://{settings.host}:{settings.broker_port}/{settings.topic_prefix}"


class MqttPublisher:
    """Publishes one site's journal, lane states and KPIs to the broker ``settings`` names.

    ``async with`` it around the time the site serves (entered right after the journal: it
    reads where the journal ends), and run :meth:`run` meanwhile; leaving publishes the rows
    still unpublished, for at most :data:`TAIL_LIMIT_S`. ``lanes`` maps each line to its
    lanes' kinds. ``link_state`` is up while connected, down while the broker cannot be
    reached, degraded when something else failed (the journal could not be read).
    """

    def __init__(
        self,
        settings: MqttEventsSettings,
        site: str,
        journal_path: Path,
        lanes: Mapping[str, Mapping[int, str]] | None = None,
        *,
        progress_path: Path | None = None,
        backoff_cap_s: float = BACKOFF_CAP_S,
        poll_s: float = POLL_S,
        batch: int = BATCH,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.settings = settings
        self.site = site
        self.journal_path = Path(journal_path)
        self.topics = Topics(settings.topic_prefix, site)
        self.target = target_name(settings)
        self._lanes = {line: dict(kinds) for line, kinds in (lanes or {}).items()}
        self._file = ProgressFile(
            progress_path or progress_path_for(self.journal_path), self.target
        )
        self._password = _password(settings)
        self._tls = _tls_context(settings)
        self._client_id = settings.client_id or f"cargogate-{site}"
        self._backoff_cap_s = max(backoff_cap_s, BACKOFF_FIRST_S)
        self._poll_s = poll_s
        self._batch = batch
        self._engine: sa.Engine | None = None
        self._progress = Progress()
        self._boot_seq: int | None = None
        self._stale = False
        self._ran = False
        self._session_up = False
        self._link = LinkState.CONNECTING
        self._last_error: str | None = None
        self._published = 0
        self._outage_since: float | None = None
        self._faulted = False

    # --- what the site reads ----------------------------------------------------------------

    @property
    def link_state(self) -> LinkState:
        return self._link

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def watermark(self) -> int:
        """The highest ``seq`` the broker has acknowledged, with every ``seq`` before it."""
        return self._progress.last_seq

    @property
    def published_total(self) -> int:
        """Rows acknowledged by the broker since this publisher was made."""
        return self._published

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Read where the journal ends (the rows of earlier runs) and the watermark. Done by
        ``async with`` or the first :meth:`run`; again is a no-op."""
        if self._boot_seq is not None:
            return
        head, first = await asyncio.to_thread(self._journal_head)
        progress = await asyncio.to_thread(self._file.load)
        if progress.last_seq > head or (first and progress.journal not in (None, first)):
            log.warning(
                "event progress %s belongs to another journal (watermark %d, journal ends at "
                "%d); publishing this journal from its first row",
                self._file.path,
                progress.last_seq,
                head,
            )
            self._file.reset()
            progress = Progress(alarms=progress.alarms)  # cleared once caught up (stale)
        self._progress = progress
        self._boot_seq = head
        self._stale = True

    async def aclose(self) -> None:
        """Publish the rows still unpublished (at most :data:`TAIL_LIMIT_S`; the rest goes
        on the next start) and say offline, then let go of the journal. Call it once
        :meth:`run` has stopped."""
        if self._ran:
            try:
                async with asyncio.timeout(TAIL_LIMIT_S):
                    await self._publish_tail()
            except TimeoutError:
                log.info(
                    "events not all published within %g s; the rest go next start", TAIL_LIMIT_S
                )
            except aiomqtt.MqttError as exc:
                log.info("events not all published (%s); the rest go next start", exc)
            except Exception:
                log.exception("publishing the last events failed; they go next start")
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)
        self._link = LinkState.DOWN

    async def run(self, view: View | None = None) -> None:
        """Publish until cancelled; never raises but on cancellation. ``view`` (the site's
        snapshot) gives the lane states and KPIs; without it only the journal goes out."""
        await self.start()
        self._ran = True
        failures = 0
        while True:
            self._session_up = False
            try:
                await self._session(view)
            except* aiomqtt.MqttError as group:
                self._on_outage(group.exceptions[0])
            except* Exception as group:
                self._on_fault(group.exceptions[0])
            failures = 1 if self._session_up else failures + 1
            await asyncio.sleep(
                min(self._backoff_cap_s, BACKOFF_FIRST_S * 2 ** min(failures - 1, 30))
            )

    # --- one connection -----------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        settings = self.settings
        client = aiomqtt.Client(
            settings.host,
            settings.broker_port,
            username=settings.username,
            password=self._password,
            identifier=self._client_id,
            will=aiomqtt.Will(
                self.topics.status, status_payload(self.site, online=False), qos=1, retain=True
            ),
            clean_session=True,
            timeout=TIMEOUT_S,
            keepalive=KEEPALIVE_S,
            tls_context=self._tls,
            max_inflight_messages=MAX_INFLIGHT,
        )
        client.pending_calls_threshold = 2 * self._batch + 64  # a batch is meant to be in flight
        return client

    async def _session(self, view: View | None) -> None:
        """Connect, then publish until the connection drops (raising why)."""
        async with self._client() as client:
            self._on_connected()
            async with asyncio.TaskGroup() as group:
                group.create_task(_until_disconnected(client))
                group.create_task(self._serve(client, view))

    async def _serve(self, client: aiomqtt.Client, view: View | None) -> None:
        retained = [Message(self.topics.status, status_payload(self.site, online=True), True)]
        if not self._stale:  # the broker may have lost them (a restart without persistence)
            retained += [
                Message(topic, payload.encode(), retain=True)
                for topic, payload in self._progress.alarms.items()
            ]
        await _send(client, retained)
        lanes_sent: dict[tuple[str, int], str] = {}
        loop = asyncio.get_running_loop()
        next_view = next_kpi = loop.time()
        while True:
            read = await self._publish_rows(client)
            if view is not None and loop.time() >= next_view:
                next_view = loop.time() + VIEW_EVERY_S
                snapshot = view()
                await self._publish_lanes(client, snapshot, lanes_sent)
                if loop.time() >= next_kpi:
                    next_kpi = loop.time() + self.settings.kpi_every_s
                    payload = kpi_payload(snapshot, datetime.now(UTC))
                    await _send(client, [Message(self.topics.kpi, payload, retain=True)])
            if read < self._batch:
                await asyncio.sleep(self._poll_s)

    async def _publish_tail(self) -> None:
        async with self._client() as client:
            while await self._publish_rows(client) > 0:
                pass
            offline = status_payload(self.site, online=False)
            await _send(client, [Message(self.topics.status, offline, retain=True)])

    # --- the journal's rows -------------------------------------------------------------------

    async def _publish_rows(self, client: aiomqtt.Client) -> int:
        """Publish the next batch of rows; return how many were read."""
        assert self._boot_seq is not None, "start() reads where the journal ends"
        if self._stale and self._progress.last_seq >= self._boot_seq:
            await self._clear_stale(client)
        after = self._progress.last_seq
        upto = self._boot_seq if after < self._boot_seq else None
        rows = await asyncio.to_thread(self._read_rows, after, upto)
        if not rows:
            self._works()
            return 0
        batch = asyncio.ensure_future(self._publish_batch(client, rows))
        try:
            await asyncio.shield(batch)
        except asyncio.CancelledError:
            # stopping, or the connection dropped: the PUBACKs of a batch on the wire are
            # due at once, and once recorded its rows are not sent again
            await asyncio.wait([batch], timeout=SETTLE_S)
            if batch.done() and not batch.cancelled():
                batch.exception()  # seen: the next session reports the same state
            batch.cancel()
            raise
        self._works()
        return len(rows)

    async def _publish_batch(self, client: aiomqtt.Client, rows: list[dict[str, Any]]) -> None:
        """Publish ``rows`` all at once; move the watermark over those whose every publish
        the broker acknowledged, in order, then raise the first failure if there was one."""
        progress = self._progress
        topics = self.topics  # the messages are built off the loop: ~0.1 ms a row
        planned = await asyncio.to_thread(lambda: [(r, row_messages(topics, r)) for r in rows])
        outcomes = await _publish(client, [m for _, (ms, _) in planned for m in ms])
        alarms, last_seq, journal = dict(progress.alarms), progress.last_seq, progress.journal
        done, at = 0, 0
        failure: BaseException | None = None
        for row, (messages, change) in planned:
            failure = next((o for o in outcomes[at : at + len(messages)] if o is not None), None)
            if failure is not None:
                break
            at += len(messages)
            done, last_seq = done + 1, int(row["seq"])
            if change is not None and change.payload is None:
                alarms.pop(change.topic, None)
            elif change is not None and change.payload is not None:
                alarms[change.topic] = change.payload.decode()
            if last_seq == 1 and journal is None:
                journal = row["hash"]
        if done:
            self._published += done
            await self._save(Progress(last_seq, alarms, journal))
        if failure is not None:
            raise failure

    async def _clear_stale(self, client: aiomqtt.Client) -> None:
        """Empty the alarm topics that the rows before this start left set."""
        stale = list(self._progress.alarms)
        if stale:
            await _send(client, [Message(topic, b"", retain=True) for topic in stale])
            await self._save(replace(self._progress, alarms={}))
            log.info("cleared %d alarm topic(s) left active before this start", len(stale))
        self._stale = False

    async def _save(self, progress: Progress) -> None:
        """Record what the broker acknowledged: at once in memory (this process never sends
        it again), then durably (should the write fail, a restart sends it again)."""
        self._progress = progress
        await asyncio.to_thread(self._file.save, progress)

    async def _publish_lanes(
        self, client: aiomqtt.Client, view: SiteView, sent: dict[tuple[str, int], str]
    ) -> None:
        """Publish each lane whose state changed since the last (every lane, first)."""
        at = datetime.now(UTC)
        words = {line.line: line.lanes for line in view.controller.lines}
        changed: dict[tuple[str, int], str] = {}
        messages = []
        for line, kinds in self._lanes.items():
            for lane, kind in kinds.items():
                state = lane_state(words.get(line, {}).get(lane, LaneStatus.AVAILABLE))
                if sent.get((line, lane)) != state:
                    changed[line, lane] = state
                    payload = lane_payload(self.site, line, lane, kind, state, at)
                    messages.append(Message(self.topics.lane(line, lane), payload, retain=True))
        await _send(client, messages)
        sent.update(changed)

    # --- worker threads -----------------------------------------------------------------------

    def _journal(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sqlite_engine(self.journal_path)
        return self._engine

    def _journal_head(self) -> tuple[int, str | None]:
        """The site's last ``seq`` and the hash of its first row."""
        j = journal_table.c
        with self._journal().connect() as conn:
            head, _ = chain_head(conn, self.site)
            first = conn.execute(
                sa.select(j.hash).where(j.site == self.site, j.seq == 1)
            ).scalar_one_or_none()
        return head, first

    def _read_rows(self, after: int, upto: int | None) -> list[dict[str, Any]]:
        j = journal_table.c
        stmt = sa.select(journal_table).where(j.site == self.site, j.seq > after)
        if upto is not None:
            stmt = stmt.where(j.seq <= upto)
        stmt = stmt.order_by(j.seq).limit(self._batch)
        with self._journal().connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    # --- link state ---------------------------------------------------------------------------

    def _on_connected(self) -> None:
        self._session_up = True
        self._link = LinkState.UP
        self._last_error = None
        if self._outage_since is not None:
            log.info(
                "event broker %s reachable again after %.1f s; publishing from seq %d",
                self.target,
                time.monotonic() - self._outage_since,
                self._progress.last_seq + 1,
            )
            self._outage_since = None

    def _on_outage(self, exc: BaseException) -> None:
        self._link = LinkState.DOWN
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "event broker %s unreachable (%s); events wait in the journal, retrying",
                self.target,
                self._last_error,
            )

    def _works(self) -> None:
        """A batch went through: a fault logged earlier is over."""
        if self._faulted:
            self._faulted = False
            self._link = LinkState.UP
            log.info("publishing events to %s works again", self.target)

    def _on_fault(self, exc: BaseException) -> None:
        self._link = LinkState.DEGRADED
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        if not self._faulted:
            self._faulted = True
            log.error("publishing events to %s failed; retrying", self.target, exc_info=exc)


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Return never; raise once the connection drops. Nothing is subscribed, so the message
    stream only ever ends, when the client loses its broker."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("disconnected")


async def _publish(
    client: aiomqtt.Client, messages: Sequence[Message]
) -> list[BaseException | None]:
    """Publish ``messages`` at QoS 1, all in flight at once and on the wire in this order;
    each one's outcome (None once the broker acknowledged it)."""
    outcomes = await asyncio.gather(
        *(client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in messages),
        return_exceptions=True,
    )
    return [outcome if isinstance(outcome, BaseException) else None for outcome in outcomes]


async def _send(client: aiomqtt.Client, messages: Sequence[Message]) -> None:
    """Publish ``messages``; raise the first failure."""
    for outcome in await _publish(client, messages):
        if outcome is not None:
            raise outcome


def _password(settings: MqttEventsSettings) -> str | None:
    if settings.password_env is None:
        return None
    password = os.environ.get(settings.password_env)
    if not password:
        problem = ("events.password_env", repr(settings.password_env), "not set or empty")
        raise ConfigError("events", [problem])
    return password


def _tls_context(settings: MqttEventsSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    ca_file = None if settings.ca_file is None else str(settings.ca_file)
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError("events", [("events.ca_file", repr(ca_file), str(exc))]) from None
