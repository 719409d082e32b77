"""Inference in the decision path: the real core, a real onnxruntime session, real intake.

Each bad input reaches the sorter as an inspection with its reason, and the audit record
holds the X-ray result (scores, model version, detail); intake keeps running throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from controller.core.clock import MonotonicClock
from controller.core.domain import (
    DestinationReply,
    EntryKind,
    JournalEntry,
    RiskChannel,
    RiskResult,
)
from controller.core.reasons import Reason
from controller.inference.factory import build_onnx_xray
from controller.inference.service import OnnxXrayService
from controller.inference.settings import OnnxXray
from controller.intake.factory import build_intake
from controller.intake.folder import FolderSource
from controller.intake.inprocess import InProcessScanner
from controller.intake.settings import InProcessIntake, Intake, WatchFolderIntake
from controller.lines import Controller
from plc_adapters.inprocess import InProcessSorter
from tests.imaging.images import parcel_image
from tests.imaging.models import CLASSES, build_model
from tests.support import DictRisk, MemoryJournal, site

WAIT = 30.0
#: Thresholds under which the test model's scores count as clean, so a good image releases.
LENIENT = {name: {"alarm": 0.999, "clear": 0.99} for name in CLASSES}


@dataclass
class Rig:
    sorter: InProcessSorter
    journal: MemoryJournal
    risk: DictRisk
    scanner: InProcessScanner
    inbox: Path
    xray: OnnxXrayService
    replies: dict[int, DestinationReply]
    arrived: asyncio.Event

    def scan(self, tracking_id: int, hawb: str) -> None:
        self.risk.results[hawb] = RiskResult(hawb, RiskChannel.GREEN, 0.05, "books")
        self.sorter.request(tracking_id, hawb, MonotonicClock().now())

    async def reply(self, tracking_id: int) -> DestinationReply:
        async def wait() -> DestinationReply:
            while tracking_id not in self.replies:
                self.arrived.clear()
                await self.arrived.wait()
            return self.replies[tracking_id]

        return await asyncio.wait_for(wait(), WAIT)

    def decision(self, tracking_id: int) -> JournalEntry:
        return next(e for e in self.journal.for_parcel(tracking_id) if e.kind is EntryKind.DECISION)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = site(policy={"audit_rate": 0.0, "min_audit_rate": 0.0, "classes": LENIENT})
    inbox = tmp_path / "inbox"
    parts = build_intake(
        Intake(
            sources=[
                WatchFolderIntake(type="watch_folder", path=inbox, poll_s=0.05, settle_s=0),
                InProcessIntake(type="inprocess", name="twin"),
            ],
            quarantine=tmp_path / "quarantine",
        )
    )
    model = build_model(tmp_path / "m.onnx", version="e2e0001")
    settings = OnnxXray(type="onnx", model=model, image_wait_s=1.0, timeout_s=5.0)
    xray = build_onnx_xray(settings, parts.matcher, policy_classes=list(config.policy.classes))
    replies: dict[int, DestinationReply] = {}
    arrived = asyncio.Event()

    def on_reply(reply: DestinationReply) -> None:
        replies[reply.tracking_id] = reply
        arrived.set()

    sorter = InProcessSorter("L1", on_reply=on_reply)
    journal, risk = MemoryJournal(), DictRisk()
    controller = Controller(config, {"L1": sorter}, risk, xray, journal, MonotonicClock())
    scanner = parts.sources["twin"]
    folder = parts.sources["watch_folder"]
    assert isinstance(scanner, InProcessScanner)
    assert isinstance(folder, FolderSource)
    async with xray:
        tasks = [
            asyncio.create_task(controller.run()),
            asyncio.create_task(parts.matcher.run()),
            asyncio.create_task(folder.run()),
        ]
        try:
            yield Rig(sorter, journal, risk, scanner, inbox, xray, replies, arrived)
        finally:
            sorter.close()
            await asyncio.wait_for(tasks[0], WAIT)
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)


async def test_a_clean_image_is_scored_released_and_audited(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.scanner.push(parcel_image(seed=1), hawb="CG1")
        r.scan(1, "CG1")
        reply = await r.reply(1)
        assert (reply.lane, reply.reason) == (1, Reason.LOW_RISK_CLEAN_XRAY)
        xray = r.decision(1).data["xray"]
    assert isinstance(xray, dict)
    assert xray["status"] == "ok"
    assert xray["model"] == "e2e0001"
    assert set(xray["scores"]) == set(CLASSES)


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        ("unreadable", "sensor readout failed"),
        ("wrong size", "at least 32×32"),
        ("wrong dtype", "dtype is int32"),
        ("empty", "empty"),
        ("huge", "limit is 8192 px a side"),
        ("nan", "NaN"),
    ],
)
async def test_bad_images_send_the_parcel_to_inspection_with_the_reason(
    tmp_path: Path, bad: str, detail: str
) -> None:
    pixels: object = {
        "unreadable": None,
        "wrong size": np.zeros((16, 16), np.uint16),
        "wrong dtype": np.zeros((64, 64), np.int32),
        "empty": np.zeros((0, 64), np.uint16),
        "huge": np.broadcast_to(np.uint16(1), (10_000, 64)),
        "nan": np.full((64, 64), np.nan, np.float32),
    }[bad]
    async with rig(tmp_path) as r:
        r.scanner.push(pixels, hawb="CG2", error="sensor readout failed")
        r.scan(2, "CG2")
        reply = await r.reply(2)
        # intake and inference keep going: the next parcel is scored normally
        r.scanner.push(parcel_image(seed=3), hawb="CG3")
        r.scan(3, "CG3")
        after = await r.reply(3)
        decision = r.decision(2)
    assert (reply.lane, reply.reason) == (2, Reason.XRAY_BAD_IMAGE)
    assert decision.reasons == (Reason.XRAY_BAD_IMAGE,)
    xray = decision.data["xray"]
    assert isinstance(xray, dict)
    assert xray["status"] == "bad_image"
    assert detail in str(xray["detail"])
    assert after.reason == Reason.LOW_RISK_CLEAN_XRAY


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("CG4.png", b"\x89PNG\r\n\x1a\n truncated", "CG4.png"),
        ("CG4.npy", b"", "corrupt or truncated"),
        ("CG4.tif", b"II*\x00garbage", "TIFF is corrupt"),
    ],
)
async def test_corrupt_and_truncated_files_send_the_parcel_to_inspection(
    tmp_path: Path, name: str, content: bytes, detail: str
) -> None:
    async with rig(tmp_path) as r:
        r.inbox.mkdir(parents=True, exist_ok=True)
        (r.inbox / name).write_bytes(content)
        r.scan(4, "CG4")
        reply = await r.reply(4)
        np.save(r.inbox / "CG5.npy", parcel_image(seed=5))  # the folder is still served
        r.scan(5, "CG5")
        after = await r.reply(5)
        xray = r.decision(4).data["xray"]
    assert (reply.lane, reply.reason) == (2, Reason.XRAY_BAD_IMAGE)
    assert isinstance(xray, dict)
    assert detail in str(xray["detail"])
    assert after.reason == Reason.LOW_RISK_CLEAN_XRAY


async def test_a_parcel_without_an_image_goes_to_inspection_as_missing(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.scan(6, "CG6")
        reply = await r.reply(6)
    assert (reply.lane, reply.reason) == (2, Reason.XRAY_MISSING)
