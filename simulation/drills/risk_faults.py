"""Drills at the risk feeds: the feed server down mid-burst, and two feeds that disagree.

The feed is a real HTTP server on loopback (:class:`simulation.drills.feedserver.FeedServer`)
that publishes each parcel's risk result shortly before the parcel reaches the scanner, as an
upstream risk system does; the controller fetches it with its own HTTP feed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from controller.core.link import LinkState
from simulation.drills.feedserver import FeedServer
from simulation.drills.framework import Drill, DrillContext
from simulation.drills.outcome import AlarmSpec, Findings
from simulation.drills.plays import COUNT, burst_with, journal_rows, rig_for
from simulation.drills.rig import Rig

LEAD = 6
"""Parcels per line whose risk results are published ahead of their scan."""
OUTAGE_S = 2.0
OUTAGE_COUNT = 60
"""Parcels per line in risk-feed-outage: 6 s of traffic, 2 s of it after the outage."""
RECOVER_S = 0.6
"""Parcels decided this long after the feed's return must all have their result."""
CONFLICTS_PER_LINE = 6
POLL_S = 0.2


def _feed(url: str) -> dict[str, object]:
    return {"type": "http", "url": url, "poll_s": POLL_S, "timeout_s": 1.0}


async def _publisher(rig: Rig, feed: FeedServer) -> None:
    """Publish each line's next :data:`LEAD` results ahead of the belt, until cancelled."""
    published = dict.fromkeys(rig.plants, 0)
    while True:
        for line, plant in rig.plants.items():
            upto = plant.inducted + LEAD
            hawbs: Iterable[str] = rig.hawbs[line][published[line] : upto]
            feed.publish([rig.manifest[h] for h in hawbs if h in rig.manifest])
            published[line] = max(published[line], upto)
        await asyncio.sleep(0.05)


async def risk_feed_outage(ctx: DrillContext) -> Findings:
    """The risk feed's server is down for 2 s mid-burst: results published meanwhile arrive
    late, so those parcels are decided without one and inspected (RISK_MISSING), never
    released; the feed shows down, and results flow again once it is back."""
    async with FeedServer() as feed, rig_for(ctx) as rig:
        controller = rig.in_process(risk_feeds=[_feed(feed.url)])
        links: set[LinkState] = set()
        back = datetime.now(UTC)

        async def fault() -> None:
            nonlocal back
            await asyncio.sleep(1.0)
            await feed.stop()
            until = time.monotonic() + OUTAGE_S
            while time.monotonic() < until:
                if controller.services is not None:
                    links.add(controller.services.book.link_state)
                await asyncio.sleep(0.05)
            await feed.start()
            back = datetime.now(UTC)

        publisher = asyncio.create_task(_publisher(rig, feed))
        await controller.start()
        try:
            await rig.controller_beats()
            await burst_with(rig, fault, count=OUTAGE_COUNT)
            await rig.settle(controller.journal)
        finally:
            publisher.cancel()
            await controller.stop()
        found = rig.findings({"controller": controller.journal}, AlarmSpec())
        rows = journal_rows(rig, controller.journal)
        decided = [r for r in rows if r["kind"] == "decision"]
        blind = [r for r in decided if r["hawb"] in rig.manifest and not r["data"].get("risk")]
        if not blind:
            found.problems.append("no parcel was decided without its risk result: no outage seen")
        if LinkState.DOWN not in links:
            found.problems.append("the risk feed never showed down while its server was")
        later = [
            r
            for r in decided
            if r["hawb"] in rig.manifest and r["wall_time"] > back + timedelta(seconds=RECOVER_S)
        ]
        if not later or not all(r["data"].get("risk") for r in later):
            found.problems.append(
                f"results did not flow again within {RECOVER_S:g} s of the feed's return "
                f"({sum(bool(r['data'].get('risk')) for r in later)} of {len(later)} later "
                "parcels had theirs)"
            )
        found.notes.append(f"{len(blind)} parcels decided without their risk result")
        return found


async def risk_feed_conflict(ctx: DrillContext) -> Findings:
    """Mid-burst a second feed publishes RED for HAWBs the manifest has GREEN: each conflict
    is raised as an alarm naming both results (it stays raised until an operator acknowledges
    it), and the most severe result, RED, decides: none of those parcels is released."""
    async with FeedServer() as feed, rig_for(ctx) as rig:
        feeds = [
            {"type": "file", "path": str(rig.feeds), "poll_s": POLL_S},
            _feed(feed.url),
        ]
        controller = rig.in_process(risk_feeds=feeds)
        contested: list[str] = []

        async def fault() -> None:
            await asyncio.sleep(1.0)
            for line, plant in rig.plants.items():
                ahead = rig.hawbs[line][plant.inducted + 8 : COUNT]
                green = [h for h in ahead if rig.manifest.get(h, "").split(",")[1:2] == ["GREEN"]]
                contested.extend(green[:CONFLICTS_PER_LINE])
            feed.publish([f"{hawb},RED,0.95,apparel,DR002" for hawb in contested])

        await controller.start()
        try:
            await rig.controller_beats()
            await burst_with(rig, fault)
            await rig.settle(controller.journal, open_ok=("risk/conflict/*",))
        finally:
            await controller.stop()
        found = rig.findings(
            {"controller": controller.journal},
            AlarmSpec(
                expected={"risk/conflict/*": len(contested)},
                open_ok={"risk/conflict/*": "a conflict stays raised until acknowledged"},
            ),
        )
        rows = journal_rows(rig, controller.journal)
        for hawb in contested:
            channels = [
                (r["data"].get("risk") or {}).get("channel")
                for r in rows
                if r["kind"] == "decision" and r["hawb"] == hawb
            ]
            if channels != ["RED"]:
                found.problems.append(f"{hawb}: decided on {channels}, expected once on RED")
        found.notes.append(f"{len(contested)} contested HAWBs decided on RED")
        return found


DRILLS = (
    Drill(
        "risk-feed-outage",
        "the risk feed's HTTP server is down for 2 s mid-burst",
        risk_feed_outage,
    ),
    Drill(
        "risk-feed-conflict",
        "a second feed publishes RED for HAWBs the manifest has GREEN, mid-burst",
        risk_feed_conflict,
    ),
)
