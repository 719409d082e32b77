"""The risk feed kits: the file feed over a folder of CSV manifests and over a folder of JSON
manifests, and the HTTP feed against a real HTTP server on loopback that pages by cursor."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import controller.risk
from controller.conformance.harness import ManifestRecord, RiskContext
from controller.risk.factory import file_feed, http_feed
from controller.risk.feeds import FileFeed, HttpFeed
from controller.risk.settings import FileRiskFeed, HttpRiskFeed

KITS = ("file-csv", "file-json", "http")
FIELDS = ("hawb", "channel", "score", "declared_goods", "flight")


@dataclass(frozen=True)
class RiskKit:
    """One of this project's risk feeds: ``file-csv``, ``file-json`` or ``http``."""

    kind: str

    @property
    def checklist(self) -> Path:
        adapter = self.kind.split("-")[0]
        return Path(controller.risk.__file__).parent / f"risk-{adapter}.conformance.toml"

    def open(self, ctx: RiskContext) -> AbstractAsyncContextManager[FileHarness | HttpHarness]:
        if self.kind == "http":
            return open_http(ctx)
        return open_file(ctx, self.kind.removeprefix("file-"))


def csv_text(records: Sequence[ManifestRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows((r.hawb, r.channel, r.score, r.declared_goods, r.flight) for r in records)
    return out.getvalue()


def json_record(record: ManifestRecord) -> dict[str, object]:
    """A record as a JSON manifest carries it: a score that reads as a number is one."""
    score: object = record.score
    with contextlib.suppress(ValueError):
        score = float(record.score)
    item: dict[str, object] = {"hawb": record.hawb, "channel": record.channel, "score": score}
    if record.declared_goods:
        item["declared_goods"] = record.declared_goods
    if record.flight:
        item["flight"] = record.flight
    return item


# --- a folder of manifest files ---------------------------------------------------------------


@dataclass
class FileHarness:
    """A producer dropping one manifest file per publish (written hidden, then renamed)."""

    feed: FileFeed
    folder: Path
    form: str
    files: Iterator[int] = field(default_factory=itertools.count)

    async def publish(self, records: Sequence[ManifestRecord]) -> list[int]:
        path = self.folder / f"manifest-{next(self.files):04d}.{self.form}"
        if self.form == "csv":
            text, places = csv_text(records), [2 + i for i in range(len(records))]
        else:
            text = json.dumps({"results": [json_record(r) for r in records]})
            places = [1 + i for i in range(len(records))]
        await asyncio.to_thread(_write, path, text)
        return places

    async def outage(self, down: bool) -> None:
        """The folder goes away (a share unmounted) and comes back."""
        away = self.folder.with_name(self.folder.name + ".away")
        source, target = (self.folder, away) if down else (away, self.folder)
        await asyncio.to_thread(source.rename, target)


def _write(path: Path, text: str) -> None:
    hidden = path.with_name(f".{path.name}")
    hidden.write_text(text, encoding="utf-8")
    hidden.replace(path)


@asynccontextmanager
async def open_file(ctx: RiskContext, form: str) -> AsyncIterator[FileHarness]:
    folder = ctx.folder / "manifests"
    folder.mkdir()
    yield FileHarness(file_feed(FileRiskFeed(type="file", path=folder), None), folder, form)


# --- a manifest service over HTTP ------------------------------------------------------------


@dataclass
class ManifestService:
    """Pages of records; ``?cursor=N`` answers the pages after the N-th, with the new cursor."""

    pages: list[list[ManifestRecord]] = field(default_factory=list)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, cursor: str | None) -> tuple[int, bytes]:
        with self.lock:
            if self.down:
                return 503, b"manifest service down for maintenance"
            seen = int(cursor) if cursor and cursor.isdigit() else 0
            records = [r for page in self.pages[seen:] for r in page]
            document = {
                "cursor": str(len(self.pages)),
                "results": [json_record(r) for r in records],
            }
        return 200, json.dumps(document).encode()


@dataclass
class HttpHarness:
    feed: HttpFeed
    service: ManifestService

    async def publish(self, records: Sequence[ManifestRecord]) -> list[int]:
        with self.service.lock:
            self.service.pages.append(list(records))
        return [1 + i for i in range(len(records))]  # the next answer holds this page alone

    async def outage(self, down: bool) -> None:
        with self.service.lock:
            self.service.down = down


@asynccontextmanager
async def open_http(ctx: RiskContext) -> AsyncIterator[HttpHarness]:
    service = ManifestService()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            status, body = service.answer(query.get("cursor", [None])[-1])
            kind = "application/json" if status == 200 else "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/manifests"
    try:
        yield HttpHarness(
            http_feed(HttpRiskFeed(type="http", url=url, timeout_s=5.0), None), service
        )
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join(timeout=5)
