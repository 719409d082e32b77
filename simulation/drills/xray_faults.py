"""Drills at the X-ray path: an inference session that hangs or crashes on some parcels, and
decompression bombs and corrupt files in the scanner's watch folder.

The site runs the real ONNX inference service and scanner intake: a scanner in this process
pushes each parcel's image at its scan, or the drill writes the image files into a watch
folder ahead of the burst. The model is the drill's own (:mod:`simulation.drills.models`): it
scores dark images clean and hangs or crashes on bright ones, with real onnxruntime behaviour.
"""

from __future__ import annotations

import io
import resource
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simulation.drills.framework import Drill, DrillContext
from simulation.drills.models import Behaviour, build_model
from simulation.drills.outcome import AlarmSpec, Findings, SentParcel
from simulation.drills.plays import COUNT, journal_rows, nothing, rig_for, under
from simulation.drills.rig import Rig

EVERY = 8
"""Every EVERY-th parcel of a line brings the bad image (a bomb, a corrupt file)."""
EVERY_RUN = 12
"""Every EVERY_RUN-th parcel of a line makes the inference session hang or crash: seldom
enough that healthy runs come between (else the service gives up after max_restarts, as it
must, and stays failed until restarted by hand)."""
CLEAN_TAIL = 8
"""The last parcels of each line bring good images, so the service ends healthy."""
DARK = np.zeros((64, 64), np.float32)
BRIGHT = np.ones((64, 64), np.float32)
INTAKE_ALARMS = ("intake/*",)
"""Intake's fault alarms stay raised until an operator acknowledges the quarantine."""
BOMB_SIDE = 9000
"""A 9000 × 9000 PNG: 81 million pixels (over the default 64 million), 80 KB on disk."""


def _onnx(model: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "onnx",
        "model": str(model),
        "timeout_s": 0.4,
        "image_wait_s": 0.6,
        "max_restarts": 3,
        "batch_window_ms": 2,
        **overrides,
    }


def _classes(rig: Rig) -> list[str]:
    classes = rig.policy.get("classes")
    return list(classes) if classes else [
        "firearm", "blade", "lithium_battery", "liquid_container", "narcotics_organic",
    ]  # fmt: skip


def _bad(index: int, every: int = EVERY) -> bool:
    return index % every == every // 2 and index < COUNT - CLEAN_TAIL


async def _inference(ctx: DrillContext, behaviour: Behaviour) -> Findings:
    async with rig_for(ctx) as rig:
        model = build_model(ctx.workdir / f"{behaviour}.onnx", _classes(rig), behaviour)
        controller = rig.in_process(
            xray=_onnx(model),
            intake={
                "sources": [{"type": "inprocess", "name": "scanner"}],
                "quarantine": str(ctx.workdir / "quarantine"),
            },
        )
        bright: list[SentParcel] = []

        def scan(parcel: SentParcel, index: int) -> None:
            services = controller.services
            intake = services.parts.intake if services is not None else None
            if intake is None:
                return
            bad = _bad(index, EVERY_RUN)
            if bad:
                bright.append(parcel)
            push = intake.sources["scanner"].push  # type: ignore[attr-defined]
            push(BRIGHT if bad else DARK, hawb=parcel.barcode, tracking_id=parcel.tracking_id)

        for plant in rig.plants.values():
            counter = iter(range(10**6))
            plant.on_scan = lambda parcel, counter=counter: scan(parcel, next(counter))
        await under(rig, controller, nothing)
        found = rig.findings(
            {"controller": controller.journal},
            AlarmSpec(expected={"xray/onnx/session": None}),
        )
        rows = journal_rows(rig, controller.journal)
        for parcel in bright:
            xray = [
                (r["data"].get("xray") or {}).get("status")
                for r in rows
                if r["kind"] == "decision" and r["hawb"] == parcel.barcode
            ]
            if xray and xray[0] == "ok":
                found.problems.append(f"{parcel}: its {behaviour} run was scored as ok")
        failed = sum(
            1
            for r in rows
            if r["kind"] == "decision"
            and (r["data"].get("xray") or {}).get("status") in ("failed", "late")
        )
        found.notes.append(f"{len(bright)} {behaviour} runs, {failed} parcels without scores")
        return found


async def inference_hang(ctx: DrillContext) -> Findings:
    """Every 12th parcel's image makes the inference session hang: the watchdog aborts the run
    after timeout_s and restarts the session; the parcels of a failed run are inspected, the
    session alarm is raised and cleared, inference carries on."""
    return await _inference(ctx, "hang")


async def inference_crash(ctx: DrillContext) -> Findings:
    """Every 12th parcel's image makes the inference session raise: as inference-hang, without
    the wait."""
    return await _inference(ctx, "crash")


def _png(side: int) -> bytes:
    """A greyscale PNG of ``side`` × ``side`` zero pixels, compressed as one stream."""
    row = b"\x00" * (side + 1)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def _dark_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((64, 64), 8, np.uint8)).save(out, format="PNG")
    return out.getvalue()


async def image_bombs(ctx: DrillContext) -> Findings:
    """The scanner's watch folder holds decompression bombs (81 million pixels in 80 KB), PNGs
    cut short and a text file named .png among the parcels' images: each bad file is refused
    from its header or fails to decode, is quarantined, its parcel inspected (bad image), and
    its fault alarmed once until acknowledged; memory stays put and the good images score."""
    async with rig_for(ctx) as rig:
        model = build_model(ctx.workdir / "model.onnx", _classes(rig), "crash")
        inbox = ctx.workdir / "inbox"
        inbox.mkdir()
        controller = rig.in_process(
            xray=_onnx(model, image_wait_s=0.8),
            intake={
                "sources": [
                    {
                        "type": "watch_folder",
                        "name": "scanner-files",
                        "path": str(inbox),
                        "poll_s": 0.05,
                        "settle_s": 0.1,
                    }
                ],
                "quarantine": str(ctx.workdir / "quarantine"),
            },
        )
        good, bomb = _dark_png(), _png(BOMB_SIDE)
        kinds = {"bomb": bomb, "cut": good[: len(good) // 2], "text": b"not an image\n"}
        bad: dict[str, str] = {}
        for hawbs in rig.hawbs.values():
            for index, hawb in enumerate(hawbs[:COUNT]):
                body = good
                if _bad(index):  # bomb, cut, text, bomb ... across the lines
                    kind = list(kinds)[len(bad) % len(kinds)]
                    bad[hawb], body = kind, kinds[kind]
                (inbox / f"{hawb}.png").write_bytes(body)
        peak_before = _peak_rss_mb()
        await under(rig, controller, nothing, open_ok=INTAKE_ALARMS)
        grown = _peak_rss_mb() - peak_before
        found = rig.findings(
            {"controller": controller.journal},
            AlarmSpec(
                expected={"intake/image_oversize": 1, "intake/image_unreadable": 1},
                open_ok=dict.fromkeys(INTAKE_ALARMS, "raised until the quarantine is seen"),
            ),
        )
        rows = journal_rows(rig, controller.journal)
        for hawb, kind in bad.items():
            xray = [
                (r["data"].get("xray") or {}).get("status")
                for r in rows
                if r["kind"] == "decision" and r["hawb"] == hawb
            ]
            if xray != ["bad_image"]:
                found.problems.append(f"{hawb} ({kind} file): X-ray {xray}, expected bad_image")
        quarantined = len(list((ctx.workdir / "quarantine").rglob("*.json")))
        if quarantined < len(bad):
            found.problems.append(f"{quarantined} files quarantined of {len(bad)} bad ones")
        if grown > BOMB_SIDE**2 / 2**20:
            found.problems.append(f"peak memory grew {grown:.0f} MB: a bomb was decoded")
        found.notes.append(
            f"{len(bad)} bad files, {quarantined} quarantine records, peak memory +{grown:.0f} MB"
        )
        return found


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


DRILLS = (
    Drill(
        "inference-hang",
        "the inference session hangs on every 12th parcel (watchdog abort and restart)",
        inference_hang,
    ),
    Drill(
        "inference-crash",
        "the inference session raises on every 12th parcel (session restart)",
        inference_crash,
    ),
    Drill(
        "image-bombs",
        "decompression bombs, cut-short PNGs and a text file in the scanner's watch folder",
        image_bombs,
    ),
)
