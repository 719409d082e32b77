"""A real controller on a rig's PLC: the line controller over the wire adapter, a SQLite
journal file, and start-up recovery from it, as ``cargogate run`` wires them.

Risk and X-ray answer at once (every parcel green and clean: it is released), so what the
tests see is the sorter contract and the journal, not the decision policy.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.alarms import Alarms
from controller.app.site import SiteConfig
from controller.core.clock import Clock
from controller.core.domain import RiskChannel, RiskResult, XrayResult, XrayStatus
from controller.core.ports import Journal, SorterPort
from controller.lines import Controller
from controller.recovery import hold_on_clock, recover
from controller.store.journal import SqliteJournal
from plc_adapters.inprocess import InProcessSorter
from plc_adapters.wire_sorter import WireSorter
from tests.support import CLEAN, site

SITE = "TEST"


def site_for(line_id: str) -> SiteConfig:
    """A site whose one line matches :func:`tests.plc.rigs.line` (lanes 1 release,
    2 inspection, 9 exception; a 5.5 s decision window)."""
    return site(
        lines=[
            {
                "id": line_id,
                "belt": {"speed_m_s": 2.0, "scan_to_divert_m": 12, "plc_margin_s": 0.5},
                "lanes": [
                    {"id": 1, "kind": "release"},
                    {"id": 2, "kind": "inspection"},
                    {"id": 9, "kind": "exception"},
                ],
            }
        ]
    )


class AllGreen:
    async def lookup(self, hawb: str) -> RiskResult | None:
        return RiskResult(hawb, RiskChannel.GREEN, 0.05, "books")


class InstantXray:
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, CLEAN, "test-model")


@dataclass
class Running:
    controller: Controller
    journal: SqliteJournal
    alarms: Alarms


@asynccontextmanager
async def controlled(
    sorter: SorterPort,
    path: Path,
    clock: Clock,
    *,
    journal: Journal | None = None,
) -> AsyncIterator[Running]:
    """Run a controller for ``sorter``'s line on the journal file ``path``, after taking
    back what that journal shows open; ``journal`` (wrapping the file's) if given is what
    the controller writes through. Leaving stops the controller and closes the journal; the
    sorter is the caller's to close (closing it ends the controller's telegram stream)."""
    async with SqliteJournal(path, SITE, group_commit_ms=1.0) as sqlite:
        alarms = Alarms(sqlite, clock.now)
        controller = Controller(
            site_for(sorter.line),
            {sorter.line: sorter},
            AllGreen(),
            InstantXray(),
            journal or sqlite,
            clock,
            alarms=alarms,
        )
        wall_now, now = datetime.now(UTC), clock.now()
        recovered = await asyncio.to_thread(recover, path, SITE, now, wall_now, 24.0)
        holds = [hold_on_clock(h, now, wall_now) for h in recovered.holds]
        controller.restore(recovered.parcels, holds)
        task = asyncio.create_task(controller.run())
        try:
            yield Running(controller, sqlite, alarms)
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await alarms.aclose()


async def end_stream(sorter: InProcessSorter | WireSorter) -> None:
    """End the sorter's telegram stream, as a shutdown does: the controller drains and stops
    (a wire adapter writes its last acknowledgement and releases the PLC)."""
    if isinstance(sorter, InProcessSorter):
        sorter.close()
    else:
        await sorter.aclose()


def rows(path: Path) -> list[dict[str, Any]]:
    """Every journal row of the file, in order, with ``reasons`` and ``data`` decoded."""
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        found = db.execute(
            "SELECT seq, kind, tracking_id, hawb, state_from, state_to, lane, reasons, data "
            "FROM journal ORDER BY seq"
        ).fetchall()
    return [
        {**dict(row), "reasons": json.loads(row["reasons"]), "data": json.loads(row["data"])}
        for row in found
    ]
