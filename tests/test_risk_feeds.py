"""Risk feeds and the risk book, against real files and a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from controller.core.domain import RiskChannel, RiskResult
from controller.core.ports import RiskSource
from controller.risk.book import RiskBook
from controller.risk.factory import file_feed as build_file_feed
from controller.risk.factory import http_feed as build_http_feed
from controller.risk.feeds import FileFeed, HttpFeed, RiskFeed
from controller.risk.records import FeedBatch, FeedProblem, parse_csv, parse_json
from controller.risk.settings import FileRiskFeed, HttpRiskFeed

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "feeds"
HEADER = "hawb,channel,score,declared_goods,flight"


def hawbs(batch: FeedBatch) -> list[str]:
    return [result.hawb for result in batch.results]


def result(hawb: str, channel: RiskChannel = RiskChannel.GREEN, score: float = 0.1) -> RiskResult:
    return RiskResult(hawb=hawb, channel=channel, score=score)


# --- records and parsers --------------------------------------------------------------------


def test_problem_reads_as_place_field_value_message() -> None:
    problem = FeedProblem("manifest.csv", 7, "score", repr("1.7"), "must be between 0 and 1")
    assert str(problem) == "manifest.csv line 7: score = '1.7': must be between 0 and 1"
    whole = FeedProblem("feed.json", None, "", "", "not valid JSON")
    assert str(whole) == "feed.json: not valid JSON"


def test_valid_csv_loads_every_field() -> None:
    text = "\n".join(
        [
            HEADER,
            "AB-1,GREEN,0.05,books,LH8400",
            'AB-2,red,1,"phone, charger",',
            "AB-3, Yellow ,0,,LH8401",
        ]
    )
    batch = parse_csv(text, "m.csv")
    assert batch.problems == []
    assert batch.results == [
        RiskResult("AB-1", RiskChannel.GREEN, 0.05, "books", "LH8400"),
        RiskResult("AB-2", RiskChannel.RED, 1.0, "phone, charger", ""),
        RiskResult("AB-3", RiskChannel.YELLOW, 0.0, "", "LH8401"),
    ]


def test_csv_columns_in_any_order_optional_ones_may_be_absent() -> None:
    batch = parse_csv("\ufeffScore,HAWB,Channel\r\n0.5,X1,YELLOW\r\n", "m.csv")
    assert batch.problems == []
    assert batch.results == [RiskResult("X1", RiskChannel.YELLOW, 0.5)]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            [
                {"hawb": "J1", "channel": "GREEN", "score": 0.1, "flight": "CV1"},
                {"hawb": "J2", "channel": "red", "score": 0.9, "declared_goods": "toys"},
            ],
            id="list",
        ),
        pytest.param(
            {
                "flight": "CV1",
                "results": [
                    {"hawb": "J1", "channel": "GREEN", "score": 0.1},
                    {"hawb": "J2", "channel": "red", "score": 0.9, "declared_goods": "toys"},
                ],
            },
            id="object-with-flight",
        ),
    ],
)
def test_valid_json_loads(document: object) -> None:
    batch = parse_json(json.dumps(document), "m.json")
    assert batch.problems == []
    assert batch.results[0] == RiskResult("J1", RiskChannel.GREEN, 0.1, "", "CV1")
    assert batch.results[1].channel is RiskChannel.RED
    assert batch.results[1].declared_goods == "toys"


def test_json_top_level_flight_does_not_override_a_records_own() -> None:
    text = json.dumps(
        {
            "flight": "TOP",
            "results": [{"hawb": "J1", "channel": "RED", "score": 1, "flight": "OWN"}],
        }
    )
    assert parse_json(text, "m.json").results[0].flight == "OWN"


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("C2,PURPLE,0.5,,", "channel", "channel = 'PURPLE': must be GREEN, YELLOW or RED"),
        ("C2,RED,1.7,,", "score", "score = '1.7': must be between 0 and 1"),
        ("C2,RED,-0.1,,", "score", "must be between 0 and 1"),
        ("C2,RED,high,,", "score", "score = 'high': must be a number"),
        ("C2,RED,nan,,", "score", "must be a finite number"),
        ("C2,RED,,,", "score", "score = '': is required"),
        (",RED,0.5,,", "hawb", "hawb = '': is required"),
        ("C_2,RED,0.5,,", "hawb", "may contain only letters A-Z, digits and '-'"),
        ("C2 ÄÖ,RED,0.5,,", "hawb", "may contain only letters"),
        ("C" * 36 + ",RED,0.5,,", "hawb", "must be at most 35 characters"),
        ("C2,RED,0.5", "declared_goods", "missing: the row has 3 values, the header 5"),
        ("C2,RED,0.5,a,b,c", "", "the row has 6 values, the header 5; skipped"),
    ],
)
def test_bad_csv_row_is_reported_and_the_rest_loads(row: str, field: str, message: str) -> None:
    text = "\n".join([HEADER, "C1,GREEN,0.1,,", row, "C3,YELLOW,0.3,,"]) + "\n"
    batch = parse_csv(text, "manifest.csv")
    assert hawbs(batch) == ["C1", "C3"]
    assert len(batch.problems) == 1
    problem = batch.problems[0]
    assert (problem.line, problem.field, problem.unit) == (3, field, "line")
    assert str(problem).startswith("manifest.csv line 3: ")
    assert message in str(problem)


def test_csv_line_numbers_count_blank_lines_and_multiline_values() -> None:
    text = "\n".join([HEADER, "", 'D1,GREEN,0.1,"two', 'lines",', "", "D2,RED,9,,"])
    batch = parse_csv(text, "m.csv")
    assert hawbs(batch) == ["D1"]
    assert [(p.line, p.field) for p in batch.problems] == [(6, "score")]


def test_csv_duplicate_hawb_most_severe_row_wins_and_both_lines_are_named() -> None:
    text = "\n".join([HEADER, "E1,GREEN,0.1,,", "E2,GREEN,0.1,,", "E1,RED,0.9,,"])
    batch = parse_csv(text, "m.csv")
    assert {r.hawb: r.channel for r in batch.results} == {
        "E1": RiskChannel.RED,
        "E2": RiskChannel.GREEN,
    }
    [problem] = batch.problems
    assert (problem.line, problem.field) == (4, "hawb")
    assert str(problem) == (
        "m.csv line 4: hawb = 'E1': conflicts with line 2 (GREEN 0.1); "
        "the most severe, RED 0.9 of line 4, is kept"
    )


def test_csv_unknown_column_is_reported_once_and_ignored() -> None:
    text = "hawb,channel,score,remarks\nF1,GREEN,0.1,x\nF2,RED,0.8,y\n"
    batch = parse_csv(text, "m.csv")
    assert hawbs(batch) == ["F1", "F2"]
    [problem] = batch.problems
    assert (problem.line, problem.field, problem.message) == (
        1,
        "remarks",
        "unknown column; ignored",
    )


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"hawb": "G2", "channel": "BLUE", "score": 0.5}, "channel", "must be GREEN, YELLOW"),
        ({"hawb": "G2", "channel": "RED", "score": 1.7}, "score", "score = 1.7: must be between"),
        ({"hawb": "G2", "channel": "RED", "score": "x"}, "score", "must be a number"),
        ({"hawb": "G2", "channel": "RED", "score": True}, "score", "must be a number"),
        ({"channel": "RED", "score": 0.5}, "hawb", "hawb: is required"),
        ({"hawb": "G 2", "channel": "RED", "score": 0.5}, "hawb", "may contain only"),
        ({"hawb": 12, "channel": "RED", "score": 0.5}, "hawb", "must be text"),
        ({"hawb": "G2", "score": 0.5}, "channel", "channel: is required"),
        ({"hawb": "G2", "channel": "RED", "score": 0.5, "flight": 7}, "flight", "must be text"),
        ("G2", "", "must be an object"),
    ],
)
def test_bad_json_record_is_reported_by_index_and_the_rest_loads(
    record: object, field: str, message: str
) -> None:
    records = [{"hawb": "G1", "channel": "GREEN", "score": 0.1}, record]
    records.append({"hawb": "G3", "channel": "GREEN", "score": 0.2})
    batch = parse_json(json.dumps({"results": records}), "m.json")
    assert hawbs(batch) == ["G1", "G3"]
    [problem] = batch.problems
    assert (problem.line, problem.field, problem.unit) == (2, field, "record")
    assert str(problem).startswith("m.json record 2: ")
    assert message in str(problem)


def test_json_duplicate_hawb_most_severe_record_wins() -> None:
    records = [
        {"hawb": "H1", "channel": "GREEN", "score": 0.1},
        {"hawb": "H1", "channel": "RED", "score": 0.9},
    ]
    batch = parse_json(json.dumps(records), "m.json")
    assert batch.results == [RiskResult("H1", RiskChannel.RED, 0.9)]
    assert [str(p) for p in batch.problems] == [
        "m.json record 2: hawb = 'H1': conflicts with record 1 (GREEN 0.1); "
        "the most severe, RED 0.9 of record 2, is kept"
    ]


def test_json_unknown_fields_are_reported_once_per_name() -> None:
    records = [
        {"hawb": "K1", "channel": "GREEN", "score": 0.1, "note": "a"},
        {"hawb": "K2", "channel": "GREEN", "score": 0.1, "note": "b"},
    ]
    batch = parse_json(json.dumps({"results": records, "sent_at": "now"}), "m.json")
    assert hawbs(batch) == ["K1", "K2"]
    assert sorted((p.field, p.line) for p in batch.problems) == [("note", 1), ("sent_at", None)]


@pytest.mark.parametrize(
    "text",
    ["", "   \n", "hello world", "hawb;channel;score\nA;GREEN;0.1\n", 'hawb,channel,score\nA,"x'],
)
def test_csv_that_is_not_a_feed_is_one_problem(text: str) -> None:
    batch = parse_csv(text, "m.csv")
    assert batch.results == []
    assert len(batch.problems) == 1


@pytest.mark.parametrize(
    "text", ["", "{", "not json", "42", '{"results": 3}', '{"flight": "X"}', "[" * 100_000]
)
def test_json_that_is_not_a_feed_is_one_problem(text: str) -> None:
    batch = parse_json(text, "m.json")
    assert batch.results == []
    assert len(batch.problems) == 1


@pytest.mark.parametrize("name", ["example-manifest-LH8400.csv", "example-manifest-CV7312.json"])
async def test_example_feeds_load_cleanly(name: str) -> None:
    batch = await FileFeed(EXAMPLES / name).fetch()
    assert batch.problems == []
    assert len(batch.results) >= 4
    assert {r.channel for r in batch.results} == set(RiskChannel)


# --- file feed ------------------------------------------------------------------------------


def write(path: Path, text: str, mtime_ns: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def csv_feed(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


async def test_directory_feed_loads_new_and_changed_files_only(tmp_path: Path) -> None:
    base = 1_700_000_000 * 10**9
    write(tmp_path / "a.csv", csv_feed("A1,GREEN,0.1,,"), base)
    feed = FileFeed(tmp_path)

    assert hawbs(await feed.fetch()) == ["A1"]
    assert await feed.fetch() == FeedBatch()  # unchanged: not reloaded

    records = [{"hawb": "B1", "channel": "RED", "score": 0.9}]
    write(tmp_path / "b.json", json.dumps({"flight": "LH1", "results": records}), base + 10**9)
    batch = await feed.fetch()
    assert batch.results == [RiskResult("B1", RiskChannel.RED, 0.9, "", "LH1")]

    write(tmp_path / "a.csv", csv_feed("A1,RED,0.8,,", "A2,GREEN,0.1,,"), base + 2 * 10**9)
    assert hawbs(await feed.fetch()) == ["A1", "A2"]
    assert await feed.fetch() == FeedBatch()

    os.utime(tmp_path / "b.json", ns=(base + 3 * 10**9, base + 3 * 10**9))  # touched: reloaded
    assert hawbs(await feed.fetch()) == ["B1"]


async def test_directory_feed_ignores_hidden_and_other_files(tmp_path: Path) -> None:
    write(tmp_path / ".partial.csv", csv_feed("X1,GREEN,0.1,,"))
    write(tmp_path / "notes.txt", "hello")
    write(tmp_path / "m.csv.tmp", csv_feed("X2,GREEN,0.1,,"))
    (tmp_path / "sub.csv").mkdir()
    write(tmp_path / "ok.CSV", csv_feed("X3,GREEN,0.1,,"))
    assert await FileFeed(tmp_path).fetch() == FeedBatch(
        [RiskResult("X3", RiskChannel.GREEN, 0.1)], []
    )


@pytest.mark.parametrize("red_first", [True, False])
async def test_directory_feed_keeps_the_most_severe_of_two_files(
    tmp_path: Path, red_first: bool
) -> None:
    base = 1_700_000_000 * 10**9
    older, newer = (
        ("N1,RED,0.9,,", "N1,GREEN,0.1,,") if red_first else ("N1,GREEN,0.1,,", "N1,RED,0.9,,")
    )
    write(tmp_path / "z-old.csv", csv_feed(older), base)
    write(tmp_path / "a-new.csv", csv_feed(newer), base + 10**9)
    book = RiskBook()
    book.add(await FileFeed(tmp_path).fetch())
    assert book.get("N1") == RiskResult("N1", RiskChannel.RED, 0.9)


async def test_file_feed_reports_bad_rows_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    write(path, csv_feed("M1,GREEN,0.1,,", "M2,GREEN,0.1,,", "M3,GREEN,1.7,,"))
    batch = await FileFeed(path).fetch()
    assert hawbs(batch) == ["M1", "M2"]
    assert [str(p) for p in batch.problems] == [
        f"{path} line 4: score = '1.7': must be between 0 and 1"
    ]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.csv", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary"),
        ("garbage.json", b"\x00\xff\xfe\xfd"),
        ("garbage.json", b"this is not json at all"),
        ("garbage.csv", b"lorem ipsum dolor\nsit amet\n"),
        ("empty.csv", b""),
    ],
)
async def test_garbage_file_is_one_problem_and_loads_nothing(
    tmp_path: Path, name: str, content: bytes
) -> None:
    (tmp_path / name).write_bytes(content)
    write(tmp_path / "good.csv", csv_feed("OK1,GREEN,0.1,,"))
    batch = await FileFeed(tmp_path).fetch()
    assert hawbs(batch) == ["OK1"]
    [problem] = batch.problems
    assert problem.source == str(tmp_path / name)


async def test_file_feed_problems_for_missing_path_and_oversized_file(tmp_path: Path) -> None:
    missing = await FileFeed(tmp_path / "nope").fetch()
    assert [p.message for p in missing.problems] == ["not found"]

    write(tmp_path / "big.csv", csv_feed(*(f"B{i},GREEN,0.1,," for i in range(100))))
    big = await FileFeed(tmp_path / "big.csv", max_bytes=100).fetch()
    assert big.results == []
    assert "over the 100 byte limit" in big.problems[0].message


async def test_file_feed_picks_up_a_directory_that_appears_later(tmp_path: Path) -> None:
    root = tmp_path / "feeds"
    feed = FileFeed(root)
    assert len((await feed.fetch()).problems) == 1
    root.mkdir()
    write(root / "m.csv", csv_feed("L1,GREEN,0.1,,"))
    assert await feed.fetch() == FeedBatch([RiskResult("L1", RiskChannel.GREEN, 0.1)], [])


# --- HTTP feed against a loopback server ----------------------------------------------------

Reply = tuple[int, str, bytes, dict[str, str]]


@dataclass
class FeedServer:
    """A real HTTP server in a thread; ``routes`` maps a path to a function of the query."""

    base: str = ""
    routes: dict[str, Callable[[dict[str, str]], Reply]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return self.base + path

    def queries(self, path: str) -> list[dict[str, str]]:
        return [query for p, query, _ in self.requests if p == path]


def json_reply(document: object, headers: dict[str, str] | None = None) -> Reply:
    return 200, "application/json; charset=utf-8", json.dumps(document).encode(), headers or {}


@pytest.fixture
def server() -> Iterator[FeedServer]:
    state = FeedServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            state.requests.append((parts.path, query, dict(self.headers)))
            route = state.routes.get(parts.path)
            reply: Reply = (404, "text/plain", b"not found", {})
            if route is not None:
                reply = route(query)
            status, ctype, body, headers = reply
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


async def test_http_feed_incremental_cursor(server: FeedServer) -> None:
    pages = {
        "": {
            "cursor": "c1",
            "flight": "LH1",
            "results": [{"hawb": "P1", "channel": "GREEN", "score": 0.1}],
        },
        "c1": {"cursor": "c2", "results": [{"hawb": "P2", "channel": "RED", "score": 0.9}]},
        "c2": {"cursor": "c2", "results": []},
    }
    server.routes["/risk"] = lambda q: json_reply(pages[q.get("cursor", "")])
    feed = HttpFeed(server.url("/risk?site=HUB1"), timeout_s=2)

    first = await feed.fetch()
    assert first.results == [RiskResult("P1", RiskChannel.GREEN, 0.1, "", "LH1")]
    assert feed.cursor == "c1"
    assert hawbs(await feed.fetch()) == ["P2"]
    assert await feed.fetch() == FeedBatch()
    assert server.queries("/risk") == [
        {"site": "HUB1"},
        {"site": "HUB1", "cursor": "c1"},
        {"site": "HUB1", "cursor": "c2"},
    ]


async def test_http_feed_reads_csv_by_content_type(server: FeedServer) -> None:
    body = csv_feed("Q1,YELLOW,0.4,toys,", "Q2,RED,7,,").encode()
    server.routes["/m.csv"] = lambda q: (200, "text/csv; charset=utf-8", body, {})
    batch = await HttpFeed(server.url("/m.csv")).fetch()
    assert hawbs(batch) == ["Q1"]
    assert [str(p) for p in batch.problems] == [
        f"{server.url('/m.csv')} line 3: score = '7': must be between 0 and 1"
    ]


async def test_http_feed_does_not_hand_out_an_unchanged_answer_twice(server: FeedServer) -> None:
    records = [{"hawb": "R1", "channel": "GREEN", "score": 0.1}]
    server.routes["/plain"] = lambda q: json_reply(records)
    server.routes["/etag"] = lambda q: json_reply(records, {"ETag": '"v1"'})
    plain, tagged = HttpFeed(server.url("/plain")), HttpFeed(server.url("/etag"))
    for feed in (plain, tagged):
        assert hawbs(await feed.fetch()) == ["R1"]
        assert await feed.fetch() == FeedBatch()
    etag_headers = [headers for path, _, headers in server.requests if path == "/etag"]
    assert "If-None-Match" not in etag_headers[0]
    assert etag_headers[1]["If-None-Match"] == '"v1"'


async def test_http_feed_not_modified_is_nothing_new(server: FeedServer) -> None:
    server.routes["/nm"] = lambda q: (304, "application/json", b"", {})
    assert await HttpFeed(server.url("/nm")).fetch() == FeedBatch()


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/risk"


@pytest.mark.parametrize(
    ("path", "reply", "message"),
    [
        ("/e500", (500, "text/plain", b"boom", {}), "HTTP 500 Internal Server Error"),
        ("/e404", None, "HTTP 404 Not Found"),
        ("/html", (200, "text/html", b"<html/>", {}), "content type 'text/html' is neither"),
        ("/bad", (200, "application/json", b"{oops", {}), "not valid JSON"),
        ("/latin", (200, "text/csv", b"\xff\xfe", {}), "not utf-8 text"),
    ],
)
async def test_http_feed_failures_are_one_problem(
    server: FeedServer, path: str, reply: Reply | None, message: str
) -> None:
    if reply is not None:
        server.routes[path] = lambda q: reply
    batch = await HttpFeed(server.url(path), timeout_s=2).fetch()
    assert batch.results == []
    [problem] = batch.problems
    assert problem.source == server.url(path)
    assert message in problem.message


async def test_http_feed_connection_refused_is_a_problem() -> None:
    url = refused_url()
    batch = await HttpFeed(url, timeout_s=2).fetch()
    [problem] = batch.problems
    assert problem.source == url
    assert problem.message.startswith("request failed")


async def test_http_feed_timeout_is_a_problem(server: FeedServer) -> None:
    def slow(query: dict[str, str]) -> Reply:
        server.release.wait(10)
        return json_reply([])

    server.routes["/slow"] = slow
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await HttpFeed(server.url("/slow"), timeout_s=0.2).fetch()
    assert loop.time() - started < 2
    [problem] = batch.problems
    assert problem.message == "no complete answer within 0.2 s"


@pytest.mark.parametrize("url", ["ftp://host/risk", "http://", "risk.json"])
def test_http_feed_refuses_an_unusable_url(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        HttpFeed(url)


async def test_http_feed_keeps_credentials_out_of_problems() -> None:
    port = urlsplit(refused_url()).port
    batch = await HttpFeed(f"http://user:secret@127.0.0.1:{port}/r", timeout_s=2).fetch()
    assert "secret" not in str(batch.problems[0])


# --- the risk book --------------------------------------------------------------------------


async def test_book_lookup_get_len_and_counts() -> None:
    book = RiskBook()
    source: RiskSource = book
    added = book.add(
        FeedBatch([result("S1"), result("S2", RiskChannel.RED, 0.9), result("S3")], [])
    )
    assert added == 3
    assert len(book) == 3
    assert "S2" in book
    assert book.get("S2") == result("S2", RiskChannel.RED, 0.9)
    assert await source.lookup("S1") == result("S1")
    assert await source.lookup("UNKNOWN") is None
    assert book.get("s1") is None
    assert book.counts() == {RiskChannel.GREEN: 2, RiskChannel.YELLOW: 0, RiskChannel.RED: 1}

    book.add([result("S1", RiskChannel.YELLOW, 0.5)])
    assert len(book) == 3
    assert book.counts() == {RiskChannel.GREEN: 1, RiskChannel.YELLOW: 1, RiskChannel.RED: 1}


def test_book_evicts_the_results_loaded_longest_ago() -> None:
    book = RiskBook(max_entries=3)
    book.add([result("T1"), result("T2"), result("T3")])
    book.add([result("T1", RiskChannel.RED)])  # reloaded: now the newest
    book.add([result("T4"), result("T5")])
    assert [h for h in ("T1", "T2", "T3", "T4", "T5") if h in book] == ["T1", "T4", "T5"]
    assert book.evicted == 2
    assert book.counts() == {RiskChannel.GREEN: 2, RiskChannel.YELLOW: 0, RiskChannel.RED: 1}
    with pytest.raises(ValueError, match="max_entries"):
        RiskBook(max_entries=0)


class BrokenFeed:
    async def fetch(self) -> FeedBatch:
        raise RuntimeError("bug in a feed")


async def test_refresh_logs_each_problem_once_and_survives_a_broken_feed(
    tmp_path: Path, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "m.csv", csv_feed("U1,GREEN,0.1,,", "U2,GREEN,2,,"))
    server.routes["/down"] = lambda q: (500, "text/plain", b"", {})
    feeds: list[RiskFeed] = [
        FileFeed(tmp_path),
        HttpFeed(server.url("/down"), timeout_s=2),
        BrokenFeed(),
    ]
    book = RiskBook()

    with caplog.at_level(logging.WARNING, logger="controller.risk"):
        first = await book.refresh_once(feeds)
        second = await book.refresh_once(feeds)

    assert book.get("U1") is not None
    assert len(first) == 3
    assert [p.message for p in second] == [
        "HTTP 500 Internal Server Error",
        "fetch failed: RuntimeError: bug in a feed",
    ]
    logged = [r.getMessage() for r in caplog.records if "risk feed problem" in r.getMessage()]
    assert len(logged) == 3
    assert any("score = '2': must be between 0 and 1" in m for m in logged)
    assert any("HTTP 500" in m for m in logged)
    assert any("RuntimeError: bug in a feed" in m for m in logged)


class CountingFeed:
    """Wraps a feed; ``polled`` is set once it has been fetched ``until`` times."""

    def __init__(self, inner: FileFeed, until: int) -> None:
        self.inner, self.until, self.calls = inner, until, 0
        self.polled = asyncio.Event()

    async def fetch(self) -> FeedBatch:
        self.calls += 1
        if self.calls >= self.until:
            self.polled.set()
        return await self.inner.fetch()


async def test_run_polls_until_cancelled(tmp_path: Path) -> None:
    book = RiskBook()
    feed = CountingFeed(FileFeed(tmp_path), until=3)
    write(tmp_path / "m.csv", csv_feed("V1,RED,0.9,,"))
    task = asyncio.create_task(book.run([feed], poll_s=0.01))
    try:
        await asyncio.wait_for(feed.polled.wait(), timeout=5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert book.get("V1") == RiskResult("V1", RiskChannel.RED, 0.9)
    assert book.counts()[RiskChannel.RED] == 1
    with pytest.raises(ValueError, match="poll_s"):
        await book.run([feed], poll_s=0)


async def test_the_factories_build_feeds_from_their_settings(
    tmp_path: Path, server: FeedServer
) -> None:
    write(tmp_path / "m.csv", csv_feed("W1,GREEN,0.1,,"))
    server.routes["/w"] = lambda q: json_reply([{"hawb": "W2", "channel": "RED", "score": 1}])
    file_feed = build_file_feed(FileRiskFeed(type="file", path=tmp_path), None)
    settings = HttpRiskFeed(type="http", url=server.url("/w"), timeout_s=1)
    http_feed = build_http_feed(settings, None)
    assert isinstance(file_feed, FileFeed)
    assert isinstance(http_feed, HttpFeed)
    assert http_feed.timeout_s == 1
    assert hawbs(await file_feed.fetch()) == ["W1"]
    assert hawbs(await http_feed.fetch()) == ["W2"]
