"""Events on MQTT against a real Mosquitto: rows journalled through the real journal reach a
real subscriber in order; retained alarm topics are set and cleared; a broker outage loses
nothing and, after deduplication by (site, seq), doubles nothing; a restarted publisher
resumes from its watermark; TLS and passwords work, and their failures show on the link."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.alarms import Alarms
from controller.app.services import Services
from controller.core.domain import EntryKind, JournalEntry
from controller.core.link import LinkState
from controller.events.mqtt import MqttPublisher
from controller.events.progress import progress_path_for
from controller.events.settings import MqttEventsSettings
from controller.events.topics import EVENT_SCHEMA, KPI_SCHEMA, LANE_SCHEMA
from controller.store.journal import SqliteJournal
from controller.store.read import read_entries
from tests.test_site import demo_config

MQTT_ENV = "CARGOGATE_TEST_MQTT_HOST"
SITE = "HUB1"
WAIT_S = 15.0


# --- brokers --------------------------------------------------------------------------------


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def mqtt_host() -> str:
    """The shared broker (Mosquitto on 127.0.0.1:1883, which .ci/run starts)."""
    host = os.environ.get(MQTT_ENV)
    if not host:
        pytest.skip(f"set {MQTT_ENV} to run the MQTT tests against a broker on port 1883")
    if not _answers(host, 1883):
        pytest.skip(f"no MQTT broker answers on {host}:1883 ({MQTT_ENV})")
    return host


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateBroker:
    """A Mosquitto of the test's own on a free port, to stop and start again at will. Its
    sessions and retained messages persist across a stop (as a site's broker's would)."""

    def __init__(self, folder: Path, settings: str = "allow_anonymous true\n") -> None:
        self.binary = mosquitto_binary()
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "user root\n"  # no change of user: it reads and writes the test's own folder
            "persistence true\n"
            f"persistence_location {folder}/\n"
            f"{settings}"
        )
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with (self.folder / "mosquitto.log").open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary, "-c", str(self.config), stdout=log, stderr=log
            )
        for _ in range(100):
            if self._process.returncode is not None:
                log_text = (self.folder / "mosquitto.log").read_text()
                raise RuntimeError(f"mosquitto exited: {log_text}")
            if _answers("127.0.0.1", self.port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("mosquitto did not answer within 5 s")

    async def stop(self) -> None:
        """Stop it as an operator would (it saves its sessions), and wait until it is gone."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await process.wait()


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "broker")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


# --- a subscriber ---------------------------------------------------------------------------


def event_filters(prefix: str, site: str = SITE) -> list[str]:
    """The topic filters of every journal row's event (not the retained state topics)."""
    root = f"{prefix}/{site}"
    return [f"{root}/+/parcel/+", f"{root}/+/command", f"{root}/+/alarm"]


class Subscriber:
    """Collects what its topic filters receive, reconnecting (to its persistent session, when
    made with ``identifier`` and ``clean_session=False``) whenever the broker goes away."""

    def __init__(self, filters: list[str], host: str, port: int = 1883, **client: Any) -> None:
        self.filters, self.host, self.port, self.client = filters, host, port, client
        self.received: list[aiomqtt.Message] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._collect())
        async with asyncio.timeout(WAIT_S):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _collect(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, **self.client) as client:
                    await client.subscribe([(f, 1) for f in self.filters])
                    self.subscribed.set()
                    async for message in client.messages:
                        self.received.append(message)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def payloads(self) -> list[dict[str, Any]]:
        """Every JSON payload received, in arrival order (empty ones left out)."""
        return [json.loads(m.payload) for m in self.received if _bytes(m)]

    def seqs(self) -> list[int]:
        return [int(p["seq"]) for p in self.payloads()]

    async def wait_for(self, done: Callable[[], bool], what: str) -> None:
        await until(done, what, lambda: f"; topics seen: {sorted(self.topics())}")

    def topics(self) -> set[str]:
        return {m.topic.value for m in self.received}


def _bytes(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return bytes(payload) if isinstance(payload, bytes | bytearray) else b""


async def retained(
    topic_filter: str, host: str, port: int = 1883, **client: Any
) -> dict[str, bytes]:
    """What the broker retains under ``topic_filter`` now, as a new subscriber sees it."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(host, port, **client) as subscriber:
        await subscriber.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # retained messages come at once, then nothing
                async for message in subscriber.messages:
                    if message.retain:
                        found[message.topic.value] = _bytes(message)
    return found


async def clear_retained(prefix: str, host: str, port: int = 1883, **client: Any) -> None:
    """Leave the shared broker without this test's retained topics."""
    topics = await retained(f"{prefix}/#", host, port, **client)
    async with aiomqtt.Client(host, port, **client) as publisher:
        for topic in topics:
            await publisher.publish(topic, b"", qos=1, retain=True)


# --- the site's side ------------------------------------------------------------------------


def settings(host: str, prefix: str, port: int = 1883, **more: Any) -> MqttEventsSettings:
    return MqttEventsSettings(host=host, port=port, topic_prefix=prefix, **more)


@pytest.fixture
async def shared(mqtt_host: str) -> AsyncIterator[tuple[str, str]]:
    """(broker host, a topic prefix of this test's own), its retained topics removed after."""
    prefix = f"cgtest-{secrets.token_hex(4)}"
    try:
        yield mqtt_host, prefix
    finally:
        await clear_retained(prefix, mqtt_host)


def parcel(
    tracking_id: int, line: str = "L1", kind: EntryKind = EntryKind.DECISION
) -> JournalEntry:
    return JournalEntry(
        ts=100.0 + tracking_id,
        kind=kind,
        line=line,
        tracking_id=tracking_id,
        hawb=f"H{tracking_id:08d}",
        state_from="scanned",
        state_to="decided",
        destination="release",
        lane=1,
        policy_version="p1",
        data={"score": tracking_id / 100, "nested": {"ok": True}},
    )


@contextlib.asynccontextmanager
async def publishing(publisher: MqttPublisher) -> AsyncIterator[MqttPublisher]:
    """``publisher`` entered and running; stopped (its tail published) on leaving."""
    async with publisher:
        task = asyncio.create_task(publisher.run())
        try:
            yield publisher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(done: Callable[[], bool], what: str, more: Callable[[], str] = str) -> None:
    """Wait for ``done()`` (a plain attribute or a list's length, polled)."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not done():  # noqa: ASYNC110 (plain attributes, polled)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}{more()}") from None


# --- tests ----------------------------------------------------------------------------------


async def test_journalled_rows_reach_a_subscriber_in_order(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    host, prefix = shared
    command = JournalEntry(
        ts=1.0, kind=EntryKind.COMMAND, line="", tracking_id=0, hawb="H1", data={"user": "ops"}
    )
    async with (
        SqliteJournal(tmp_path / "journal.sqlite", SITE) as journal,
        Subscriber(event_filters(prefix), host) as subscriber,
    ):
        await journal.write([parcel(i) for i in range(1, 4)])  # before the publisher starts
        async with publishing(MqttPublisher(settings(host, prefix), SITE, journal.path)) as pub:
            await journal.write([parcel(4, "L2"), command])
            for i in range(5, 605):  # more than a batch, written one at a time
                await journal.write([parcel(i, kind=EntryKind.TRANSITION)])
            await subscriber.wait_for(lambda: len(subscriber.received) >= 605, "605 events")
            assert pub.link_state is LinkState.UP
        assert pub.watermark == 605

    assert subscriber.seqs() == list(range(1, 606))  # in journal order, each once
    topics = [m.topic.value for m in subscriber.received]
    assert topics[:5] == [
        f"{prefix}/{SITE}/L1/parcel/decision",
        f"{prefix}/{SITE}/L1/parcel/decision",
        f"{prefix}/{SITE}/L1/parcel/decision",
        f"{prefix}/{SITE}/L2/parcel/decision",
        f"{prefix}/{SITE}/~/command",  # a site-wide row
    ]
    assert set(topics[5:]) == {f"{prefix}/{SITE}/L1/parcel/transition"}
    assert not any(m.retain for m in subscriber.received)
    first = subscriber.payloads()[0]
    assert first["schema"] == EVENT_SCHEMA
    assert (first["site"], first["seq"], first["line"]) == (SITE, 1, "L1")
    assert first["hawb"] == "H00000001"
    assert first["data"] == {"score": 0.01, "nested": {"ok": True}}
    assert dt.datetime.fromisoformat(first["wall_time"]).tzinfo is not None
    assert len(first["hash"]) == 64
    saved = json.loads(progress_path_for(tmp_path / "journal.sqlite").read_text())
    assert [t["last_seq"] for t in saved["targets"].values()] == [605]


async def test_an_alarm_topic_is_retained_while_active_and_emptied_when_cleared(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    host, prefix = shared
    alarm_topic = f"{prefix}/{SITE}/L1/alarm/plc-link"
    odd_topic = f"{prefix}/{SITE}/L1/alarm/jam%2B%23%2Fbelt%203"  # no wildcard, one level
    async with (
        SqliteJournal(tmp_path / "journal.sqlite", SITE) as journal,
        Subscriber(event_filters(prefix), host) as events,
        publishing(MqttPublisher(settings(host, prefix), SITE, journal.path)) as pub,
    ):
        alarms = Alarms(journal, lambda: 5.0)
        alarms.alarm("L1/plc-link", "PLC link lost", active=True)
        alarms.alarm("L1/jam+#/belt 3", "jam", active=True)
        await alarms.drain()
        await until(lambda: pub.watermark == 2, "both alarms acknowledged by the broker")
        held = await retained(f"{prefix}/{SITE}/+/alarm/+", host)
        assert set(held) == {alarm_topic, odd_topic}
        raised = json.loads(held[alarm_topic])
        assert (raised["seq"], raised["state_to"]) == (1, "active")
        assert raised["data"] == {"source": "L1/plc-link", "message": "PLC link lost"}

        alarms.alarm("L1/plc-link", "PLC link restored", active=False)
        await alarms.drain()
        await until(lambda: pub.watermark == 3, "the clearing acknowledged")
        assert set(await retained(f"{prefix}/{SITE}/+/alarm/+", host)) == {odd_topic}

    await events.wait_for(lambda: len(events.received) == 3, "three alarm events")
    assert [m.topic.value for m in events.received] == [f"{prefix}/{SITE}/L1/alarm"] * 3
    assert [p["state_to"] for p in events.payloads()] == ["active", "active", "cleared"]


async def test_alarms_left_active_before_a_restart_are_cleared_once_their_rows_are_out(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """The alarm board starts empty at every start: an alarm the last run left active would
    otherwise stay retained for ever."""
    host, prefix = shared
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE) as journal:
        alarms = Alarms(journal, lambda: 5.0)
        async with publishing(MqttPublisher(settings(host, prefix), SITE, path)) as first:
            alarms.alarm("L1/plc-link", "PLC link lost", active=True)
            await alarms.drain()
            await until(lambda: first.watermark == 1, "the alarm published")
        alarms.alarm("L1/plc-heartbeat", "stalled", active=True)  # while no publisher runs
        await alarms.drain()
    assert set(await retained(f"{prefix}/#", host)) >= {f"{prefix}/{SITE}/L1/alarm/plc-link"}

    async with SqliteJournal(path, SITE) as journal:  # the restart: a new board, empty
        async with publishing(MqttPublisher(settings(host, prefix), SITE, path)) as second:
            await until(lambda: second.watermark == 2, "the earlier run's last row out")
            alarms = Alarms(journal, lambda: 9.0)
            alarms.alarm("L1/plc-link", "PLC link lost again", active=True)  # still lost
            await alarms.drain()
            await until(lambda: second.watermark == 3, "the new alarm out")
        held = await retained(f"{prefix}/{SITE}/+/alarm/+", host)
    assert set(held) == {f"{prefix}/{SITE}/L1/alarm/plc-link"}
    assert json.loads(held[f"{prefix}/{SITE}/L1/alarm/plc-link"])["seq"] == 3


async def test_a_broker_outage_loses_nothing_and_blocks_no_journal_write(
    tmp_path: Path, private_broker: PrivateBroker
) -> None:
    """Stop the broker with rows in flight and rows written meanwhile, start it again: every
    seq arrives at least once and, deduplicated by (site, seq), exactly once."""
    prefix = "outage"
    broker = private_broker
    sub = {"identifier": "cgtest-consumer", "clean_session": False}  # a durable consumer
    async with (
        SqliteJournal(tmp_path / "journal.sqlite", SITE) as journal,
        Subscriber(event_filters(prefix), "127.0.0.1", broker.port, **sub) as subscriber,
        publishing(
            MqttPublisher(
                settings("127.0.0.1", prefix, broker.port), SITE, journal.path, backoff_cap_s=1.0
            )
        ) as pub,
    ):
        for i in range(1, 201):
            await journal.write([parcel(i)])
        await subscriber.wait_for(lambda: len(subscriber.received) >= 50, "the first events")
        await broker.stop()  # mid-stream, as like as not with rows in flight
        await until(lambda: pub.link_state is LinkState.DOWN, "the publisher to see the outage")
        assert pub.last_error is not None
        loop = asyncio.get_running_loop()
        for i in range(201, 401):  # the journal takes writes as ever
            started = loop.time()
            await journal.write([parcel(i)])
            assert loop.time() - started < 1.0
        await asyncio.sleep(1.5)  # the publisher retries meanwhile
        assert pub.link_state is LinkState.DOWN
        await broker.start()
        await subscriber.wait_for(lambda: set(subscriber.seqs()) >= set(range(1, 401)), "all")
        await until(lambda: pub.watermark == 400, "the watermark at the end")
        await until(lambda: pub.link_state is LinkState.UP, "the link up again")

    seen = [(p["site"], p["seq"]) for p in subscriber.payloads()]
    assert sorted(set(seen)) == [(SITE, seq) for seq in range(1, 401)]  # none missing
    assert len(seen) >= 400  # a few may come twice (sent again after the outage)


async def test_a_restarted_publisher_resumes_from_its_watermark(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    host, prefix = shared
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE) as journal:
        async with publishing(MqttPublisher(settings(host, prefix), SITE, path)) as first:
            await journal.write([parcel(i) for i in range(1, 6)])
            await until(lambda: first.watermark == 5, "five rows published")
        await journal.write([parcel(i) for i in range(6, 9)])  # while none publishes
        async with (
            Subscriber(event_filters(prefix), host) as subscriber,
            publishing(MqttPublisher(settings(host, prefix), SITE, path)) as second,
        ):
            await subscriber.wait_for(lambda: len(subscriber.received) >= 3, "three events")
            await journal.write([parcel(9)])
            await subscriber.wait_for(lambda: len(subscriber.received) >= 4, "the fourth")
            await until(lambda: second.watermark == 9, "the watermark at 9")
    assert subscriber.seqs() == [6, 7, 8, 9]  # nothing before the watermark again


async def test_a_journal_made_anew_is_published_from_its_first_row(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """A watermark left by an earlier journal file must not skip the new journal's rows."""
    host, prefix = shared
    path = tmp_path / "journal.sqlite"
    async with SqliteJournal(path, SITE) as journal:
        await journal.write([parcel(i) for i in range(1, 6)])
        async with publishing(MqttPublisher(settings(host, prefix), SITE, path)) as first:
            await until(lambda: first.watermark == 5, "five rows published")
    await asyncio.to_thread(_remove_journal, path)
    async with (
        SqliteJournal(path, SITE) as journal,
        Subscriber(event_filters(prefix), host) as subscriber,
    ):
        await journal.write([parcel(i) for i in range(1, 8)])
        async with publishing(MqttPublisher(settings(host, prefix), SITE, path)):
            await subscriber.wait_for(lambda: len(subscriber.received) >= 7, "seven events")
    assert subscriber.seqs() == list(range(1, 8))


async def test_an_unreadable_progress_file_publishes_the_journal_again_and_skips_nothing(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    host, prefix = shared
    path = tmp_path / "journal.sqlite"
    progress = progress_path_for(path)
    progress.write_text('{"format": 1, "targets": {"mqtt://')  # cut short by a full disk
    async with (
        SqliteJournal(path, SITE) as journal,
        Subscriber(event_filters(prefix), host) as subscriber,
    ):
        await journal.write([parcel(i) for i in range(1, 4)])
        async with publishing(MqttPublisher(settings(host, prefix), SITE, path)) as pub:
            await subscriber.wait_for(lambda: len(subscriber.received) >= 3, "three events")
            await until(lambda: pub.watermark == 3, "the watermark at 3")
    assert subscriber.seqs() == [1, 2, 3]
    assert [t["last_seq"] for t in json.loads(progress.read_text())["targets"].values()] == [3]


def _remove_journal(path: Path) -> None:
    for leftover in path.parent.glob(f"{path.name}*"):
        leftover.unlink()


async def test_a_site_publishes_its_journal_lanes_and_kpis_and_shows_the_link(
    tmp_path: Path, shared: tuple[str, str]
) -> None:
    """The services wire the publisher: every journal row goes out (the rows journalled
    while stopping too), the lanes' states and the KPIs are retained, the status says when
    the site stops, and the site's links show the broker."""
    host, prefix = shared
    site = "DEMO-HUB"
    config = demo_config(tmp_path, speed=40)
    events = MqttEventsSettings(host=host, topic_prefix=prefix, kpi_every_s=0.5)
    config = config.model_copy(update={"events": events})
    root = f"{prefix}/{site}"
    states = [f"{root}/+/lane/+/state", f"{root}/kpi", f"{root}/status"]
    services = Services(config)
    links: list[LinkState] = []
    async with Subscriber(event_filters(prefix, site) + states, host) as subscriber:
        async with services:
            await services.run(
                duration_s=1.5, report=lambda view: links.append(view.links["event broker"])
            )
        held = await retained(f"{root}/#", host)

    assert LinkState.UP in links
    payloads = subscriber.payloads()
    local = read_entries(config.store.journal_path, site=site)
    assert len(local) > 100
    published = sorted({p["seq"] for p in payloads if p["schema"] == EVENT_SCHEMA})
    assert published == [row["seq"] for row in local]  # the rows journalled while stopping too
    lanes = {
        (p["line"], p["lane"]): (p["kind"], p["state"])
        for p in payloads
        if p["schema"] == LANE_SCHEMA
    }
    assert {key: kind for key, (kind, _) in lanes.items()} == {
        (line.id, lane.id): str(lane.kind) for line in config.lines for lane in line.lanes
    }
    assert {state for _, state in lanes.values()} <= {"available", "full", "blocked"}
    kpis = [p for p in payloads if p["schema"] == KPI_SCHEMA]
    assert kpis
    assert kpis[-1]["site"] == site
    assert "share_within_target" in kpis[-1]["kpis"]
    assert json.loads(held[f"{root}/status"]) == {
        "schema": "cargogate.status/1",
        "site": site,
        "online": False,
    }
    assert f"{root}/kpi" in held
    assert services.events is not None
    assert services.events.link_state is LinkState.DOWN  # closed


# --- TLS and passwords ----------------------------------------------------------------------


Issuer = tuple[str, ec.EllipticCurvePrivateKey]


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: Issuer | None, *, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA, a broker certificate for ``localhost`` it signed, and a password file."""
    folder = tmp_path / "pki"
    folder.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("cargogate test CA", ca_key, None, ca=True)
    server = _certificate("localhost", server_key, ("cargogate test CA", ca_key), ca=False)
    passwords = folder / "passwords"
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    subprocess.run([tool, "-c", "-b", str(passwords), "site", "s3cret"], check=True)
    return {
        "ca": _pem(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        "cert": _pem(folder / "server.pem", server.public_bytes(serialization.Encoding.PEM)),
        "key": _pem(
            folder / "server.key",
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        "passwords": passwords,
    }


@pytest.fixture
async def tls_broker(tmp_path: Path, tls_files: dict[str, Path]) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(
        tmp_path / "tls-broker",
        "".join(
            f"{key} {tls_files[name]}\n"
            for key, name in (("cafile", "ca"), ("certfile", "cert"), ("keyfile", "key"))
        )
        + f"allow_anonymous false\npassword_file {tls_files['passwords']}\n",
    )
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def test_events_go_over_tls_with_a_password(
    tmp_path: Path,
    tls_broker: PrivateBroker,
    tls_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CGTEST_MQTT_PASSWORD", "s3cret")
    given = {
        "tls": True,
        "ca_file": tls_files["ca"],
        "username": "site",
        "password_env": "CGTEST_MQTT_PASSWORD",
    }
    context = ssl.create_default_context(cafile=str(tls_files["ca"]))
    async with (
        SqliteJournal(tmp_path / "journal.sqlite", SITE) as journal,
        Subscriber(
            event_filters("tls"),
            "localhost",
            tls_broker.port,
            username="site",
            password="s3cret",
            tls_context=context,
        ) as subscriber,
        publishing(
            MqttPublisher(
                settings("localhost", "tls", tls_broker.port, **given),
                SITE,
                journal.path,
            )
        ) as pub,
    ):
        await journal.write([parcel(1), parcel(2)])
        await subscriber.wait_for(lambda: len(subscriber.received) == 2, "two events")
        assert pub.link_state is LinkState.UP
    assert subscriber.seqs() == [1, 2]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"password_env": "CGTEST_MQTT_WRONG"}, "not authori"),
        ({"ca_file": None}, "CERTIFICATE_VERIFY_FAILED"),  # the system's CAs do not know it
    ],
)
async def test_a_refused_connection_shows_on_the_link_and_publishes_nothing(
    tmp_path: Path,
    tls_broker: PrivateBroker,
    tls_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[str, Any],
    error: str,
) -> None:
    monkeypatch.setenv("CGTEST_MQTT_PASSWORD", "s3cret")
    monkeypatch.setenv("CGTEST_MQTT_WRONG", "guess")
    given = {
        "tls": True,
        "ca_file": tls_files["ca"],
        "username": "site",
        "password_env": "CGTEST_MQTT_PASSWORD",
        **changes,
    }
    async with SqliteJournal(tmp_path / "journal.sqlite", SITE) as journal:
        await journal.write([parcel(1)])
        publisher = MqttPublisher(
            settings("localhost", "tls", tls_broker.port, **given), SITE, journal.path
        )
        async with publishing(publisher):
            await until(lambda: publisher.link_state is LinkState.DOWN, "the refusal")
            assert error.lower() in (publisher.last_error or "").lower()
            assert publisher.watermark == 0
