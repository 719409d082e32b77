"""Drills at the store: the central database refused and blackholed (through a fault proxy),
and a full disk under the local journal.

The central-database drills need a PostgreSQL server (``--central-url`` or
``$CARGOGATE_TEST_PG_URL``): a scratch database is made there for the drill and dropped after
it. Without one they SKIP, never PASS.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from controller.core.link import LinkState
from controller.store.read import read_entries
from simulation.drills.controllers import InProcessController
from simulation.drills.disk import FullDisk
from simulation.drills.framework import Drill, DrillContext, SkipDrillError
from simulation.drills.outcome import AlarmSpec, Findings
from simulation.drills.plays import burst_with, per_line, rig_for
from simulation.drills.proxy import FaultProxy, Mode
from simulation.drills.rig import Rig

OUTAGE_S = 2.5
"""How long the central database is away, and the disk full."""
CATCH_UP_LIMIT_S = 20.0
"""How long the forwarder may take to ship the backlog once the central database is back."""
_COMPARED = ("kind", "line", "tracking_id", "hawb", "state_from", "state_to", "lane")


@contextlib.contextmanager
def scratch_database(url: str | None) -> Iterator[str]:
    """A fresh database on the server ``url`` names, dropped afterwards; SKIP without one."""
    if not url:
        raise SkipDrillError("no central database: give --central-url or set CARGOGATE_TEST_PG_URL")
    base = sa.make_url(url)
    if base.get_backend_name() != "postgresql":
        raise SkipDrillError(f"the central database must be PostgreSQL, got {base.drivername}")
    name = f"cargogate_drill_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        shown = base.render_as_string(hide_password=True)
        raise SkipDrillError(f"cannot make a scratch database on {shown}: {exc.args[0]}") from None
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.asynccontextmanager
async def proxied(url: str) -> AsyncIterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of the server of ``url``, and ``url`` through the proxy."""
    parsed = sa.make_url(url)
    async with FaultProxy(parsed.host or "127.0.0.1", parsed.port or 5432) as proxy:
        through = parsed.set(host="127.0.0.1", port=proxy.port)
        yield proxy, through.render_as_string(hide_password=False)


async def _central_outage(ctx: DrillContext, mode: Mode) -> Findings:
    with scratch_database(ctx.central_url) as central:
        async with (
            proxied(central) as (proxy, through),
            rig_for(ctx) as rig,
        ):
            controller = rig.in_process(store={"central_url": through, "forward_interval_s": 0.2})
            links: set[LinkState] = set()

            async def fault() -> None:
                await asyncio.sleep(1.0)
                await proxy.set_mode(mode)
                services = controller.services
                until = time.monotonic() + OUTAGE_S
                while time.monotonic() < until:
                    if services is not None and services.forwarder is not None:
                        links.add(services.forwarder.link_state)
                    await asyncio.sleep(0.05)
                await proxy.set_mode(Mode.PASS)

            await controller.start()
            try:
                await rig.controller_beats()
                await burst_with(rig, fault)
                await rig.settle(controller.journal)
                shipped = await _caught_up(rig, controller, central)
            finally:
                await controller.stop()
            found = rig.findings({"controller": controller.journal}, AlarmSpec())
            found.problems += _compare(rig, controller.journal, central)
            if mode is Mode.REFUSE and LinkState.DOWN not in links:
                found.problems.append("the forwarder never showed the refused database as down")
            found.notes.append(
                f"central caught up {'within' if shipped else 'NOT within'} "
                f"{CATCH_UP_LIMIT_S:g} s; {proxy.connections} connections through the proxy"
            )
            return found


async def _caught_up(rig: Rig, controller: InProcessController, central: str) -> bool:
    """Wait until the central database holds every local row (the live forwarder's work)."""
    until = time.monotonic() + CATCH_UP_LIMIT_S
    while time.monotonic() < until:
        local = await asyncio.to_thread(read_entries, controller.journal, rig.site_id)
        shipped = await asyncio.to_thread(_central_rows, central, rig.site_id)
        if len(shipped) >= len(local):
            return True
        await asyncio.sleep(0.25)
    return False


def _central_rows(central: str, site: str) -> list[dict[str, Any]]:
    try:
        return read_entries(central, site)
    except sa.exc.SQLAlchemyError:  # not migrated yet: nothing shipped
        return []


def _compare(rig: Rig, journal: Path, central: str) -> list[str]:
    """Every local row in the central database exactly once and unchanged, nothing more."""
    local = {row["seq"]: row for row in read_entries(journal, rig.site_id)}
    shipped = _central_rows(central, rig.site_id)
    seqs = [row["seq"] for row in shipped]
    problems = []
    if len(seqs) != len(set(seqs)):
        problems.append(f"the central database holds {len(seqs) - len(set(seqs))} rows twice")
    missing = sorted(set(local) - set(seqs))
    if missing:
        problems.append(
            f"{len(missing)} local rows never reached the central database (seq {missing[0]}..)"
        )
    extra = sorted(set(seqs) - set(local))
    if extra:
        problems.append(f"{len(extra)} central rows are not in the local journal")
    changed = [
        row["seq"]
        for row in shipped
        if row["seq"] in local and any(row[k] != local[row["seq"]][k] for k in _COMPARED)
    ]
    if changed:
        problems.append(f"{len(changed)} central rows differ from the local ones")
    return problems


async def central_refused(ctx: DrillContext) -> Findings:
    """The central database refuses connections for 2.5 s mid-burst: the controller decides
    on from its local journal, the forwarder shows the outage and ships every row exactly once
    when the database is back."""
    return await _central_outage(ctx, Mode.REFUSE)


async def central_blackhole(ctx: DrillContext) -> Findings:
    """The central database answers nothing for 2.5 s mid-burst (a black hole): nothing waits
    on it, and every row reaches it exactly once afterwards."""
    return await _central_outage(ctx, Mode.BLACKHOLE)


async def disk_full(ctx: DrillContext) -> Findings:
    """The disk under the journal is full for 2.5 s mid-burst (SQLITE_FULL on every write):
    the controller keeps serving, what it could not write waits and is written once the disk
    has room, in order; the journal alarm is raised and cleared once per line."""
    async with rig_for(ctx) as rig:
        controller = rig.in_process()
        with FullDisk(controller.journal) as disk:

            async def fault() -> None:
                await asyncio.sleep(1.0)
                disk.fill()
                await asyncio.sleep(OUTAGE_S)
                disk.free()

            await controller.start()
            try:
                await rig.controller_beats()
                await burst_with(rig, fault)
                await rig.settle(controller.journal)
            finally:
                await controller.stop()
        found = rig.findings(
            {"controller": controller.journal}, AlarmSpec(expected=per_line(rig, "journal"))
        )
        found.notes.append(f"{disk.refusals} journal transactions on a full disk")
        return found


DRILLS = (
    Drill(
        "central-refused",
        "the central database refuses connections for 2.5 s mid-burst (needs PostgreSQL)",
        central_refused,
    ),
    Drill(
        "central-blackhole",
        "the central database answers nothing for 2.5 s mid-burst (needs PostgreSQL)",
        central_blackhole,
    ),
    Drill("disk-full", "the disk under the journal is full for 2.5 s mid-burst", disk_full),
)
