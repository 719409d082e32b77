"""Serving the console from the controller's own event loop.

:class:`ConsoleServer` is an async context manager: entering binds the socket (so a port
in use fails the start-up with a clear error, and port 0 picks a free one), starts uvicorn
and the live-stream broadcaster as tasks on the running loop; leaving stops both. Uvicorn's
own signal handling is left out: the controller's shutdown owns SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI

from controller.console.settings import ConsoleSettings

log = logging.getLogger(__name__)

STOP_LIMIT_S = 5.0


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the controller handles signals; uvicorn must not replace its handlers


class ConsoleServer:
    """Uvicorn serving ``app`` per ``settings``, plus ``background`` (the broadcaster)."""

    def __init__(self, app: FastAPI, settings: ConsoleSettings) -> None:
        self.app = app
        self.settings = settings
        self.port = settings.port
        self._server: _InLoopServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        host = self.settings.host
        shown = "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host
        return f"{scheme}://{shown}:{self.port}"

    async def __aenter__(self) -> Self:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets it knows are TCP, and
        # uvicorn writes headers and body apart (40 ms of delayed ACK on every answer)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.host, s.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"console cannot listen on {s.host}:{s.port}: {exc.strerror}") from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
            ssl_keyfile=str(s.tls_key) if s.tls_key else None,
            timeout_graceful_shutdown=1,
            ws="none",
        )
        self._server = server = _InLoopServer(config)
        broadcaster = self.app.state.ctx.broadcaster
        self._tasks = [
            asyncio.create_task(server.serve(sockets=[sock]), name="console"),
            asyncio.create_task(broadcaster.run(), name="console live"),
        ]
        while not server.started and not self._tasks[0].done():  # noqa: ASYNC110 (uvicorn has only a flag)
            await asyncio.sleep(0.01)
        if self._tasks[0].done():
            failed = self._tasks[0]
            cause = None if failed.cancelled() else failed.exception()
            await self._stop()
            why = f": {type(cause).__name__}: {cause}" if cause else ""
            raise RuntimeError(f"console did not start on {s.host}:{self.port}{why}") from cause
        log.info("console at %s", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        self.app.state.ctx.broadcaster.close()  # open live streams end before uvicorn waits
        if self._server is not None:
            self._server.should_exit = True
        if not self._tasks:
            return
        serving, *others = self._tasks
        for task in others:
            task.cancel()
        try:
            async with asyncio.timeout(STOP_LIMIT_S):
                await asyncio.gather(serving, return_exceptions=True)
        except TimeoutError:
            serving.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._tasks = []
