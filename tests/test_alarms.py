"""Alarms are recorded once when a condition starts and once when it clears."""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.alarms import Alarms
from controller.core.domain import EntryKind
from tests.support import MemoryJournal


async def test_repeated_reports_give_one_start_and_one_clear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = MemoryJournal()
    now = [10.0]
    alarms = Alarms(journal, lambda: now[0])
    with caplog.at_level(logging.INFO, logger="controller.alarms"):
        for _ in range(5):
            alarms.alarm("L1/heartbeat", "PLC heartbeat stalled", active=True)
        assert set(alarms.active) == {"L1/heartbeat"}
        now[0] = 12.5
        for _ in range(3):
            alarms.alarm("L1/heartbeat", "PLC heartbeat back", active=False)
        alarms.alarm("L2/heartbeat", "never raised", active=False)
    await asyncio.sleep(0.01)
    assert [(e.line, e.state_to, e.ts) for e in journal.entries] == [
        ("L1", "active", 10.0),
        ("L1", "cleared", 12.5),
    ]
    assert all(e.kind is EntryKind.ALARM for e in journal.entries)
    assert alarms.active == {}
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
