"""Decision-path benchmark: parcels/s through the core and scan→reply latency.

Runs the real controller core with in-process ports (in-process sorter, risk results in
memory, an instant X-ray port) and the durable SQLite journal, on the monotonic clock:

* ``parcels_per_s``: destination requests pushed as fast as the core takes them, each reply
  confirmed at once, until every parcel is closed (journal on, fsync on every group commit);
* ``core_only_parcels_per_s``: the same with a journal that keeps nothing (the core alone);
* ``p50_ms`` / ``p99_ms``: scan→reply latency while carrying ``--lines`` lines at
  ``--per-line-h`` parcels/h each (Poisson arrivals), journal on.

Prints one JSON object. Example: ``python bench/decision_path.py --parcels 20000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from controller.app.site import SiteConfig, parse_config
from controller.core.clock import MonotonicClock
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    JournalEntry,
    RiskChannel,
    RiskResult,
    XrayResult,
    XrayStatus,
)
from controller.core.ports import Journal
from controller.lines import Controller
from controller.risk.book import RiskBook
from controller.store.journal import SqliteJournal
from plc_adapters.inprocess import InProcessSorter

SCORES = {
    "firearm": 0.01,
    "blade": 0.01,
    "lithium_battery": 0.01,
    "liquid_container": 0.01,
    "narcotics_organic": 0.01,
}


class InstantXray:
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, SCORES, "bench")


class NullJournal:
    async def write(self, entries: list[JournalEntry]) -> None:
        return None


def site_config(lines: int) -> SiteConfig:
    return parse_config(
        {
            "site": {"id": "BENCH"},
            "lines": [
                {
                    "id": f"L{i + 1}",
                    "lanes": [
                        {"id": 1, "kind": "release"},
                        {"id": 2, "kind": "inspection"},
                        {"id": 9, "kind": "exception"},
                    ],
                }
                for i in range(lines)
            ],
        }
    )


def risk_book(n: int) -> RiskBook:
    book = RiskBook()
    rng = random.Random(1)
    channels = [RiskChannel.GREEN] * 90 + [RiskChannel.YELLOW] * 7 + [RiskChannel.RED] * 3
    book.add(RiskResult(f"H{i}", rng.choice(channels), rng.random() * 0.4) for i in range(n))
    return book


class Rig:
    """Controller + in-process sorters; replies are confirmed at once and timed."""

    def __init__(self, config: SiteConfig, journal: Journal, book: RiskBook) -> None:
        self.clock = MonotonicClock()
        self.sent: dict[tuple[str, int], float] = {}
        self.latencies: list[float] = []
        self.closed = 0
        self.done = asyncio.Event()
        self.expected = 0
        self.slots: asyncio.Semaphore | None = None
        self.sorters = {
            line.id: InProcessSorter(line.id, on_reply=self._on_reply) for line in config.lines
        }
        self.controller = Controller(config, self.sorters, book, InstantXray(), journal, self.clock)

    def _on_reply(self, reply: DestinationReply) -> None:
        sent = self.sent.pop((reply.line, reply.tracking_id))
        self.latencies.append(time.perf_counter() - sent)
        self.sorters[reply.line].confirm(reply.tracking_id, reply.lane, DivertStatus.DIVERTED)
        self.closed += 1
        if self.slots is not None:
            self.slots.release()
        if self.closed >= self.expected:
            self.done.set()

    def scan(self, line: str, tracking_id: int, hawb: str) -> None:
        self.sent[(line, tracking_id)] = time.perf_counter()
        self.sorters[line].request(tracking_id, hawb, self.clock.now())

    def close(self) -> None:
        for sorter in self.sorters.values():
            sorter.close()


async def throughput(journal: Journal, parcels: int, lines: int, window: int = 1000) -> float:
    """Parcels/s with at most ``window`` parcels awaiting their reply, as a PLC stream at the
    core's own pace would have: far fewer than a deadline's worth, so none is late."""
    config = site_config(lines)
    rig = Rig(config, journal, risk_book(parcels))
    rig.expected = parcels
    task = asyncio.create_task(rig.controller.run())
    start = time.perf_counter()
    rig.slots = asyncio.Semaphore(window)
    for i in range(parcels):
        await rig.slots.acquire()
        rig.scan(config.lines[i % lines].id, i + 1, f"H{i}")
    await rig.done.wait()
    elapsed = time.perf_counter() - start
    rig.close()
    await task
    assert rig.controller.kpis.deadline_misses == 0, "a parcel missed its deadline"
    return parcels / elapsed


async def latency_at_load(
    journal: Journal, lines: int, per_line_h: float, seconds: float
) -> list[float]:
    config = site_config(lines)
    rate = per_line_h / 3600
    count = int(rate * seconds * lines * 1.5) + 10
    rig = Rig(config, journal, risk_book(count))
    task = asyncio.create_task(rig.controller.run())
    rng = random.Random(2)

    async def feed(line: str, offset: int) -> int:
        sent, next_at, end = 0, time.perf_counter(), time.perf_counter() + seconds
        while next_at < end:
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            rig.scan(line, offset + sent, f"H{offset + sent}")
            sent += 1
        return sent

    totals = await asyncio.gather(
        *(feed(line.id, i * 10**6) for i, line in enumerate(config.lines))
    )
    rig.expected = sum(totals)
    if rig.closed < rig.expected:
        await asyncio.wait_for(rig.done.wait(), 30)
    rig.close()
    await task
    return rig.latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        async with SqliteJournal(Path(tmp) / "a.sqlite", "BENCH") as journal:
            with_journal = await throughput(journal, args.parcels, args.lines)
            commits = journal.commits
            rows = journal.rows_written
        core_only = await throughput(NullJournal(), args.parcels, args.lines)
        async with SqliteJournal(Path(tmp) / "b.sqlite", "BENCH") as journal:
            latencies = await latency_at_load(journal, args.lines, args.per_line_h, args.seconds)
    ms = [x * 1000 for x in latencies]
    return {
        "parcels": args.parcels,
        "lines": args.lines,
        "parcels_per_s": round(with_journal, 1),
        "core_only_parcels_per_s": round(core_only, 1),
        "journal_rows_per_commit": round(rows / max(commits, 1), 1),
        "load_parcels_per_h": args.lines * args.per_line_h,
        "load_samples": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "max_ms": round(max(ms), 3),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=20000, help="parcels per throughput run")
    parser.add_argument("--lines", type=int, default=4, help="sorter lines")
    parser.add_argument("--per-line-h", type=float, default=20000, help="load per line, parcels/h")
    parser.add_argument("--seconds", type=float, default=30, help="duration of the latency run")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
