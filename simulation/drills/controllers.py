"""The controller under drill: the real services of a site, in this process or in their own.

:class:`InProcessController` runs :class:`controller.app.services.Services` on this event loop
(the drill can reach its parts: the forwarder's link, the intake's scanner, the journal's
database connection). :class:`ControllerProcess` runs ``cargogate run SITE`` as a child process
that the drill can kill -9, stop and continue; it is ready when it tells the drill so over the
systemd notification protocol (``READY=1`` once its sorters' links are up), exactly as it tells
systemd on a site.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Protocol

from controller.app.services import Services
from controller.app.site import load_config
from controller.core.link import LinkState

READY_LIMIT_S = 60.0
"""How long a controller may take to start and bring its sorters' links up."""
STOP_LIMIT_S = 30.0


class DrillError(Exception):
    """The drill itself could not go on (a controller that never came up): a FAIL."""


class Controller(Protocol):
    """A controller the drill starts and stops; ``journal`` is where it journals."""

    @property
    def journal(self) -> Path: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class InProcessController:
    """The site's services on this event loop."""

    def __init__(self, site_file: Path) -> None:
        self.config = load_config(site_file)
        self.services: Services | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[object] | None = None

    @property
    def journal(self) -> Path:
        return self.config.store.journal_path

    async def start(self, linked: bool = True) -> None:
        """Build and start the services and serve; with ``linked``, return once every
        sorter's link is up."""
        services = self.services = Services(self.config)
        await services.__aenter__()
        self._stop.clear()
        self._task = asyncio.create_task(services.run(stop=self._stop), name="drill controller")
        if not linked:
            return
        deadline = time.monotonic() + READY_LIMIT_S
        while services.parts.sorters and any(
            getattr(s, "link_state", LinkState.UP) is not LinkState.UP
            for s in services.parts.sorters.values()
        ):
            if self._task.done() or time.monotonic() > deadline:
                await self.stop()
                raise DrillError("the controller's sorter links did not come up")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop serving and close every part (the journal last), as a SIGTERM does."""
        services, task = self.services, self._task
        self.services, self._task = None, None
        if services is None:
            return
        self._stop.set()
        try:
            if task is not None:
                await task
        finally:
            await services.__aexit__(None, None, None)


class ControllerProcess:
    """``cargogate run SITE`` in a child process; its log goes to ``log``."""

    def __init__(self, site_file: Path, log: Path) -> None:
        self.site_file = site_file
        self.config = load_config(site_file)
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    @property
    def journal(self) -> Path:
        return self.config.store.journal_path

    async def start(self) -> None:
        """Start the process; return once it says it is ready (its sorters' links are up)."""
        address = f"@cargogate-drill-{os.getpid()}-{secrets.token_hex(6)}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind("\0" + address[1:])
        listener.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": address}
        env.pop("WATCHDOG_USEC", None)
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from controller.app.cli import app; app()",
                "run",
                str(self.site_file),
                "--no-live",
                "--log-level",
                "warning",
                stdout=out,
                stderr=out,
                env=env,
            )
        try:
            await self._ready(listener)
        finally:
            listener.close()

    async def _ready(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        process = self.process
        assert process is not None
        try:
            async with asyncio.timeout(READY_LIMIT_S):
                while True:
                    receive = asyncio.ensure_future(loop.sock_recv(listener, 4096))
                    exited = asyncio.ensure_future(process.wait())
                    done, _ = await asyncio.wait(
                        {receive, exited}, return_when=asyncio.FIRST_COMPLETED
                    )
                    receive.cancel()
                    exited.cancel()
                    if exited in done:
                        raise DrillError(
                            f"the controller exited with code {process.returncode} before it "
                            f"was ready (log: {self.log})"
                        )
                    if b"READY=1" in receive.result().split(b"\n"):
                        return
        except TimeoutError:
            await self.kill()
            raise DrillError(f"the controller was not ready within {READY_LIMIT_S:g} s") from None

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def kill(self) -> None:
        """kill -9, and reap it."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        """SIGTERM (the service's own stop), kill -9 if it does not stop in time."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.terminate()
        try:
            async with asyncio.timeout(STOP_LIMIT_S):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
