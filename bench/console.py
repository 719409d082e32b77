"""Console benchmark: does serving the web console cost the decision path?

Runs the real site (:class:`controller.app.services.Services`: controller, durable SQLite
journal, alarms, and the console when enabled) with in-process sorters and an instant X-ray
port, carrying ``--lines`` lines at ``--per-line-h`` parcels/h each (Poisson arrivals, as
``bench/decision_path.py`` does) for ``--seconds``, twice:

* idle: the console is not served;
* loaded: the console served by uvicorn on the controller's loop, ``--clients`` browsers on
  the live stream (SSE, ``GET /api/v1/live``) and one poller looping over
  ``GET /api/v1/overview``, ``/kpis`` and ``/alarms``. The clients run in a separate process
  (one asyncio loop with httpx, no threads), so their work does not share the controller's
  CPU.

Measured in the window only (start-up, log-in, connecting the clients and teardown are
outside it): scan→reply latency on the controller side, the controller loop's lag (a task
that sleeps 10 ms and records the overshoot), the poller's request latency, and the live
updates' lag from the overview's ``taken_at`` to receipt by a client (both wall clocks of
this machine). Targets (reported, not asserted): loaded decision p99 within 1.2× of idle
and ≤ 20 ms, API p99 ≤ 50 ms, live lag p99 ≤ 500 ms, loop lag p99 ≤ 5 ms.

Prints one JSON object (``--out FILE`` writes it too); progress goes to stderr. Example:
``python bench/console.py --seconds 60 --clients 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from controller.app.parts import BuildContext
from controller.app.registry import Adapter, Kind, Plugin, Registry
from controller.app.services import Services
from controller.app.site import SiteConfig, parse_config
from controller.console.passwords import hash_password
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.settings import Strict
from controller.core.users import Role, User
from controller.store.users import SqlUserDirectory
from plc_adapters.inprocess import InProcessSorter

USER, PASSWORD = "bench-viewer", "bench-password-1"
POLLED = ("/api/v1/overview", "/api/v1/kpis", "/api/v1/alarms")
SCORES = {
    "firearm": 0.01,
    "blade": 0.01,
    "lithium_battery": 0.01,
    "liquid_container": 0.01,
    "narcotics_organic": 0.01,
}
WARMUP_PER_LINE = 20
"""Parcels per line sent before the window (first-call costs stay out of the numbers)."""
LINE_OFFSET = 10**6
"""Tracking ids of line i start at i × this."""


def log(message: str) -> None:
    print(f"[console bench] {message}", file=sys.stderr, flush=True)


# --- the site's adapters: in-process sorters and an instant X-ray port ----------------------


class BenchSorter(Strict):
    """An in-process sorter the benchmark pushes telegrams into."""

    type: Literal["bench"]


class BenchXray(Strict):
    """An X-ray port that answers at once with low scores."""

    type: Literal["bench"]


class InstantXray:
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, SCORES, "bench")


def bench_sorter(settings: BenchSorter, ctx: BuildContext) -> InProcessSorter:
    return InProcessSorter(ctx.line)


def bench_xray(settings: BenchXray, ctx: object) -> InstantXray:
    return InstantXray()


def bench_registry() -> Registry:
    """Every installed plugin plus this benchmark's sorter and X-ray port."""
    registry = Registry.from_entry_points()
    registry.add(
        Plugin(
            adapters=(
                Adapter(Kind.SORTER, "bench", BenchSorter, f"{__name__}:bench_sorter"),
                Adapter(Kind.XRAY, "bench", BenchXray, f"{__name__}:bench_xray"),
            )
        ),
        "bench/console.py",
    )
    return registry


def site_config(
    registry: Registry, tmp: Path, lines: int, console: bool, args: argparse.Namespace
) -> SiteConfig:
    return parse_config(
        {
            "site": {"id": "BENCH"},
            "lines": [
                {
                    "id": f"L{i + 1}",
                    "sorter": {"type": "bench"},
                    "lanes": [
                        {"id": 1, "kind": "release"},
                        {"id": 2, "kind": "inspection"},
                        {"id": 9, "kind": "exception"},
                    ],
                }
                for i in range(lines)
            ],
            "store": {"journal_path": str(tmp / "journal.sqlite")},
            "commands": {"enabled": False},
            "console": {
                "enabled": console,
                "port": 0,
                "live_every_s": args.live_every_s,
                "live_clients": max(200, args.clients + 10),
            },
            "xray": {"type": "bench"},
        },
        source="bench/console.py",
        registry=registry,
    )


def hawb(line_index: int, n: int) -> str:
    return f"H{line_index * LINE_OFFSET + n}"


def load_risk(services: Services, lines: int, per_line: int) -> None:
    rng = random.Random(1)
    channels = [RiskChannel.GREEN] * 90 + [RiskChannel.YELLOW] * 7 + [RiskChannel.RED] * 3
    services.book.add(
        RiskResult(hawb(i, n), rng.choice(channels), rng.random() * 0.4)
        for i in range(lines)
        for n in range(1, per_line + 1)
    )


# --- the controller side --------------------------------------------------------------------


class Rig:
    """Scans pushed into the site's in-process sorters; each reply is confirmed and timed."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.clock = services.clock
        self.sorters: dict[str, InProcessSorter] = {}
        for line, sorter in services.parts.sorters.items():
            assert isinstance(sorter, InProcessSorter)
            sorter.on_reply = self._on_reply
            self.sorters[line] = sorter
        self.sent: dict[tuple[str, int], float] = {}
        self.latencies: list[float] = []
        self.recording = False
        self.scanned = 0
        self.closed = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def _on_reply(self, reply: DestinationReply) -> None:
        sent = self.sent.pop((reply.line, reply.tracking_id))
        if self.recording:
            self.latencies.append(time.perf_counter() - sent)
        self.sorters[reply.line].confirm(reply.tracking_id, reply.lane, DivertStatus.DIVERTED)
        self.closed += 1
        if not self.sent:
            self.idle.set()

    def scan(self, line: str, tracking_id: int, hawb: str) -> None:
        self.idle.clear()
        self.scanned += 1
        self.sent[(line, tracking_id)] = time.perf_counter()
        self.sorters[line].request(tracking_id, hawb, self.clock.now())

    async def drain(self, limit_s: float = 30.0) -> None:
        await asyncio.wait_for(self.idle.wait(), limit_s)

    def close(self) -> None:
        for sorter in self.sorters.values():
            sorter.close()


async def feed(rig: Rig, lines: list[str], per_line_h: float, seconds: float, first: int) -> int:
    """Poisson arrivals on every line for ``seconds``; tracking ids from ``first`` on."""
    rate = per_line_h / 3600
    rng = random.Random(2 + first)

    async def one(index: int, line: str) -> int:
        sent, next_at = 0, time.perf_counter()
        end = next_at + seconds
        while True:
            next_at += rng.expovariate(rate)
            if next_at >= end:
                return sent
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            n = first + sent
            rig.scan(line, index * LINE_OFFSET + n, hawb(index, n))
            sent += 1

    return sum(await asyncio.gather(*(one(i, line) for i, line in enumerate(lines))))


async def loop_lag(samples: list[float], stop: asyncio.Event, tick_s: float = 0.01) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(tick_s)
        samples.append(time.perf_counter() - start - tick_s)


@dataclass
class Window:
    """What one run measured inside its window."""

    parcels: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    loop_lags: list[float] = field(default_factory=list)
    deadline_misses: int = 0
    journal_rows: int = 0
    live_clients: list[int] = field(default_factory=list)
    """The broadcaster's subscriber count, sampled every 0.5 s."""
    live_sent: int = 0
    live_dropped: int = 0
    cpu_s: float = 0.0
    """CPU seconds the controller's process used in the window (every thread)."""
    machine_busy_s: float = 0.0
    """CPU seconds the whole machine was busy in the window (all processes, /proc/stat)."""
    load_avg: tuple[float, float] = (0.0, 0.0)
    """The 1-minute load average at the window's start and end."""
    clients: dict[str, Any] = field(default_factory=dict)
    """What the clients' process measured."""


async def run_site(args: argparse.Namespace, registry: Registry, console: bool) -> Window:
    """One run: start the site, warm up, connect the clients (loaded), measure, tear down."""
    name = "loaded" if console else "idle"
    window = Window()
    with tempfile.TemporaryDirectory(prefix="cargogate-console-bench-") as tmp:
        config = site_config(registry, Path(tmp), args.lines, console, args)
        if console:
            users = SqlUserDirectory(config.store.journal_path)
            users.save_sync(User(USER, Role.VIEWER, hash_password(PASSWORD)))
            users.close()
        services = Services(config, registry)
        per_line = int(args.per_line_h / 3600 * args.seconds * 2) + WARMUP_PER_LINE + 100
        load_risk(services, args.lines, per_line)
        lines = [line.id for line in config.lines]
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(services)
            rig = Rig(services)
            serving = asyncio.create_task(services.run(stop=asyncio.Event()), name="site")
            for n in range(1, WARMUP_PER_LINE + 1):  # warm-up, outside the window
                for i, line in enumerate(lines):
                    rig.scan(line, i * LINE_OFFSET + n, hawb(i, n))
                await asyncio.sleep(0.005)
            await rig.drain()
            pipe = broadcaster = None
            if console:
                assert services.console is not None
                broadcaster = services.console.app.state.ctx.broadcaster
                pipe = await stack.enter_async_context(clients_process(services.console.url, args))
                pipe.send("go")
            sent0 = broadcaster.sent if broadcaster else 0
            dropped0 = broadcaster.dropped if broadcaster else 0
            misses0 = services.controller.kpis.deadline_misses
            rows0 = services.journal.rows_written
            lag_stop = asyncio.Event()
            lagging = asyncio.create_task(loop_lag(window.loop_lags, lag_stop))

            async def sample_clients() -> None:
                while broadcaster is not None:
                    window.live_clients.append(broadcaster.clients)
                    await asyncio.sleep(0.5)

            sampling = asyncio.create_task(sample_clients())
            log(f"{name}: measuring for {args.seconds:g} s")
            profiler = start_profiler(args) if console else None
            start = time.perf_counter()
            cpu0, busy0, load0 = _cpu_s(), _machine_busy_s(), os.getloadavg()[0]
            rig.recording = True
            window.parcels = await feed(
                rig, lines, args.per_line_h, args.seconds, WARMUP_PER_LINE + 1
            )
            await rig.drain()
            rig.recording = False
            window.seconds = time.perf_counter() - start
            window.cpu_s = _cpu_s() - cpu0
            window.machine_busy_s = _machine_busy_s() - busy0
            window.load_avg = (round(load0, 2), round(os.getloadavg()[0], 2))
            lag_stop.set()
            await lagging
            if profiler is not None:
                profiler.stop()
                args.profile.write_text(profiler.output_text(unicode=True, show_all=True))
                profiler.last_session.save(str(args.profile.with_suffix(".pyisession")))
                log(f"profile of the loaded window written to {args.profile}")
            sampling.cancel()
            if pipe is not None:
                pipe.send("stop")
                window.clients = await receive(pipe, 60)
            window.latencies = rig.latencies
            window.deadline_misses = services.controller.kpis.deadline_misses - misses0
            window.journal_rows = services.journal.rows_written - rows0
            if broadcaster is not None:
                window.live_sent = broadcaster.sent - sent0
                window.live_dropped = broadcaster.dropped - dropped0
            rig.close()
            await asyncio.wait_for(serving, 30)
        log(f"{name}: {window.parcels} parcels in the window; site stopped")
    return window


def start_profiler(args: argparse.Namespace) -> Any:
    """pyinstrument on the controller's thread for the loaded window (``--profile``)."""
    if args.profile is None:
        return None
    from pyinstrument import Profiler  # optional: only this option needs it

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


async def receive(pipe: Connection, limit_s: float) -> Any:
    """The next message on ``pipe``, awaited without blocking the loop (no thread)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(pipe.fileno(), ready.set)
    try:
        async with asyncio.timeout(limit_s):
            while not pipe.poll():
                await ready.wait()
                ready.clear()
    finally:
        loop.remove_reader(pipe.fileno())
    return pipe.recv()


@contextlib.asynccontextmanager
async def clients_process(url: str, args: argparse.Namespace) -> AsyncIterator[Connection]:
    """The clients' process: spawned, logged in and connected on enter; joined on exit."""
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    process = context.Process(
        target=clients_main,
        args=(there, url, args.clients, args.poll_pause_s),
        name="console bench clients",
        daemon=True,
    )
    process.start()
    there.close()
    try:
        ready = await receive(here, 120)
        if isinstance(ready, str):
            raise RuntimeError(f"the clients' process failed: {ready}")
        log(f"clients ready: {ready['connected']} live streams connected")
        yield here
    except BaseException:
        process.terminate()  # the run failed: the clients would wait for "stop" in vain
        raise
    finally:
        for _ in range(300):
            if not process.is_alive():
                break
            await asyncio.sleep(0.1)
        if process.is_alive():
            process.terminate()
            await asyncio.sleep(0.5)
        here.close()


# --- the clients' process -------------------------------------------------------------------

TAKEN_AT = re.compile(rb'"taken_at":"([^"]+)"')


@dataclass
class ClientStats:
    recording: bool = False
    lags: list[float] = field(default_factory=list)
    received: int = 0
    api: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in POLLED})
    api_errors: int = 0
    error_kinds: list[str] = field(default_factory=list)
    open_streams: int = 0
    connected_once: set[int] = field(default_factory=set)
    min_open: int | None = None
    ended: int = 0
    """Streams the server ended (a client that fell behind is dropped this way)."""
    errors: int = 0
    refused: int = 0

    def note_open(self, delta: int) -> None:
        self.open_streams += delta
        if self.recording:
            self.min_open = (
                self.open_streams
                if self.min_open is None
                else min(self.min_open, self.open_streams)
            )


def clients_main(pipe: Connection, url: str, clients: int, pause_s: float) -> None:
    try:
        asyncio.run(_clients(pipe, url, clients, pause_s))
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send(f"{type(exc).__name__}: {exc}")
        raise


async def _clients(pipe: Connection, url: str, clients: int, pause_s: float) -> None:
    import httpx  # only the clients' process needs it

    stats = ClientStats()
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        answer = await http.post("/api/v1/session", json={"user": USER, "password": PASSWORD})
        answer.raise_for_status()
        first = [asyncio.Event() for _ in range(clients)]
        tasks = [
            asyncio.create_task(_stream(http, i, stats, first[i]), name=f"live {i}")
            for i in range(clients)
        ]
        async with asyncio.timeout(60):
            await asyncio.gather(*(event.wait() for event in first))
        pipe.send({"connected": stats.open_streams})
        if await receive(pipe, 600) != "go":
            return
        stats.recording = True
        cpu0 = _cpu_s()
        stats.min_open = stats.open_streams
        async with httpx.AsyncClient(base_url=url, cookies=http.cookies, timeout=30) as poll:
            tasks.append(asyncio.create_task(_poll(poll, stats, pause_s), name="poller"))
            await receive(pipe, 3600)  # "stop"
            stats.recording = False
            cpu_s = _cpu_s() - cpu0
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    api = [x for values in stats.api.values() for x in values]
    pipe.send(
        {
            "lags": stats.lags,
            "received": stats.received,
            "api": api,
            "api_by_path": {p: _p(v, 0.99) for p, v in stats.api.items()},
            "api_requests": len(api),
            "api_errors": stats.api_errors,
            "api_error_kinds": sorted(set(stats.error_kinds))[:5],
            "min_open": stats.min_open or 0,
            "ever_connected": len(stats.connected_once),
            "ended": stats.ended,
            "errors": stats.errors,
            "refused": stats.refused,
            "cpu_s": cpu_s,
        }
    )


async def _stream(http: Any, index: int, stats: ClientStats, first: asyncio.Event) -> None:
    """One browser on the live stream; reconnects as EventSource does when it is dropped."""
    import httpx

    while True:
        try:
            async with http.stream("GET", "/api/v1/live") as answer:
                if answer.status_code != 200:
                    stats.refused += stats.recording
                    await asyncio.sleep(2.0)
                    continue
                stats.note_open(+1)
                stats.connected_once.add(index)
                fresh = True  # the first view is the latest one, not a new tick: no lag
                try:
                    async for line in answer.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        now = time.time()
                        first.set()
                        if fresh:
                            fresh = False
                            continue
                        found = TAKEN_AT.search(line.encode())
                        if stats.recording and found:
                            taken = datetime.fromisoformat(found.group(1).decode()).timestamp()
                            stats.lags.append(now - taken)
                            stats.received += 1
                finally:
                    stats.note_open(-1)
                stats.ended += stats.recording
        except httpx.HTTPError:
            stats.errors += stats.recording
            await asyncio.sleep(2.0)


async def _poll(http: Any, stats: ClientStats, pause_s: float) -> None:
    """One page polling the floor: overview, KPIs, alarms, again and again."""
    while True:
        for path in POLLED:
            start = time.perf_counter()
            try:
                answer = await http.get(path)
                ok = answer.status_code == 200
            except Exception as exc:
                ok = False
                if stats.recording:
                    stats.error_kinds.append(f"{path}: {type(exc).__name__}: {exc}"[:200])
            else:
                if not ok and stats.recording:
                    stats.error_kinds.append(f"{path}: HTTP {answer.status_code}")
            took = time.perf_counter() - start
            if stats.recording:
                stats.api[path].append(took)
                stats.api_errors += not ok
        await asyncio.sleep(pause_s)


# --- the report -----------------------------------------------------------------------------


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def report(args: argparse.Namespace, idle: Window, loaded: Window) -> dict[str, object]:
    clients = loaded.clients
    idle_p99, loaded_p99 = _p(idle.latencies, 0.99), _p(loaded.latencies, 0.99)
    api_p99 = _p(clients.get("api", []), 0.99)
    live_p99 = _p(clients.get("lags", []), 0.99)
    lag_p99 = _p(loaded.loop_lags, 0.99)
    ratio = None if not idle_p99 or loaded_p99 is None else round(loaded_p99 / idle_p99, 3)
    return {
        "lines": args.lines,
        "per_line_h": args.per_line_h,
        "seconds": args.seconds,
        "clients": args.clients,
        "live_every_s": args.live_every_s,
        "poll_pause_s": args.poll_pause_s,
        "parcels": idle.parcels + loaded.parcels,
        "parcels_idle": idle.parcels,
        "parcels_console": loaded.parcels,
        "decisions": len(idle.latencies) + len(loaded.latencies),
        "deadline_misses": idle.deadline_misses + loaded.deadline_misses,
        "decision_p50_ms_idle": _p(idle.latencies, 0.5),
        "decision_p99_ms_idle": idle_p99,
        "decision_max_ms_idle": _p(idle.latencies, 1.0),
        "decision_p50_ms_console": _p(loaded.latencies, 0.5),
        "decision_p99_ms_console": loaded_p99,
        "decision_max_ms_console": _p(loaded.latencies, 1.0),
        "decision_p99_ratio": ratio,
        "api_requests": clients.get("api_requests", 0),
        "api_errors": clients.get("api_errors", 0),
        "api_error_kinds": clients.get("api_error_kinds", []),
        "api_p50_ms": _p(clients.get("api", []), 0.5),
        "api_p99_ms": api_p99,
        "api_p99_ms_by_path": clients.get("api_by_path", {}),
        "ws_clients": min(loaded.live_clients, default=0),
        "ws_clients_connected_min": clients.get("min_open", 0),
        "live_updates_sent": loaded.live_sent,
        "live_updates_received": clients.get("received", 0),
        "ws_update_lag_p50_ms": _p(clients.get("lags", []), 0.5),
        "ws_update_lag_p99_ms": live_p99,
        "clients_dropped": loaded.live_dropped,
        "client_streams_ended": clients.get("ended", 0),
        "client_errors": clients.get("errors", 0) + clients.get("refused", 0),
        "loop_lag_p99_ms_idle": _p(idle.loop_lags, 0.99),
        "loop_lag_p99_ms": lag_p99,
        "loop_lag_max_ms": _p(loaded.loop_lags, 1.0),
        "targets_met": {
            "decision_p99_within_1.2x_idle": ratio is not None and ratio <= 1.2,
            "decision_p99_console_le_20ms": loaded_p99 is not None and loaded_p99 <= 20,
            "api_p99_le_50ms": api_p99 is not None and api_p99 <= 50,
            "ws_update_lag_p99_le_500ms": live_p99 is not None and live_p99 <= 500,
            "loop_lag_p99_le_5ms": lag_p99 is not None and lag_p99 <= 5,
        },
        "load_avg_1m_at_start": args.load_at_start,
        "cpu_idle": _others(idle),
        "cpu_console": _others(loaded, clients.get("cpu_s", 0.0)),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
    }


def _cpu_s() -> float:
    """CPU seconds this process has used (every thread)."""
    times = os.times()
    return times.user + times.system


def _machine_busy_s() -> float:
    """CPU seconds the machine has been busy since boot (all CPUs; 0 where unknown)."""
    with contextlib.suppress(OSError, ValueError):
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _others(window: Window, clients_cpu_s: float = 0.0) -> dict[str, float]:
    """Where the window's CPU went: the controller, the clients, everything else (noise)."""
    seconds = window.seconds or 1.0
    others = window.machine_busy_s - window.cpu_s - clients_cpu_s
    return {
        "controller_cpu_pct": round(100 * window.cpu_s / seconds, 1),
        "clients_cpu_pct": round(100 * clients_cpu_s / seconds, 1),
        "other_processes_cpu_pct": round(100 * max(0.0, others) / seconds, 1),
        "load_avg_1m_start": window.load_avg[0],
        "load_avg_1m_end": window.load_avg[1],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


async def main(args: argparse.Namespace) -> dict[str, object]:
    registry = bench_registry()
    idle = await run_site(args, registry, console=False)
    loaded = await run_site(args, registry, console=True)
    return report(args, idle, loaded)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=4, help="sorter lines")
    parser.add_argument("--per-line-h", type=float, default=20000, help="load per line, parcels/h")
    parser.add_argument("--seconds", type=float, default=60, help="measured window of each run")
    parser.add_argument("--clients", type=int, default=50, help="browsers on the live stream")
    parser.add_argument(
        "--live-every-s", type=float, default=1.0, help="live stream tick (site default 1 s)"
    )
    parser.add_argument(
        "--poll-pause-s", type=float, default=0.0, help="poller's pause between rounds"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write a pyinstrument profile of the controller's loop in the loaded window here",
    )
    args = parser.parse_args(argv)
    args.load_at_start = round(os.getloadavg()[0], 2)
    return args


if __name__ == "__main__":
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    text = json.dumps(result)
    print(text)
    if arguments.out is not None:
        arguments.out.write_text(text + "\n")
