"""The risk suite: published records look up as published, unknown HAWBs as None, bad records
are reported at their line with their field, fetches hand out only what is new, an outage is a
problem and never an exception, and fetching never blocks the loop.

A risk feed (``kind: risk_feed``) is read through CargoGate's risk book, the
:class:`controller.core.ports.RiskSource` the policy asks. Each test has the integrator's kit
(fixture ``cargogate_risk``) build the feed, publishes manifests through the harness, fetches
and loads them into a fresh book, and plays one rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from controller.alarms import Alarms
from controller.conformance.harness import (
    ManifestRecord,
    OutageControls,
    RiskContext,
    RiskHarness,
    RiskKit,
)
from controller.conformance.rules import (
    RISK_BAD_ROWS,
    RISK_KNOWN,
    RISK_NEW_ONLY,
    RISK_NO_BLOCKING,
    RISK_OUTAGE,
    RISK_UNKNOWN,
    Rule,
    covers,
)
from controller.conformance.running import WAIT_S, missing, play, unblocked
from controller.core.domain import RiskChannel, RiskResult
from controller.risk.book import RiskBook
from controller.risk.records import FeedBatch

GOOD = (
    ManifestRecord("KIT-R0001", "GREEN", "0.05", "books", "LH8400"),
    ManifestRecord("KIT-R0002", "red", "0.91", "phone, charger", "LH8400"),
    ManifestRecord("KIT-R0003", "YELLOW", "0.4"),
)
"""Well-formed records: a channel in lower case, a comma in the goods, no goods nor flight."""

BAD = (
    (ManifestRecord("KIT-R0101", "PURPLE", "0.5"), "channel"),
    (ManifestRecord("KIT-R0102", "GREEN", "1.7"), "score"),
    (ManifestRecord("KIT-R0103", "RED", "high"), "score"),
    (ManifestRecord("KIT R0104!", "GREEN", "0.2"), "hawb"),
)
"""Records each with one bad field, and that field's name."""

MANY = 50_000


def expected(record: ManifestRecord) -> RiskResult:
    return RiskResult(
        record.hawb,
        RiskChannel(record.channel.upper()),
        float(record.score),
        record.declared_goods,
        record.flight,
    )


class Bench:
    def __init__(self, harness: RiskHarness, book: RiskBook) -> None:
        self.harness = harness
        self.book = book

    async def fetch(self) -> FeedBatch:
        batch = await asyncio.wait_for(self.harness.feed.fetch(), WAIT_S)
        assert isinstance(batch, FeedBatch), f"fetch() returned {batch!r}, not a FeedBatch"
        return batch

    async def load(self, records: Sequence[ManifestRecord]) -> FeedBatch:
        """Publish ``records``, fetch, load into the book; the batch fetched."""
        await self.harness.publish(records)
        batch = await self.fetch()
        self.book.add(batch)
        return batch

    async def check_held(self, records: Sequence[ManifestRecord]) -> None:
        for record in records:
            held = await self.book.lookup(record.hawb)
            assert held == expected(record), f"{record.hawb}: published {record}, looked up {held}"


def _play(kit: RiskKit, rule: Rule, folder: Path, body: Callable[[Bench], Awaitable[None]]) -> None:
    async def scenario() -> None:
        alarms = Alarms(None, time.monotonic)
        source = folder / "source"
        source.mkdir()
        async with kit.open(RiskContext(source, alarms)) as harness:
            await body(Bench(harness, RiskBook(alarms=alarms)))

    play(kit, rule, scenario)


def _problems(batch: FeedBatch) -> str:
    return "; ".join(map(str, batch.problems)) or "none"


# --- the rules -------------------------------------------------------------------------------


@covers(RISK_KNOWN)
def test_published_records_look_up_as_published(cargogate_risk: RiskKit, tmp_path: Path) -> None:
    _play(cargogate_risk, RISK_KNOWN, tmp_path, _known)


async def _known(bench: Bench) -> None:
    batch = await bench.load(GOOD)
    assert not batch.problems, f"problems with well-formed records: {_problems(batch)}"
    assert len(batch) == len(GOOD), f"{len(GOOD)} records published, {len(batch)} fetched"
    await bench.check_held(GOOD)


@covers(RISK_UNKNOWN)
def test_an_unknown_hawb_looks_up_as_none(cargogate_risk: RiskKit, tmp_path: Path) -> None:
    _play(cargogate_risk, RISK_UNKNOWN, tmp_path, _unknown)


async def _unknown(bench: Bench) -> None:
    await bench.load(GOOD)
    await bench.check_held(GOOD)
    hawb = GOOD[0].hawb
    for unknown in ("KIT-NEVER-SENT", hawb.lower(), f" {hawb}", f"{hawb} ", "", "K" * 200):
        held = await bench.book.lookup(unknown)
        assert held is None, f"{unknown!r} was never published, yet looks up as {held}"


@covers(RISK_BAD_ROWS)
def test_bad_records_are_reported_at_their_line(cargogate_risk: RiskKit, tmp_path: Path) -> None:
    _play(cargogate_risk, RISK_BAD_ROWS, tmp_path, _bad_rows)


async def _bad_rows(bench: Bench) -> None:
    records = [GOOD[0], BAD[0][0], GOOD[1], BAD[1][0], BAD[2][0], BAD[3][0], GOOD[2]]
    places = await bench.harness.publish(records)
    assert len(places) == len(records), f"publish() gave {len(places)} places for {len(records)}"
    batch = await bench.fetch()
    whole = [str(p) for p in batch.problems if p.line is None]
    assert not whole, f"problems with the whole source, where rows were bad: {whole}"
    for record, field in BAD:
        place = places[records.index(record)]
        here = [p for p in batch.problems if p.line == place]
        assert here, f"{record} at {place}: not reported; reported: {_problems(batch)}"
        assert any(p.field == field for p in here), (
            f"{record} at {place}: the problem should name the field {field!r}: "
            + "; ".join(map(str, here))
        )
    reported = {p.line for p in batch.problems}
    good_places = {places[records.index(record)] for record in GOOD}
    assert not reported & good_places, f"good records reported: {_problems(batch)}"
    bench.book.add(batch)
    await bench.check_held(GOOD)  # the good records of the same manifest load
    for record, _ in BAD:
        assert await bench.book.lookup(record.hawb) is None, f"{record} was loaded"


@covers(RISK_NEW_ONLY)
def test_a_fetch_hands_out_only_what_is_new(cargogate_risk: RiskKit, tmp_path: Path) -> None:
    _play(cargogate_risk, RISK_NEW_ONLY, tmp_path, _new_only)


async def _new_only(bench: Bench) -> None:
    first = await bench.load(GOOD[:2])
    fetched = sorted(r.hawb for r in first.results)
    assert fetched == [r.hawb for r in GOOD[:2]], f"2 records published, fetched {fetched}"
    again = await bench.fetch()
    assert len(again) == 0, f"nothing new, yet {len(again)} results: {again.results}"
    assert not again.problems, f"nothing new, yet problems: {_problems(again)}"
    third = await bench.load(GOOD[2:])
    assert [r.hawb for r in third.results] == [GOOD[2].hawb], (
        f"one new record published, fetched {[r.hawb for r in third.results]}"
    )
    await bench.check_held(GOOD)


@covers(RISK_OUTAGE)
def test_an_unreachable_source_is_a_problem(cargogate_risk: RiskKit, tmp_path: Path) -> None:
    _play(cargogate_risk, RISK_OUTAGE, tmp_path, _outage)


async def _outage(bench: Bench) -> None:
    source = bench.harness
    if not isinstance(source, OutageControls):
        raise missing(source, OutageControls, RISK_OUTAGE)
    await bench.harness.publish(GOOD[:1])
    await source.outage(True)
    try:
        down = await bench.fetch()  # returns, never raises
    finally:
        await source.outage(False)
    assert any(p.line is None for p in down.problems), (
        f"an unreachable source gave no problem without a line: {_problems(down)}"
    )
    back = await bench.fetch()
    bench.book.add(back)
    await bench.check_held(GOOD[:1])


@covers(RISK_NO_BLOCKING)
def test_fetching_never_blocks_the_event_loop(cargogate_risk: RiskKit, tmp_path: Path) -> None:
    _play(cargogate_risk, RISK_NO_BLOCKING, tmp_path, _no_blocking)


async def _no_blocking(bench: Bench) -> None:
    async def publish(attempt: int) -> None:
        many = [ManifestRecord(f"KIT-M{attempt}-{i:06d}", "GREEN", "0.01") for i in range(MANY)]
        await bench.harness.publish(many)

    async def fetch(_: None) -> None:
        batch = await bench.fetch()
        assert len(batch) == MANY, f"{MANY} records published, {len(batch)} fetched"

    await unblocked(publish, fetch, f"{MANY:,} records were fetched")
