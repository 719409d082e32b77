"""Drills at the PLC: its server going away, cold starts, sequence numbers that wrap and
jump, a stalled heartbeat, malformed telegrams, and a second controller on the same PLC.

Every drill runs the site's real services in this process against emulated PLCs over OPC UA
and Modbus TCP on loopback, all lines at once, and strikes during a burst (or between two).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from controller.core.reasons import Reason
from plc_adapters.telegrams import RawTelegram
from simulation.drills.framework import Drill, DrillContext
from simulation.drills.outcome import AlarmSpec, Findings
from simulation.drills.plays import (
    burst_with,
    decisions,
    journal_rows,
    nothing,
    per_line,
    rig_for,
    under,
)
from simulation.drills.rig import Rig

FORGET_COUNT = 80
"""Parcels per line in plc-forgets-parcels: traffic runs on past the confirm timeout, so the
PLC confirms parcels again after the losses (which clears the lost-tracking alarm)."""
OWNER_WAIT_S = 8.0
"""How long a refused second controller may take to raise its ownership alarm (it first waits
out a predecessor's heartbeat timeout, twice over)."""
HEARTBEAT_STALL_S = 3.0
"""Longer than the link's heartbeat timeout (2 s by default)."""
WRAP_FROM = 0xFFFF_FFF0
"""Ring counters and telegram numbers start 16 short of 2**32: both wrap in every burst."""


async def plc_restart(ctx: DrillContext) -> Findings:
    """The PLC's server (its communication module) stops mid-burst for 1.2 s and comes back
    with its memory: the link alarm is raised and cleared once per line, parcels whose reply
    could not be written go to the default lane, nothing is lost or doubled."""
    async with rig_for(ctx, own_servers=True) as rig:
        controller = rig.in_process()

        async def fault() -> None:
            await asyncio.sleep(1.0)
            await asyncio.gather(*(plc.stop_server() for plc in rig.plcs.values()))
            await asyncio.sleep(1.2)
            await asyncio.gather(*(plc.start() for plc in rig.plcs.values()))

        await under(rig, controller, fault)
        return rig.findings(
            {"controller": controller.journal},
            AlarmSpec(
                expected=per_line(rig, "plc-link"),
                tolerated=("*/plc-safe-state", "*/plc-heartbeat"),
            ),
        )


async def _cold_start_between_bursts(ctx: DrillContext, keep_slots: bool) -> Findings:
    async with rig_for(ctx) as rig:
        controller = rig.in_process()

        async def fault() -> None:
            await rig.burst(20, 10.0)
            await rig.settle(controller.journal)
            for line, plc in rig.plcs.items():
                plc.cold_start(keep_slots=keep_slots)
                rig.plants[line].next_tracking_id = 1  # the new run numbers parcels from 1
            await asyncio.sleep(0.3)

        await under(rig, controller, fault, count=20)
        return rig.findings(
            {"controller": controller.journal},
            AlarmSpec(expected=per_line(rig, "plc-restart")),
        )


async def plc_cold_start_kept(ctx: DrillContext) -> Findings:
    """The PLC cold-starts between two bursts (counters zeroed, ring slots keep their old
    contents) and numbers its parcels from 1 again: nothing stale is read or replayed."""
    return await _cold_start_between_bursts(ctx, keep_slots=True)


async def plc_cold_start_zeroed(ctx: DrillContext) -> Findings:
    """As plc-cold-start-kept, with the ring slots zeroed too."""
    return await _cold_start_between_bursts(ctx, keep_slots=False)


async def plc_forgets_parcels(ctx: DrillContext) -> Findings:
    """The PLC cold-starts mid-burst: the parcels it had decided and not yet diverted are
    forgotten (no confirmation will ever come). On the first line the PLC numbers its parcels
    from 1 again, so new parcels reuse the forgotten ones' tracking ids; on the others the ids
    go on (they come from upstream). Each forgotten parcel must still close as lost tracking
    (when its id comes back, or after the line's confirm timeout), each new parcel be decided
    as the new parcel it is, and the lost-tracking alarm be raised and cleared once per line."""
    async with rig_for(ctx) as rig:
        controller = rig.in_process()
        renumbered = rig.lines[0].id

        async def fault() -> None:
            await asyncio.sleep(1.5)
            for plc in rig.plcs.values():
                plc.cold_start(keep_slots=True)
            rig.plants[renumbered].next_tracking_id = 1

        await under(rig, controller, fault, count=FORGET_COUNT, quiet_s=None)
        return rig.findings(
            {"controller": controller.journal},
            AlarmSpec(expected={**per_line(rig, "plc-restart"), **per_line(rig, "lost-tracking")}),
        )


async def sequence_wrap(ctx: DrillContext) -> Findings:
    """Telegram numbers and ring counters pass 2**32 mid-burst: every telegram after the
    wrap is new, nothing is alarmed, lost or doubled."""
    async with rig_for(ctx, first_counter=WRAP_FROM) as rig:
        for plc in rig.plcs.values():
            plc.set_next_seq(WRAP_FROM)
        controller = rig.in_process()
        await under(rig, controller, nothing)
        return rig.findings({"controller": controller.journal}, AlarmSpec())


async def sequence_jump(ctx: DrillContext) -> Findings:
    """Mid-burst the PLC's telegram numbers jump 1,000 ahead and go on from there: the gap is
    alarmed once per line and cleared by the next telegram, every parcel is decided."""
    async with rig_for(ctx) as rig:
        controller = rig.in_process()

        async def fault() -> None:
            await asyncio.sleep(1.5)
            for plc in rig.plcs.values():
                plc.set_next_seq(plc.next_seq() + 1000)

        await under(rig, controller, fault)
        return rig.findings(
            {"controller": controller.journal},
            AlarmSpec(expected=per_line(rig, "telegrams-lost")),
        )


async def plc_heartbeat_stall(ctx: DrillContext) -> Findings:
    """The PLC's heartbeat stops counting for 3 s mid-burst (its program stalled) while it
    keeps scanning: the controller raises the heartbeat alarm once per line and clears it
    when the heartbeat runs again; parcels are decided throughout."""
    async with rig_for(ctx) as rig:
        controller = rig.in_process()

        async def fault() -> None:
            await asyncio.sleep(0.5)
            for plc in rig.plcs.values():
                plc.freeze_heartbeat(True)
            await asyncio.sleep(HEARTBEAT_STALL_S)
            for plc in rig.plcs.values():
                plc.freeze_heartbeat(False)

        await under(rig, controller, fault, count=45)
        return rig.findings(
            {"controller": controller.journal},
            AlarmSpec(expected=per_line(rig, "plc-heartbeat")),
        )


LONG_BARCODE = "CG" + "4" * 38
"""40 characters: more than the 32 a barcode field holds (never cut to a valid-looking HAWB)."""
NOT_ASCII = "CG\u00c4123456"


async def malformed_telegrams(ctx: DrillContext) -> Findings:
    """Mid-burst each PLC sends a barcode too long for its field, a barcode that is not ASCII,
    a no-read, a telegram of unknown kind and one request twice: the malformed parcels and
    the no-read go to exception with their reason, the unknown kind is alarmed and skipped,
    the repeat is dropped, and every other parcel is decided as usual."""
    async with rig_for(ctx) as rig:
        controller = rig.in_process()
        odd = []

        async def fault() -> None:
            for barcode, malformed in ((LONG_BARCODE, True), (NOT_ASCII, True), ("", False)):
                await asyncio.sleep(0.6)
                for plant in rig.plants.values():
                    parcel = plant.next_parcel(barcode, malformed=malformed)
                    odd.append((parcel, Reason.MALFORMED_TELEGRAM if malformed else Reason.NO_READ))
                    plant.send(parcel)
            await asyncio.sleep(0.6)
            for plc in rig.plcs.values():
                plc.inject(RawTelegram(plc.next_seq(), 7, 4_000_000_000))
            await asyncio.sleep(0.6)
            for line, plc in rig.plcs.items():
                sent = [p for p in rig.ledger.parcels if p.line == line and p.seqs]
                plc.resend(sent[-1].seqs[-1])
            for plant in rig.plants.values():
                await plant.drain()

        await under(rig, controller, fault)
        found = rig.findings(
            {"controller": controller.journal},
            AlarmSpec(expected=per_line(rig, "malformed-telegram", None)),
        )
        rows = journal_rows(rig, controller.journal)
        for parcel, reason in odd:
            decided = decisions(rows, parcel.line, parcel.tracking_id)
            if not decided or reason not in decided[0]["reasons"]:
                found.problems.append(
                    f"{parcel}: not sent to exception with reason {reason.name} "
                    f"(decisions: {[d['reasons'] for d in decided]})"
                )
        found.notes.append(f"{len(odd)} malformed or no-read parcels to exception")
        return found


async def second_controller(ctx: DrillContext) -> Findings:
    """A second controller (its own journal) connects to the same PLCs while the first runs:
    the PLC refuses it (the first owns the link), so no parcel is decided twice or by the
    second, the first decides every parcel, and the second raises its ownership alarm."""
    async with rig_for(ctx) as rig:
        first, second = rig.in_process("controller"), rig.in_process("second")
        refused = per_line(rig, "plc-owner")
        await first.start()
        try:
            await rig.controller_beats()
            await second.start(linked=False)
            try:
                await burst_with(rig, nothing)
                await rig.settle(first.journal)
                await _alarmed(rig, second.journal, set(refused), OWNER_WAIT_S)
            finally:
                await second.stop()
        finally:
            await first.stop()
        found = rig.findings(
            {"controller": first.journal, "second": second.journal},
            {
                "controller": AlarmSpec(),
                "second": AlarmSpec(
                    expected=refused,
                    open_ok={"*/plc-owner": "refused for as long as it runs: its alarm stays"},
                ),
            },
        )
        taken = [row for row in journal_rows(rig, second.journal) if row["kind"] != "alarm"]
        if taken:
            found.problems.append(
                f"the second controller journalled {len(taken)} parcel rows: it was not refused"
            )
        return found


async def _alarmed(rig: Rig, journal: Path, sources: set[str], limit_s: float) -> None:
    """Wait until ``journal`` shows every one of ``sources`` raised, at most ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(journal_rows, rig, journal)
        raised = {(r["data"] or {}).get("source") for r in rows if r["kind"] == "alarm"}
        if sources <= raised:
            return
        await asyncio.sleep(0.2)


DRILLS = (
    Drill("plc-restart", "PLC server killed mid-burst and restarted with its memory", plc_restart),
    Drill(
        "plc-cold-start-kept",
        "PLC cold start between bursts, counters zeroed, ring slots kept, ids reused",
        plc_cold_start_kept,
    ),
    Drill(
        "plc-cold-start-zeroed",
        "PLC cold start between bursts, counters and ring slots zeroed, ids reused",
        plc_cold_start_zeroed,
    ),
    Drill(
        "plc-forgets-parcels",
        "PLC cold start mid-burst: decided parcels never confirmed must still close",
        plc_forgets_parcels,
    ),
    Drill("sequence-wrap", "telegram numbers and ring counters wrap past 2**32", sequence_wrap),
    Drill("sequence-jump", "telegram numbers jump 1,000 ahead mid-burst", sequence_jump),
    Drill(
        "plc-heartbeat-stall",
        "the PLC heartbeat stops for 3 s mid-burst, then runs again",
        plc_heartbeat_stall,
    ),
    Drill(
        "malformed-telegrams",
        "too-long and non-ASCII barcodes, a no-read, an unknown kind, a repeated telegram",
        malformed_telegrams,
    ),
    Drill(
        "second-controller",
        "a second controller connects to the same PLCs: it must be refused",
        second_controller,
    ),
)
