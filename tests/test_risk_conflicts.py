"""Conflicting risk results for one HAWB: the most severe is kept, wherever the two came from
(one file, two files of a feed, two feeds, two fetches), and a conflict alarm names both.

Real files, a real HTTP server on loopback, the real alarm board and journal."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from controller.alarms import Alarms
from controller.app.services import Services
from controller.core.domain import RiskChannel, RiskResult
from controller.risk.book import ALARMS_PER_LOAD, DETAILED_PER_LOAD, RiskBook
from controller.risk.feeds import FileFeed, HttpFeed, RiskFeed
from controller.risk.records import Conflict, FeedBatch, parse_csv, parse_json
from controller.risk.settings import FileRiskFeed
from controller.store.read import read_entries
from tests.test_risk_feeds import HEADER, FeedServer, csv_feed, server, write
from tests.test_site import demo_config

__all__ = ["server"]  # the loopback HTTP server fixture

GREEN, YELLOW, RED = RiskChannel.GREEN, RiskChannel.YELLOW, RiskChannel.RED
BASE_NS = 1_700_000_000 * 10**9


class Board:
    """The real alarm board (no journal): what a site's alarms would show."""

    def __init__(self) -> None:
        self.alarms = Alarms(None, lambda: 0.0)

    def conflicts(self) -> dict[str, str]:
        return {
            source: alarm.message
            for source, alarm in self.alarms.active.items()
            if source.startswith("risk/conflict")
        }


# --- within one file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        pytest.param("RED,0.9", "GREEN,0.1", (RED, 0.9), id="later-green-cannot-downgrade-red"),
        pytest.param("GREEN,0.1", "RED,0.9", (RED, 0.9), id="later-red-upgrades"),
        pytest.param("YELLOW,0.4", "GREEN,0.95", (YELLOW, 0.4), id="channel-before-score"),
        pytest.param("YELLOW,0.6", "YELLOW,0.4", (YELLOW, 0.6), id="same-channel-higher-score"),
        pytest.param("YELLOW,0.4", "YELLOW,0.6", (YELLOW, 0.6), id="same-channel-later-higher"),
    ],
)
def test_csv_conflict_keeps_the_most_severe(
    first: str, second: str, kept: tuple[RiskChannel, float]
) -> None:
    text = csv_feed(f"E1,{first},,", "E2,GREEN,0.1,,", f"E1,{second},,")
    batch = parse_csv(text, "m.csv")
    by_hawb = {r.hawb: (r.channel, r.score) for r in batch.results}
    assert by_hawb == {"E1": kept, "E2": (GREEN, 0.1)}
    [problem] = batch.problems
    assert (problem.line, problem.field, problem.value) == (4, "hawb", "'E1'")
    assert "conflicts with line 2" in problem.message
    assert f"{kept[0].value} {kept[1]!r}" in problem.message
    [conflict] = batch.conflicts
    assert conflict.hawb == "E1"
    assert (conflict.kept.channel, conflict.kept.score) == kept
    assert {conflict.kept_from, conflict.other_from} == {"m.csv line 2", "m.csv line 4"}


def test_json_conflict_keeps_the_most_severe() -> None:
    records = [
        {"hawb": "H1", "channel": "RED", "score": 0.7},
        {"hawb": "H1", "channel": "GREEN", "score": 0.05},
    ]
    batch = parse_json(json.dumps(records), "m.json")
    assert batch.results == [RiskResult("H1", RED, 0.7)]
    [problem] = batch.problems
    assert str(problem).startswith("m.json record 2: hawb = 'H1': conflicts with record 1")
    assert [c.kept_from for c in batch.conflicts] == ["m.json record 1"]


def test_identical_repeat_in_a_file_is_reported_but_is_no_conflict() -> None:
    batch = parse_csv(csv_feed("E1,RED,0.9,x,F1", "E1,red, 0.9 , x ,F1"), "m.csv")
    assert batch.results == [RiskResult("E1", RED, 0.9, "x", "F1")]
    assert [str(p) for p in batch.problems] == [
        "m.csv line 3: hawb = 'E1': repeats line 2; ignored"
    ]
    assert batch.conflicts == []
    board = Board()
    RiskBook(alarms=board.alarms).add(batch)
    assert board.conflicts() == {}


def test_a_difference_in_declared_goods_alone_is_a_conflict_and_the_first_stays() -> None:
    batch = parse_csv(csv_feed("E1,RED,0.9,phones,", "E1,RED,0.9,books,"), "m.csv")
    assert batch.results == [RiskResult("E1", RED, 0.9, "phones")]
    [conflict] = batch.conflicts
    assert "phones" in str(conflict)
    assert "books" in str(conflict)


async def test_conflict_in_one_file_raises_an_alarm_when_the_book_loads_it(tmp_path: Path) -> None:
    write(tmp_path / "m.csv", csv_feed("E1,RED,0.9,,", "E1,GREEN,0.1,,"))
    board = Board()
    book = RiskBook(alarms=board.alarms)
    problems = await book.refresh_once([FileFeed(tmp_path)])
    assert book.get("E1") == RiskResult("E1", RED, 0.9)
    assert [p.line for p in problems] == [3]
    [(source, message)] = board.conflicts().items()
    assert source == "risk/conflict/E1"
    assert "RED 0.9" in message
    assert "GREEN 0.1" in message
    assert f"{tmp_path / 'm.csv'} line 2" in message
    assert f"{tmp_path / 'm.csv'} line 3" in message


# --- across files, feeds and fetches --------------------------------------------------------


async def test_newer_file_cannot_downgrade_a_result_of_an_older_one(tmp_path: Path) -> None:
    write(tmp_path / "old.csv", csv_feed("N1,RED,0.9,,", "N2,GREEN,0.2,,"), BASE_NS)
    write(tmp_path / "new.csv", csv_feed("N1,GREEN,0.1,,", "N2,GREEN,0.2,,"), BASE_NS + 10**9)
    board = Board()
    book = RiskBook(alarms=board.alarms)
    problems = await book.refresh_once([FileFeed(tmp_path)])
    assert book.get("N1") == RiskResult("N1", RED, 0.9)
    assert book.get("N2") == RiskResult("N2", GREEN, 0.2)
    [problem] = problems
    assert (problem.source, problem.line, problem.value) == (str(tmp_path / "new.csv"), 2, "'N1'")
    assert str(tmp_path / "old.csv") in problem.message
    [(source, message)] = board.conflicts().items()  # N2 is an identical repeat: no alarm
    assert source == "risk/conflict/N1"
    assert str(tmp_path / "old.csv") in message
    assert str(tmp_path / "new.csv") in message


async def test_a_rewritten_file_cannot_downgrade_what_it_said_before(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write(path, csv_feed("R1,RED,0.8,,"), BASE_NS)
    board = Board()
    book = RiskBook(alarms=board.alarms)
    feed = FileFeed(tmp_path)
    await book.refresh_once([feed])
    write(path, csv_feed("R1,GREEN,0.1,,", "R2,YELLOW,0.5,,"), BASE_NS + 10**9)
    problems = await book.refresh_once([feed])
    assert book.get("R1") == RiskResult("R1", RED, 0.8)
    assert book.get("R2") == RiskResult("R2", YELLOW, 0.5)
    assert [p.value for p in problems] == ["'R1'"]
    assert list(board.conflicts()) == ["risk/conflict/R1"]
    assert book.counts() == {GREEN: 0, YELLOW: 1, RED: 1}


async def test_reloading_an_unchanged_manifest_is_no_conflict(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write(path, csv_feed(*(f"U{i},YELLOW,0.{i},toys,LH1" for i in range(1, 9))), BASE_NS)
    board = Board()
    book = RiskBook(alarms=board.alarms)
    feed = FileFeed(path)
    await book.refresh_once([feed])
    os.utime(path, ns=(BASE_NS + 10**9, BASE_NS + 10**9))  # touched: loaded again
    assert await book.refresh_once([feed]) == []
    assert board.conflicts() == {}
    assert len(book) == 8


@pytest.mark.parametrize("file_first", [True, False])
async def test_conflict_across_feeds_keeps_the_most_severe_in_either_order(
    tmp_path: Path, server: FeedServer, file_first: bool
) -> None:
    write(tmp_path / "m.csv", csv_feed("X1,RED,0.95,,", "X2,GREEN,0.1,,"))
    records = [{"hawb": "X1", "channel": "GREEN", "score": 0.01}]
    records.append({"hawb": "X2", "channel": "YELLOW", "score": 0.5})
    server.routes["/risk"] = lambda q: (200, "application/json", json.dumps(records).encode(), {})
    file_feed, http_feed = FileFeed(tmp_path), HttpFeed(server.url("/risk"), timeout_s=2)
    board = Board()
    book = RiskBook(alarms=board.alarms)
    feeds: list[RiskFeed] = [file_feed, http_feed] if file_first else [http_feed, file_feed]
    problems = await book.refresh_once(feeds)
    assert book.get("X1") == RiskResult("X1", RED, 0.95)
    assert book.get("X2") == RiskResult("X2", YELLOW, 0.5)
    assert len(problems) == 2
    assert sorted(board.conflicts()) == ["risk/conflict/X1", "risk/conflict/X2"]
    message = board.conflicts()["risk/conflict/X1"]
    assert str(tmp_path / "m.csv") in message
    assert server.url("/risk") in message


def test_direct_adds_resolve_the_same_way() -> None:
    board = Board()
    book = RiskBook(alarms=board.alarms)
    book.add([RiskResult("D1", RED, 0.9)])
    book.add([RiskResult("D1", GREEN, 0.1)])
    book.add([RiskResult("D1", RED, 0.9)])  # identical: no second alarm needed
    assert book.get("D1") == RiskResult("D1", RED, 0.9)
    assert list(board.conflicts()) == ["risk/conflict/D1"]
    assert book.counts() == {GREEN: 0, YELLOW: 0, RED: 1}


def test_a_conflict_storm_raises_a_bounded_number_of_alarms() -> None:
    board = Board()
    book = RiskBook(alarms=board.alarms)
    book.add(FeedBatch([RiskResult(f"S{i}", RED, 0.9) for i in range(500)]))
    book.add(FeedBatch([RiskResult(f"S{i}", GREEN, 0.1) for i in range(500)]))
    assert all(book.get(f"S{i}") == RiskResult(f"S{i}", RED, 0.9) for i in range(500))
    alarms = board.conflicts()
    assert 1 < len(alarms) <= 60
    assert any("500 conflicting risk results" in message for message in alarms.values())


class BrokenSink:
    def alarm(self, source: str, message: str, *, active: bool) -> None:
        raise RuntimeError("alarm board down")


def test_a_failing_alarm_sink_does_not_stop_the_load() -> None:
    book = RiskBook(alarms=BrokenSink())
    book.add([RiskResult("B1", RED, 0.9)])
    book.add([RiskResult("B1", GREEN, 0.1), RiskResult("B2", GREEN, 0.1)])
    assert book.get("B1") == RiskResult("B1", RED, 0.9)
    assert book.get("B2") == RiskResult("B2", GREEN, 0.1)


# --- the rule holds whatever the batch sizes: against a plain model -------------------------


def severity(result: RiskResult) -> tuple[int, float]:
    return ([GREEN, YELLOW, RED].index(result.channel), result.score)


@pytest.mark.parametrize("seed", range(6))
def test_book_matches_a_plain_model_of_most_severe_wins(seed: int) -> None:
    """Random loads (single rows, small and large batches, repeats, conflicts) give the same
    book as a dict that keeps the most severe result (and the first of equal severity)."""
    rng = random.Random(seed)
    book = RiskBook()
    model: dict[str, RiskResult] = {}
    hawbs = [f"M{rng.randrange(10**6):06d}-{i}" for i in range(3000)]
    for _ in range(40):
        size = rng.choice([1, 3, 50, 400, 2500])
        batch = []
        for _ in range(size):
            hawb = rng.choice(hawbs)
            channel = rng.choice([GREEN, GREEN, YELLOW, RED])
            batch.append(
                RiskResult(
                    hawb, channel, rng.choice([0.1, 0.5, 0.9]), rng.choice(["", "a", "b"]), "F"
                )
            )
        for new in batch:
            held = model.get(new.hawb)
            if held is None or severity(new) > severity(held):
                model[new.hawb] = new
        book.add(FeedBatch(batch))
    assert len(book) == len(model)
    assert all(book.get(h) == model.get(h) for h in hawbs)
    counts = {c: sum(1 for r in model.values() if r.channel is c) for c in RiskChannel}
    assert book.counts() == counts


# --- wired into a site ----------------------------------------------------------------------


async def test_a_site_raises_conflict_alarms_on_its_board_and_journal(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    write(feeds / "a.csv", "\n".join([HEADER, "W1,RED,0.9,,"]) + "\n", BASE_NS)
    write(feeds / "b.csv", "\n".join([HEADER, "W1,GREEN,0.1,,"]) + "\n", BASE_NS + 10**9)
    config = demo_config(tmp_path)  # the twin plays the sorters; it never starts here
    config = config.model_copy(update={"risk_feeds": [FileRiskFeed(type="file", path=feeds)]})
    journal = config.store.journal_path
    services = Services(config)
    async with services:
        assert services.book.get("W1") == RiskResult("W1", RED, 0.9)
        assert "risk/conflict/W1" in services.alarms.active
    rows = [r for r in read_entries(journal, site="DEMO-HUB") if r["kind"] == "alarm"]
    assert "risk/conflict/W1" in [r["data"]["source"] for r in rows]


def test_conflict_reads_as_both_results_and_their_sources() -> None:
    conflict = Conflict(
        "Z1", RiskResult("Z1", RED, 0.9), "a.csv line 2", RiskResult("Z1", GREEN, 0.1), "b.json"
    )
    text = str(conflict)
    assert text.startswith("HAWB Z1: ")
    for part in ("RED 0.9", "a.csv line 2", "GREEN 0.1", "b.json", "kept"):
        assert part in text


async def test_a_manifest_conflicting_everywhere_is_counted_not_listed(tmp_path: Path) -> None:
    """A re-issued manifest that downgrades thousands of results: each keeps the most severe,
    the first conflicts are described, the rest are counted in one problem."""
    rows = 3000
    write(tmp_path / "m.csv", csv_feed(*(f"R{i:05d},RED,0.9,,F" for i in range(rows))), BASE_NS)
    board = Board()
    book = RiskBook(alarms=board.alarms)
    feed = FileFeed(tmp_path)
    await book.refresh_once([feed])
    write(tmp_path / "m.csv", csv_feed(*(f"R{i:05d},GREEN,0.1,,F" for i in range(rows))))
    problems = await book.refresh_once([feed])
    assert all(
        book.get(f"R{i:05d}") == RiskResult(f"R{i:05d}", RED, 0.9, "", "F") for i in range(rows)
    )
    assert book.counts() == {GREEN: 0, YELLOW: 0, RED: rows}
    assert len(problems) == DETAILED_PER_LOAD + 1
    assert problems[-1].message.startswith(f"{rows - DETAILED_PER_LOAD} more conflicting")
    assert len(board.conflicts()) == ALARMS_PER_LOAD + 1


async def test_two_large_files_of_one_fetch_resolve_column_wise(tmp_path: Path) -> None:
    """Above the row-by-row size, repeats across the files of one fetch are resolved on the
    columns: the same rule, the same reports."""
    older = [f"P{i:04d},{'RED' if i % 3 == 0 else 'GREEN'},0.5,,F" for i in range(900)]
    newer = [f"P{i:04d},{'YELLOW' if i % 2 == 0 else 'GREEN'},0.5,,F" for i in range(900)]
    write(tmp_path / "a.csv", csv_feed(*older), BASE_NS)
    write(tmp_path / "b.csv", csv_feed(*newer), BASE_NS + 10**9)
    book = RiskBook()
    problems = await book.refresh_once([FileFeed(tmp_path)])
    expected = {
        f"P{i:04d}": RED if i % 3 == 0 else YELLOW if i % 2 == 0 else GREEN for i in range(900)
    }
    assert {h: book.get(h).channel for h in expected} == expected  # type: ignore[union-attr]
    differing = [i for i in range(900) if i % 3 == 0 or i % 2 == 0]
    assert len(problems) == len(differing)
    assert all(p.source == str(tmp_path / "b.csv") for p in problems)
    assert sorted(int(p.line or 0) for p in problems) == [i + 2 for i in differing]
