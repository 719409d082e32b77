"""Risk feeds: where risk results come from. Each feed hands out what is new on each fetch.

Formats are described in :mod:`controller.risk.records`. A feed never raises for bad data or
an unreachable source: those come back as :class:`FeedProblem` entries in the batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from controller.core.link import LinkState
from controller.risk.records import FeedBatch, FeedProblem, parse_csv, parse_json_page

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
FEED_SUFFIXES = frozenset({".csv", ".json"})
_JSON_TYPES = frozenset({"application/json", "text/json"})
_CSV_TYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})


class RiskFeed(Protocol):
    async def fetch(self) -> FeedBatch:
        """Results and problems that are new since the previous fetch (everything on the
        first). Never raises for bad data or an unreachable source; does not block the loop."""
        ...


def _problem(source: str, message: str) -> FeedBatch:
    return FeedBatch([], [FeedProblem(source, None, "", "", message)])


def _decode(data: bytes, source: str, charset: str | None = None) -> str | FeedBatch:
    """The text of ``data`` (UTF-8 unless ``charset`` says otherwise), or a problem batch."""
    encoding = charset or "utf-8"
    if encoding.lower().replace("_", "-") in {"utf-8", "utf8"}:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except LookupError:
        return _problem(source, f"unknown character set {charset!r}")
    except UnicodeDecodeError as exc:
        return _problem(
            source, f"not {encoding.removesuffix('-sig')} text: {exc.reason} at byte {exc.start}"
        )


# --- files ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    """What tells a file version from the next: a rewrite in place or a rename changes it."""

    mtime_ns: int
    size: int
    inode: int


def _load_file(path: Path, size: int, max_bytes: int) -> tuple[FeedBatch, bool]:
    """Blocking: parse one file. The flag is True when it could not be read (try again)."""
    source = str(path)
    if size > max_bytes:
        message = f"file is {size} bytes, over the {max_bytes} byte limit; skipped"
        return _problem(source, message), False
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _problem(source, f"cannot read: {exc.strerror or exc}"), True
    text = _decode(data, source)
    del data  # the text alone while parsing: a 64 MB manifest should not cost 64 MB more
    if isinstance(text, FeedBatch):
        return text, False
    if path.suffix.lower() == ".json":
        return parse_json_page(text, source)[0], False
    return parse_csv(text, source), False


def _scan(
    root: Path, seen: dict[Path, _Signature], max_bytes: int
) -> tuple[FeedBatch, dict[Path, _Signature]]:
    """Blocking: load the files under ``root`` that are new or changed since ``seen``."""
    try:
        if root.is_dir():
            candidates = [
                Path(entry.path)
                for entry in os.scandir(root)
                if entry.is_file()
                and not entry.name.startswith(".")
                and Path(entry.name).suffix.lower() in FEED_SUFFIXES
            ]
        elif root.exists():
            if root.suffix.lower() not in FEED_SUFFIXES:
                return _problem(str(root), "unknown feed format; expected a .csv or .json file"), {}
            candidates = [root]
        else:
            return _problem(str(root), "not found"), {}
    except OSError as exc:
        return _problem(str(root), f"cannot list: {exc.strerror or exc}"), {}

    now_seen: dict[Path, _Signature] = {}
    changed: list[tuple[int, str, Path, int]] = []
    problems: list[FeedProblem] = []
    for path in candidates:
        try:
            st = path.stat()
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                problems.append(FeedProblem(str(path), None, "", "", f"cannot stat: {exc}"))
            continue
        signature = _Signature(st.st_mtime_ns, st.st_size, st.st_ino)
        now_seen[path] = signature
        if seen.get(path) != signature:
            changed.append((st.st_mtime_ns, path.name, path, st.st_size))

    batches = [FeedBatch([], problems)]
    for _, _, path, size in sorted(changed):
        batch, retry = _load_file(path, size, max_bytes)
        if retry:
            del now_seen[path]
        batches.append(batch)
    return FeedBatch.merge(batches), now_seen


class FileFeed:
    """A manifest file, or a directory of ``*.csv`` / ``*.json`` manifest files.

    A file is (re)loaded when it is new or its mtime, size or inode changed; an unchanged file
    is not read again. Within one fetch, files load oldest first; where two name one HAWB with
    different results the risk book keeps the most severe, whichever is newer. Hidden files
    (``.name``) and other suffixes are ignored, so a producer should write under a temporary
    name and rename into place. A deleted file is forgotten (its results stay in the book).
    All file access runs in a worker thread.
    """

    def __init__(self, path: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._seen: dict[Path, _Signature] = {}
        self._lock = asyncio.Lock()
        self.link_state = LinkState.CONNECTING
        """Down while the path cannot be listed, degraded while some file cannot be read."""

    def __repr__(self) -> str:
        return f"FileFeed({str(self.path)!r})"

    async def fetch(self) -> FeedBatch:
        async with self._lock:
            batch, seen = await asyncio.to_thread(
                _scan, self.path, dict(self._seen), self.max_bytes
            )
            self._seen = seen
            whole = {p.source for p in batch.problems if p.line is None}
            self.link_state = (
                LinkState.DOWN
                if str(self.path) in whole
                else LinkState.DEGRADED
                if whole
                else LinkState.UP
            )
            return batch


# --- HTTP -----------------------------------------------------------------------------------


def _redact(url: str) -> str:
    """``url`` without user:password, fit for logs."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return str(parsed.copy_with(userinfo=b"")) if parsed.userinfo else url


@dataclass(frozen=True, slots=True)
class _Answer:
    """The previous good answer: the cursor its request sent, its ETag, its body's hash."""

    cursor: str | None
    etag: str | None
    digest: bytes


class HttpFeed:
    """GETs ``url`` on each fetch; the answer is JSON or CSV, told apart by its content type.

    Incremental: when a JSON answer is an object with ``cursor``, the next request carries
    ``?cursor=<value>`` and the server should send only what is newer. An answer without a
    cursor leaves the cursor as it was. Without a cursor the feed still avoids handing out the
    same data twice: it sends ``If-None-Match`` when the server gave an ETag (304 = nothing
    new), and an answer identical to the previous one for the same request yields nothing.

    ``timeout_s`` bounds the whole request. HTTP errors, timeouts, refused connections,
    answers over ``max_bytes`` and unknown content types come back as one problem whose source
    is the URL (credentials removed). Pass ``client`` to share a connection pool (the caller
    closes it); otherwise each fetch uses a short-lived client.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        *,
        client: httpx.AsyncClient | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a usable URL {url!r}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) URL with a host: {_redact(url)!r}")
        self.url = url
        self._url = parsed
        self.source = _redact(url)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._client = client
        self._cursor: str | None = None
        self._last: _Answer | None = None
        self._lock = asyncio.Lock()
        self.link_state = LinkState.CONNECTING
        """Up after an answer the feed could use, down after a failed or refused request."""

    def __repr__(self) -> str:
        return f"HttpFeed({self.source!r})"

    @property
    def cursor(self) -> str | None:
        """The cursor the next request will send, if any."""
        return self._cursor

    async def fetch(self) -> FeedBatch:
        async with self._lock:
            batch = await self._fetch_within()
            failed = any(p.line is None and p.source == self.source for p in batch.problems)
            self.link_state = LinkState.DOWN if failed else LinkState.UP
            return batch

    async def _fetch_within(self) -> FeedBatch:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch()
        except (TimeoutError, httpx.TimeoutException):
            return _problem(self.source, f"no complete answer within {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            return _problem(self.source, f"request failed: {detail}")

    def _open_client(self) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        if self._client is not None:
            return nullcontext(self._client)
        return httpx.AsyncClient(timeout=self.timeout_s)

    async def _fetch(self) -> FeedBatch:
        sent_cursor = self._cursor
        url = self._url
        if sent_cursor is not None:
            url = url.copy_merge_params({"cursor": sent_cursor})
        headers = {"Accept": "application/json, text/csv;q=0.9"}
        last = self._last
        if last is not None and last.cursor == sent_cursor and last.etag:
            headers["If-None-Match"] = last.etag
        async with (
            self._open_client() as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code in (204, 304):
                return FeedBatch()
            if response.status_code != 200:
                status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
                return _problem(self.source, status)
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            is_json = media_type in _JSON_TYPES or media_type.endswith("+json")
            if not is_json and media_type not in _CSV_TYPES:
                shown = media_type or "(none)"
                return _problem(self.source, f"content type {shown!r} is neither JSON nor CSV")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    return _problem(self.source, f"answer over the {self.max_bytes} byte limit")
            charset = response.charset_encoding
            etag = response.headers.get("etag")

        digest = hashlib.sha256(body).digest()
        if last is not None and last.cursor == sent_cursor and last.digest == digest:
            return FeedBatch()
        self._last = _Answer(sent_cursor, etag, digest)
        # a large answer takes seconds to parse: off the event loop, as files are
        batch, cursor = await asyncio.to_thread(
            _parse_answer, bytes(body), self.source, charset, is_json
        )
        if cursor is not None:
            self._cursor = cursor
        return batch


def _parse_answer(
    body: bytes, source: str, charset: str | None, is_json: bool
) -> tuple[FeedBatch, str | None]:
    """Blocking: decode and parse one HTTP answer; also its cursor (JSON only)."""
    text = _decode(body, source, charset)
    del body
    if isinstance(text, FeedBatch):
        return text, None
    if not is_json:
        return parse_csv(text, source), None
    return parse_json_page(text, source)
