"""The moves most drills share: start a controller, play a burst while the fault strikes, let
the journal settle, stop the controller, and a few readings of the journal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.store.read import read_entries
from simulation.drills.controllers import Controller
from simulation.drills.framework import DrillContext
from simulation.drills.rig import QUIET_S, Rig

COUNT = 24
"""Parcels per line in a drill's burst."""
RATE_PER_S = 10.0
"""Parcels per second per line (a 2.4 s burst): about four times a busy line's rate."""

Fault = Callable[[], Awaitable[None]]


async def nothing() -> None:
    """No fault: the baseline."""


async def burst_with(rig: Rig, fault: Fault, count: int = COUNT, per_s: float = RATE_PER_S) -> None:
    """Play a burst on every line while ``fault`` runs (it times itself from the start)."""
    burst = asyncio.create_task(rig.burst(count, per_s), name="drill burst")
    try:
        await fault()
    except BaseException:
        burst.cancel()
        raise
    await burst


async def under(
    rig: Rig,
    controller: Controller,
    fault: Fault,
    count: int = COUNT,
    per_s: float = RATE_PER_S,
    *,
    open_ok: Sequence[str] = (),
    quiet_s: float | None = QUIET_S,
) -> None:
    """Start ``controller``, play a burst with ``fault``, let the journal settle (see
    :meth:`simulation.drills.rig.Rig.settle`), stop the controller."""
    await controller.start()
    try:
        await rig.controller_beats()
        await burst_with(rig, fault, count, per_s)
        await rig.settle(controller.journal, open_ok=open_ok, quiet_s=quiet_s)
    finally:
        await controller.stop()


def rig_for(ctx: DrillContext, *, own_servers: bool = False, first_counter: int = 0) -> Rig:
    """The drill's rig; ``own_servers`` for a drill that takes its OPC UA server down."""
    hosts = None if own_servers else ctx.hosts
    return Rig(ctx.workdir, ctx.seed, ctx.base, hosts=hosts, first_counter=first_counter)


def per_line(rig: Rig, what: str, count: int | None = 1) -> dict[str, int | None]:
    """An alarm expectation for ``<line>/<what>`` on every line of the drill."""
    return {f"{line}/{what}": count for line in rig.plcs}


def journal_rows(rig: Rig, journal: Path) -> list[dict[str, Any]]:
    return read_entries(journal, rig.site_id)


def decisions(rows: Iterable[Mapping[str, Any]], line: str, tracking_id: int) -> list[Any]:
    """The decision rows of one parcel (any lap), oldest first."""
    return [
        row
        for row in rows
        if row["kind"] == "decision" and row["line"] == line and row["tracking_id"] == tracking_id
    ]
