"""The live stream's back-pressure, the lane rates and the login limiter, in isolation."""

from __future__ import annotations

import asyncio

import pytest

from controller.console.auth import CLIENT_FACTOR, LoginLimiter
from controller.console.live import QUEUE_DEPTH, Broadcaster, LaneRates, TooManyClientsError


def _never() -> bytes:
    raise AssertionError("not built in these tests")


async def test_a_client_gets_the_latest_view_at_once_then_each_new_one() -> None:
    live = Broadcaster(_never, every_s=1.0, max_clients=10)
    live.publish(b'{"n": 1}')
    stream = live.events()
    assert await anext(stream) == b"retry: 2000\n\n"
    assert await anext(stream) == b'data: {"n": 1}\n\n'
    live.publish(b'{"n": 2}')
    assert await anext(stream) == b'data: {"n": 2}\n\n'
    await stream.aclose()
    assert live.clients == 0


async def test_a_client_that_falls_behind_is_dropped_not_buffered() -> None:
    live = Broadcaster(_never, every_s=1.0, max_clients=10)
    slow, quick = live.events(), live.events()
    await anext(slow)
    await anext(quick)
    for n in range(QUEUE_DEPTH + 1):  # the slow one reads nothing meanwhile
        live.publish(b"%d" % n)
        assert await anext(quick) == b"data: %d\n\n" % n
    assert live.dropped == 1
    assert live.clients == 1
    with pytest.raises(StopAsyncIteration):  # the slow one's stream ends: its page reconnects
        await anext(slow)


async def test_clients_beyond_the_limit_are_refused_before_the_stream_starts() -> None:
    live = Broadcaster(_never, every_s=1.0, max_clients=2)
    live.events(), live.events()
    with pytest.raises(TooManyClientsError, match="2 live clients"):
        live.events()


async def test_a_view_that_fails_to_build_does_not_end_the_stream() -> None:
    calls = 0

    def flaky() -> bytes:
        nonlocal calls
        calls += 1
        raise RuntimeError("snapshot failed")

    live = Broadcaster(flaky, every_s=0.01, max_clients=1)
    task = asyncio.create_task(live.run())
    await asyncio.sleep(0.1)
    task.cancel()
    assert calls >= 3


def test_lane_rates_are_parcels_per_minute_over_the_last_minute() -> None:
    rates = LaneRates(span_s=60.0)
    assert rates.update(0.0, {"L1/1": 0}) == {}
    assert rates.update(30.0, {"L1/1": 50}) == {"L1/1": 100.0}
    assert rates.update(60.0, {"L1/1": 100}) == {"L1/1": 100.0}
    # the first minute's samples age out: only the last minute counts
    assert rates.update(150.0, {"L1/1": 100}) == pytest.approx({"L1/1": 0.0})


def test_failed_logins_are_limited_per_user_and_more_loosely_per_address() -> None:
    limiter = LoginLimiter(per_min=3)
    for _ in range(3):
        limiter.failed("user:alice", "client:10.0.0.7", now=0.0)
    assert limiter.blocked("user:alice", now=1.0)
    assert not limiter.blocked("user:bob", "client:10.0.0.7", now=1.0)
    assert not limiter.blocked("user:alice", now=61.0)  # a minute later
    for _ in range(3 * CLIENT_FACTOR):
        limiter.failed("client:10.0.0.8", now=100.0)
    assert limiter.blocked("user:carol", "client:10.0.0.8", now=101.0)
