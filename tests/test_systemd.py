"""The systemd service protocol, against a real notification socket: READY=1 once the site
serves, WATCHDOG=1 while the journal writer runs, STOPPING=1 at the end."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.app.services import Services
from controller.app.systemd import Notifier
from tests.test_site import demo_config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, path


async def _listen(sock: socket.socket, into: list[str]) -> None:
    """Read notifications as systemd does, as they come (the socket's queue is short)."""
    loop = asyncio.get_running_loop()
    while True:
        into.append((await loop.sock_recv(sock, 4096)).decode())


async def test_a_site_tells_systemd_ready_feeds_the_watchdog_and_says_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    config = demo_config(tmp_path)
    stop = asyncio.Event()
    messages: list[str] = []
    listener = asyncio.create_task(_listen(sock, messages))
    async with Services(config) as services:
        runner = asyncio.create_task(services.run(stop=stop))
        await asyncio.sleep(1.0)
        stop.set()
        await runner
    await asyncio.sleep(0.05)
    listener.cancel()
    assert messages[0].startswith("READY=1\nSTATUS=serving 2 line(s)")
    assert messages.count("WATCHDOG=1") >= 5  # every 0.1 s for about a second
    assert messages[-1] == "STOPPING=1"


async def test_an_unhealthy_service_starves_the_watchdog_and_says_why(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
    problem = ""
    messages: list[str] = []
    listener = asyncio.create_task(_listen(sock, messages))
    feeding = asyncio.create_task(notifier.watchdog(lambda: problem))
    await asyncio.sleep(0.05)
    problem = "the journal writer has stopped"
    await asyncio.sleep(0.05)
    feeding.cancel()
    await asyncio.sleep(0.01)
    listener.cancel()
    complaint = "STATUS=unhealthy: the journal writer has stopped"
    assert messages[0] == "WATCHDOG=1"
    assert messages.count(complaint) == 1  # said once, not every tick
    assert "WATCHDOG=1" not in messages[messages.index(complaint) :]


def test_outside_systemd_nothing_is_sent_and_another_pids_watchdog_is_not_ours() -> None:
    assert not Notifier({}).notify("READY=1")
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.address == "\0x"
    assert other.watchdog_s is None
