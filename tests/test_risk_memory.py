"""The risk book stores results compactly and hands back exactly what the feed said."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from pathlib import Path

from controller.core.domain import RiskChannel, RiskResult
from controller.risk.book import RiskBook
from controller.risk.feeds import FileFeed
from controller.risk.records import FeedBatch, FeedRecord, parse_csv, parse_json
from tests.test_risk_feeds import HEADER, write

GOODS = ["books", "phone, charger", "cotton t-shirts, 3 pcs", "Kaffeemühle", "", "toys"]


def manifest(rows: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    lines = [HEADER]
    for i in range(rows):
        goods = rng.choice(GOODS)
        quoted = f'"{goods}"' if "," in goods else goods
        channel = rng.choice(["GREEN", "GREEN", "GREEN", "YELLOW", "RED"])
        lines.append(f"LH{i % 50:04d}-{i:08d},{channel},{rng.random():.4f},{quoted},LH{i % 50}")
    return "\n".join(lines) + "\n"


def test_a_result_costs_under_100_bytes_in_the_book() -> None:
    rows = 200_000
    text = manifest(rows)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        book = RiskBook()
        book.add(parse_csv(text, "m.csv"))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(book) == rows
    assert held / rows <= 100, f"{held / rows:.0f} bytes per result"
    assert book.nbytes / rows <= 100


def reference(data: dict[str, object], default_flight: str = "") -> RiskResult:
    """What one record means, by the record model alone (the slow, plain path)."""
    return FeedRecord.model_validate(data).to_result(default_flight)


def test_lookup_gives_back_every_field_exactly() -> None:
    rows = [
        ("A-1", "GREEN", "0.05", "books", "LH1"),
        ("A-2", "red", "1", "phone, charger", ""),
        ("A-3", " Yellow ", "0", " Kaffeemühle ", " LH2 "),
        ("A-4", "GREEN", "1e-3", "", ""),
        ("A-5", "RED", " .5 ", "x" * 300, "LH1"),
        ("A-6", "GREEN", "0.30000000000000004", "😀 emoji", "LH1"),
        (" A-7 ", "GREEN", "0.1", "", "LH1"),
    ]
    lines = [HEADER] + [",".join(f'"{v}"' for v in row) for row in rows]
    batch = parse_csv("\n".join(lines), "m.csv")
    assert batch.problems == []
    expected = [reference(dict(zip(HEADER.split(","), row, strict=True))) for row in rows]
    assert batch.results == expected
    big = RiskBook()
    filler = [RiskResult(f"F{i}", RiskChannel.GREEN, 0.1) for i in range(5000)]
    big.add(FeedBatch(filler))
    big.add(batch)  # a batch this size goes row by row; the filler was stored column-wise
    for result in expected:
        assert big.get(result.hawb) == result
        assert type(big.get(result.hawb).score) is float  # type: ignore[union-attr]
    assert big.get(filler[1234].hawb) == filler[1234]


async def test_a_large_json_feed_round_trips_through_the_book(tmp_path: Path) -> None:
    rng = random.Random(7)
    records: list[dict[str, object]] = []
    for i in range(3000):
        record: dict[str, object] = {
            "hawb": f"CV-{i:06d}",
            "channel": rng.choice(["GREEN", "yellow", "RED"]),
            "score": rng.choice([0, 1, 0.25, rng.random()]),
        }
        if i % 3:
            record["declared_goods"] = rng.choice([*GOODS, None])
        if i % 5 == 0:
            record["flight"] = rng.choice(["OWN", None, " "])
        records.append(record)
    path = tmp_path / "m.json"
    write(path, json.dumps({"flight": "CV7312", "results": records}))
    book = RiskBook()
    batch = await FileFeed(path).fetch()
    assert batch.problems == []
    book.add(batch)
    assert len(book) == len(records)
    for record in records:
        assert await book.lookup(str(record["hawb"])) == reference(record, "CV7312")
    assert parse_json(json.dumps(records), "x").results == [reference(r) for r in records]


def test_many_single_adds_stay_correct_and_compact() -> None:
    """The twin adds one result per arriving parcel."""
    book = RiskBook()
    results = [
        RiskResult(f"L1-{i:09d}", RiskChannel.YELLOW if i % 7 else RiskChannel.RED, i / 30000)
        for i in range(30000)
    ]
    for result in results:
        book.add([result])
    assert len(book) == 30000
    assert all(book.get(r.hawb) == r for r in results[::97])
    assert book.get("L1-999999999") is None
    assert book.nbytes / len(book) <= 100


def test_eviction_takes_the_oldest_loads_first_across_storage() -> None:
    book = RiskBook(max_entries=1000)
    first = [RiskResult(f"E{i:05d}", RiskChannel.GREEN, 0.1) for i in range(600)]
    second = [RiskResult(f"E{i:05d}", RiskChannel.GREEN, 0.1) for i in range(600, 1200)]
    book.add(FeedBatch(first))
    book.add(first[:5])  # re-announced: now among the newest
    book.add(FeedBatch(second))
    assert len(book) == 1000
    assert book.evicted == 200
    kept = {h for h in (r.hawb for r in first + second) if h in book}
    assert {r.hawb for r in first[:5]} <= kept
    assert {r.hawb for r in second} <= kept
    assert len(kept & {r.hawb for r in first[5:]}) == 395


def test_hawbs_the_book_cannot_hold_are_reported_and_look_up_as_none() -> None:
    batch = FeedBatch(
        [RiskResult("", RiskChannel.GREEN, 0.1), RiskResult("a\x00", RiskChannel.GREEN, 0.1)]
    )
    assert batch.results == []
    assert len(batch.problems) == 2
    book = RiskBook()
    book.add(batch)
    assert len(book) == 0
    assert book.get("") is None
    assert book.get("a\x00") is None
    assert book.get("\udcff") is None


def test_results_added_in_bulk_or_one_by_one_skip_what_cannot_be_held() -> None:
    book = RiskBook()
    many = [RiskResult(f"Q{i}", RiskChannel.GREEN, 0.1) for i in range(300)]
    book.add([*many, RiskResult("", RiskChannel.RED, 0.9)])
    book.add([RiskResult("x" * 65, RiskChannel.RED, 0.9), RiskResult("Q-1", RiskChannel.RED, 1)])
    assert len(book) == 301
    assert book.get("Q-1") == RiskResult("Q-1", RiskChannel.RED, 1)
    assert book.get("x" * 65) is None
    assert book.get("Q" * 40) is None  # longer than any held HAWB


def test_a_reload_with_a_few_new_rows_keeps_only_their_texts() -> None:
    rows = [RiskResult(f"G{i}", RiskChannel.GREEN, 0.1, f"goods {i}") for i in range(2000)]
    book = RiskBook()
    book.add(FeedBatch(rows))
    size = book.nbytes
    extra = [RiskResult(f"N{i}", RiskChannel.RED, 0.9, f"new goods {i}") for i in range(5)]
    book.add(FeedBatch(rows + extra))
    assert len(book) == 2005
    assert all(book.get(r.hawb) == r for r in rows[::50] + extra)
    assert book.nbytes - size < 2000  # not another copy of the 2000 texts
