"""A sorter adapter that fails to take an acknowledgement does not stop the line's
acknowledgements: the failure is logged once, the telegram is acknowledged again later, and
the telegrams after it are acknowledged meanwhile. Real controller, real SQLite journal; the
fault is injected in the in-process sorter's ``acknowledge``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controller.core.clock import MonotonicClock
from controller.core.domain import (
    DestinationReply,
    DivertStatus,
    RiskChannel,
    RiskResult,
    Telegram,
    XrayResult,
    XrayStatus,
)
from controller.lines import Controller
from controller.store.journal import SqliteJournal
from plc_adapters.inprocess import InProcessSorter
from plc_adapters.plant_side import ReplyHandler
from tests.support import CLEAN, DictRisk, site


class InstantXray:
    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        return XrayResult(XrayStatus.OK, CLEAN, "instant")


class RefusingSorter(InProcessSorter):
    """An in-process sorter whose adapter raises on the acknowledgement of the telegram
    numbered ``refused_seq``, the first ``times`` times it is asked."""

    def __init__(self, on_reply: ReplyHandler, refused_seq: int, times: int) -> None:
        super().__init__("L1", on_reply=on_reply)
        self.refused_seq = refused_seq
        self.refusals_left = times
        self.acknowledged_seqs: list[int] = []

    def acknowledge(self, telegram: Telegram) -> None:
        if telegram.seq == self.refused_seq and self.refusals_left:
            self.refusals_left -= 1
            raise RuntimeError("adapter fault while acknowledging")
        super().acknowledge(telegram)
        self.acknowledged_seqs.append(telegram.seq)


async def until(condition: Callable[[], object], within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def serving(path: Path, sorter: RefusingSorter) -> AsyncIterator[Controller]:
    clock = MonotonicClock()
    risk = DictRisk({f"H{t}": RiskResult(f"H{t}", RiskChannel.GREEN, 0.05, "") for t in range(9)})
    async with SqliteJournal(path, "TEST", group_commit_ms=1.0) as journal:
        controller = Controller(site(), {"L1": sorter}, risk, InstantXray(), journal, clock)
        task = asyncio.create_task(controller.run())
        try:
            yield controller
        finally:
            sorter.close()
            await asyncio.wait_for(task, 10)


def replies_reach(replies: list[DestinationReply], count: int) -> Callable[[], bool]:
    return lambda: len(replies) >= count


async def parcels_through(sorter: RefusingSorter, replies: list[DestinationReply]) -> None:
    """Four parcels, each scanned, decided and confirmed: eight telegrams, seq 1 to 8."""
    clock = MonotonicClock()
    for tracking_id in range(1, 5):
        sorter.request(tracking_id, f"H{tracking_id}", clock.now())
        await until(replies_reach(replies, tracking_id))
        reply = replies[-1]
        assert reply.tracking_id == tracking_id
        sorter.confirm(tracking_id, reply.lane, DivertStatus.DIVERTED)


def refusal_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "refused an acknowledgement" in r.getMessage()]


async def test_an_acknowledgement_refused_once_is_given_again_and_the_later_ones_go_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    replies: list[DestinationReply] = []
    sorter = RefusingSorter(replies.append, refused_seq=2, times=1)
    async with serving(tmp_path / "journal.sqlite", sorter):
        await parcels_through(sorter, replies)
        await until(lambda: sorter.acknowledged == 8)
    assert sorted(sorter.acknowledged_seqs) == list(range(1, 9))  # the refused one too, once
    (logged,) = refusal_logs(caplog)
    assert logged.exc_info is not None  # the adapter's exception, with its traceback
    again = [r for r in caplog.records if "takes acknowledgements again" in r.getMessage()]
    assert len(again) == 1


async def test_an_acknowledgement_the_adapter_always_refuses_holds_up_no_later_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    replies: list[DestinationReply] = []
    sorter = RefusingSorter(replies.append, refused_seq=3, times=10**9)
    async with serving(tmp_path / "journal.sqlite", sorter):
        await parcels_through(sorter, replies)
        await until(lambda: sorter.acknowledged == 7)
        await asyncio.sleep(0.5)  # asked again with backoff, in vain
        assert sorter.refusals_left < 10**9 - 1
    assert sorted(sorter.acknowledged_seqs) == [1, 2, 4, 5, 6, 7, 8]
    assert len(refusal_logs(caplog)) == 1  # one complaint for the whole run of failures
