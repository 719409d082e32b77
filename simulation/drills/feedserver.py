"""A risk feed over HTTP on loopback that a drill publishes to, takes down and brings back.

:class:`FeedServer` answers every GET with the CSV of the rows published so far (what an
upstream risk system has computed by then). ``stop`` closes the listening socket (connections
refused); ``start`` serves again on the same port.
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

HEADER = "hawb,channel,score,declared_goods,flight"


class FeedServer:
    """Use as ``async with FeedServer() as feed``; ``feed.url`` is what the site file names."""

    def __init__(self) -> None:
        self.port = 0
        self.requests = 0
        self._rows: list[str] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/results.csv"

    def publish(self, rows: list[str]) -> None:
        """Add CSV rows (``hawb,channel,score,declared_goods,flight``) to every later answer."""
        with self._lock:
            self._rows.extend(rows)

    def body(self) -> bytes:
        with self._lock:
            return ("\n".join([HEADER, *self._rows]) + "\n").encode()

    async def start(self) -> None:
        if self._httpd is None:
            await asyncio.to_thread(self._serve)

    async def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd, self._thread = None, None
        if httpd is not None and thread is not None:
            await asyncio.to_thread(_shut, httpd, thread)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _serve(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = server.body()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._httpd, self._thread = httpd, thread


def _shut(httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join()
