"""Broken CSV quoting costs the row it is in, never the rest of the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.core.domain import RiskChannel, RiskResult
from controller.risk import records
from controller.risk.feeds import FileFeed
from controller.risk.records import parse_csv
from tests.test_risk_feeds import HEADER, csv_feed, hawbs, write


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param('Q2,GREEN,0.1,"phone, charger,', "unexpected end of data", id="unterminated"),
        pytest.param('Q2,GREEN,0.1,"phone"x,', "',' expected after '\"'", id="junk-after-quote"),
    ],
)
def test_a_row_with_broken_quoting_is_skipped_and_the_rest_loads(bad: str, message: str) -> None:
    text = csv_feed("Q1,GREEN,0.1,books,", bad, "Q3,RED,0.9,laptop,", "Q4,YELLOW,0.5,toys,")
    batch = parse_csv(text, "m.csv")
    assert hawbs(batch) == ["Q1", "Q3", "Q4"]
    [problem] = batch.problems
    assert (problem.line, problem.unit) == (3, "line")
    assert str(problem).startswith("m.csv line 3: not valid CSV: ")
    assert message in problem.message
    assert problem.message.endswith("the row is skipped")


def test_unterminated_quote_on_the_last_row() -> None:
    batch = parse_csv(csv_feed("Q1,GREEN,0.1,,", 'Q2,RED,0.9,"open'), "m.csv")
    assert hawbs(batch) == ["Q1"]
    assert [p.line for p in batch.problems] == [3]


def test_every_broken_row_is_reported_with_its_own_line() -> None:
    rows = ["Q1,GREEN,0.1,,", 'Q2,GREEN,0.1,"a,', "Q3,GREEN,0.1,,", 'Q4,GREEN,0.1,"b"c,']
    rows += ["", "Q5,RED,0.9,,", 'Q6,RED,0.9,"x']
    batch = parse_csv(csv_feed(*rows), "m.csv")
    assert hawbs(batch) == ["Q1", "Q3", "Q5"]
    assert [p.line for p in batch.problems] == [3, 5, 8]


def test_a_quote_closed_rows_later_is_skipped_and_the_swallowed_rows_load() -> None:
    """The stray quote's "field" runs to a quote on a later line and the record comes out with
    the wrong number of values: only the line it began on is skipped."""
    rows = ['Q1,GREEN,0.1,"cables', "Q2,GREEN,0.1,,", 'Q3,YELLOW,0.5,",toys,x', "Q4,RED,0.9,,"]
    batch = parse_csv(csv_feed(*rows), "m.csv")
    assert hawbs(batch) == ["Q2", "Q4"]
    assert [p.line for p in batch.problems] == [2, 4]
    assert "spans lines 2-4" in batch.problems[0].message


def test_quoted_values_over_several_lines_still_load() -> None:
    batch = parse_csv(csv_feed('Q1,GREEN,0.1,"two\r\nlines",', "Q2,RED,0.9,,"), "m.csv")
    assert batch.results[0] == RiskResult("Q1", RiskChannel.GREEN, 0.1, "two\r\nlines")
    assert batch.problems == []


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_after_a_broken_row_follow_the_file(newline: str) -> None:
    rows = [HEADER, "Q1,GREEN,0.1,,", 'Q2,GREEN,"0.1,,', "Q3,GREEN,0.1,,", "Q4,GREEN,9,,"]
    batch = parse_csv(newline.join(rows) + newline, "m.csv")
    assert hawbs(batch) == ["Q1", "Q3"]
    assert [(p.line, p.field) for p in batch.problems] == [(3, ""), (5, "score")]


def test_broken_quoting_in_the_header_still_rejects_the_file() -> None:
    batch = parse_csv('hawb,"channel,score\nQ1,GREEN,0.1\n', "m.csv")
    assert batch.results == []
    [problem] = batch.problems
    assert problem.message.startswith("not valid CSV")


async def test_file_feed_keeps_the_valid_rows_of_a_manifest_with_a_stray_quote(
    tmp_path: Path,
) -> None:
    rows = [f"LH1-{i:06d},GREEN,0.1,books,LH1" for i in range(2000)]
    rows[700] = 'LH1-000700,RED,0.9,"laptop, battery,LH1'
    path = tmp_path / "manifest.csv"
    write(path, csv_feed(*rows))
    batch = await FileFeed(path).fetch()
    assert len(batch.results) == 1999
    assert "LH1-000700" not in hawbs(batch)
    assert [str(p).split(": ")[0] for p in batch.problems] == [f"{path} line 702"]


def test_line_numbers_hold_across_chunks_of_a_large_file() -> None:
    """Thousands of rows with blank lines, values over two lines and broken rows spread
    through them: every problem names the line its row began on, every good row loads once."""
    records = [HEADER]
    line = 1  # the physical line the last record ended on
    good: list[str] = []
    bad_lines: list[int] = []
    for i in range(5000):
        hawb = f"K{i:05d}"
        if i % 97 == 0:
            records.append("")
            line += 1
        if i % 211 == 0:
            records.append(f'{hawb},GREEN,0.1,"two\nlines",')  # one record, two lines
            good.append(hawb)
            line += 2
            continue
        line += 1
        if i % 331 == 0:
            records.append(f"{hawb},GREEN,7,,")  # a bad score
            bad_lines.append(line)
        elif i % 1499 == 0:
            records.append(f'{hawb},GREEN,0.1,"open,')  # runs on to the next quote
            bad_lines.append(line)
        else:
            records.append(f"{hawb},{'RED' if i % 5 == 0 else 'GREEN'},0.{i % 10},goods,F1")
            good.append(hawb)
    batch = parse_csv("\n".join(records) + "\n", "m.csv")
    assert sorted(hawbs(batch)) == sorted(good)
    assert [p.line for p in batch.problems] == bad_lines
    assert batch.results[0] == RiskResult("K00000", RiskChannel.GREEN, 0.1, "two\nlines")


def test_a_chunk_whose_lines_do_not_add_up_is_read_again_row_by_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net under the chunked reader: if counting the line breaks in a chunk's
    values ever disagreed with the reader, the chunk is read again a record at a time."""
    monkeypatch.setattr(records, "_breaks", lambda row: 0)  # miscounts multi-line values
    rows = [f"C{i:04d},GREEN,0.1,,F" for i in range(3000)]
    rows[1500] = 'C1500,GREEN,0.1,"two\nlines",F'
    rows[2000] = "C2000,GREEN,2,,F"
    batch = parse_csv(csv_feed(*rows), "m.csv")
    assert len(batch.results) == 2999
    assert [p.line for p in batch.problems] == [2003]  # the header, 2000 rows, one extra line


def test_a_file_of_bad_rows_loads_nothing_and_names_each() -> None:
    batch = parse_csv(csv_feed(*(f"B{i},PURPLE,0.1,," for i in range(1500))), "m.csv")
    assert batch.results == []
    assert len(batch.problems) == 1500
