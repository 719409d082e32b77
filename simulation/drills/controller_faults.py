"""Drills at the controller process: kill -9 mid-burst and a restart, and a stalled controller
(SIGSTOP) that the PLCs must notice by its heartbeat.

The controller runs as ``cargogate run SITE`` in a child process, exactly as systemd runs it on
a site; the drill kills, stops and continues that process.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Any

from controller.store.openset import opens_parcel, parcel_change
from simulation.drills.framework import Drill, DrillContext
from simulation.drills.outcome import AlarmSpec, Findings
from simulation.drills.plays import burst_with, journal_rows, rig_for

DEAD_S = 1.0
"""How long the killed controller stays down before it is started again."""
STALL_S = 3.0
"""How long the controller is stopped: longer than the PLCs' heartbeat timeout."""


async def controller_kill(ctx: DrillContext) -> Findings:
    """kill -9 of the controller mid-burst, restarted a second later: the new process takes
    back every open parcel from the journal; parcels requested meanwhile go to the default
    lane; nothing is lost, doubled, or diverted on a decision the journal lacks."""
    async with rig_for(ctx) as rig:
        controller = rig.process()
        killed = datetime.now(UTC)
        await controller.start()
        try:
            await rig.controller_beats()

            async def fault() -> None:
                nonlocal killed
                await asyncio.sleep(1.5)
                await controller.kill()
                killed = datetime.now(UTC)  # every row after this is the new process's
                await asyncio.sleep(DEAD_S)
                await controller.start()

            await burst_with(rig, fault)
            await rig.settle(controller.journal)
        finally:
            await controller.stop()
        found = rig.findings(
            {"controller": controller.journal},
            AlarmSpec(tolerated=("*/plc-safe-state", "*/plc-heartbeat", "*/plc-link")),
        )
        taken_back = _taken_back(journal_rows(rig, controller.journal), killed)
        if not taken_back:
            found.problems.append("no parcel opened before the kill was closed after the restart")
        found.notes.append(f"{taken_back} parcels opened before the kill closed after it")
        return found


def _taken_back(rows: list[dict[str, Any]], killed: datetime) -> int:
    """Parcels first scanned by the killed process and closed by the new one."""
    opened: set[tuple[str, int, str]] = set()
    closed: set[tuple[str, int, str]] = set()
    for row in rows:
        key = (row["line"], row["tracking_id"], row["hawb"])
        state = parcel_change(row["kind"], row["state_to"], row["data"])
        if state is None:
            continue
        if opens_parcel(row["state_from"], state) and row["wall_time"] < killed:
            opened.add(key)
        elif state.terminal and row["wall_time"] > killed:
            closed.add(key)
    return len(opened & closed)


async def controller_stall(ctx: DrillContext) -> Findings:
    """The controller process is stopped (SIGSTOP) for 3 s mid-burst: every PLC misses its
    heartbeat and goes to its safe state (default lane); once continued, the controller
    journals every parcel of the stall as defaulted and goes on deciding."""
    async with rig_for(ctx) as rig:
        controller = rig.process()
        safe: set[str] = set()

        async def watch() -> None:
            while True:
                safe.update(line for line, plc in rig.plcs.items() if plc.safe_state)
                await asyncio.sleep(0.05)

        async def fault() -> None:
            await asyncio.sleep(1.0)
            controller.signal(signal.SIGSTOP)
            watcher = asyncio.create_task(watch())
            await asyncio.sleep(STALL_S)
            controller.signal(signal.SIGCONT)
            await asyncio.sleep(0.5)
            watcher.cancel()

        await controller.start()
        try:
            await rig.controller_beats()
            await burst_with(rig, fault, count=45)
            await rig.settle(controller.journal)
        finally:
            await controller.stop()
        found = rig.findings(
            {"controller": controller.journal},
            # A server may also drop a session that went quiet for 3 s: the link must then
            # come back (an alarm still raised at the end fails the drill).
            AlarmSpec(
                tolerated=(
                    "*/plc-safe-state",
                    "*/plc-heartbeat",
                    "*/plc-mailbox-full",
                    "*/plc-link",
                )
            ),
        )
        missed = sorted(set(rig.plcs) - safe)
        if missed:
            found.problems.append(f"PLC(s) of {', '.join(missed)} never went to the safe state")
        found.notes.append(f"{len(safe)}/{len(rig.plcs)} PLCs in the safe state during the stall")
        return found


DRILLS = (
    Drill(
        "controller-kill",
        "kill -9 of the controller process mid-burst, restarted a second later",
        controller_kill,
    ),
    Drill(
        "controller-stall",
        "the controller process stopped for 3 s (heartbeat stall): PLCs go to the safe state",
        controller_stall,
    ),
)
