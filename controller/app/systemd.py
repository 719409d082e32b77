"""systemd's service protocol (``sd_notify``): ready, watchdog, stopping.

Under ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET`` and, with
``WatchdogSec=``, the interval in ``$WATCHDOG_USEC``. The protocol is a few ``KEY=value``
lines per datagram, so it is spoken here directly. Outside systemd (no socket) every call
does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Tells systemd how the service is doing; a no-op when not started by systemd."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_us = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        ours = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s = int(watchdog_us) / 1e6 if watchdog_us.isdigit() and ours else None
        """systemd's watchdog interval; None when it watches nothing (or another process)."""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``READY=1``, ``STATUS=...``) in one datagram; False if not sent."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # a full socket must never stall the event loop
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("systemd notification %s not sent: %s", fields, exc)
            return False
        return True

    async def watchdog(self, healthy: Callable[[], str]) -> None:
        """Feed the watchdog at half its interval from the event loop, while ``healthy()``
        returns "" (else it says what is wrong, and systemd restarts the service once the
        interval passes unfed). A stalled loop stops feeding it by itself."""
        if self.watchdog_s is None:
            return
        complaint = ""
        while True:
            problem = healthy()
            if not problem:
                self.notify("WATCHDOG=1")
            elif problem != complaint:
                log.error("watchdog not fed: %s", problem)
                self.notify(f"STATUS=unhealthy: {problem}")
            complaint = problem
            await asyncio.sleep(self.watchdog_s / 2)
