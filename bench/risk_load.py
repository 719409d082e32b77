"""Risk load: a manifest of a million rows, from CSV file to risk book, as a site starts up.

Writes a CSV manifest of ``--rows`` rows (default 1,000,000; about 50 MB) into a temporary
folder, loads it the way a site does at start-up (``RiskBook.refresh_once`` over a
``FileFeed``: read, decode and parse in a worker thread, then add to the book), and prints one
JSON object:

    rows                     results in the manifest, all held by the book afterwards
    file_mb                  the manifest's size
    load_s                   wall time of the start-up load (target <= 3 s for 1 M rows)
    fetch_s, add_s           its two halves: the feed's fetch (read + parse), the book's add
    reload_s                 the same file loaded again after a touch (every row an identical
                             repeat: no conflict, nothing new held)
    lookup_us_p50, _p99      one lookup (known and unknown HAWBs alike), microseconds
    bytes_per_result         memory the book holds per result, by tracemalloc (numpy reports
                             its arrays to it) over a second, separate load (target <= 100)
    book_nbytes_per_result   the same by the book's own count (``RiskBook.nbytes``)
    rss_growth_per_result    resident memory grown by the timed load and kept (book held,
                             batch and text released), per result
    peak_rss_mb              the process's peak resident memory after the timed load

Progress goes to stderr.

    .venv/bin/python bench/risk_load.py
    .venv/bin/python bench/risk_load.py --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.risk.book import RiskBook
from controller.risk.feeds import FileFeed

GOODS = [
    "books",
    "printed matter",
    "phone, charger",
    "cotton t-shirts, 3 pcs",
    "phone accessories",
    "laptop battery",
    "cosmetics",
    "toys",
    "shoes",
    "documents",
    "Kaffeemühle",
    "spare parts, auto",
    "vitamins",
    "",
]


def progress(message: str) -> None:
    print(f"risk_load: {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Resident memory now (Linux /proc), in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_manifest(path: Path, rows: int, seed: int) -> None:
    """A manifest like a hub's: 200 flights, a few dozen goods texts, mostly GREEN."""
    rng = random.Random(seed)
    channels = ["GREEN"] * 14 + ["YELLOW"] * 4 + ["RED"] * 2
    goods = [f'"{g}"' if "," in g else g for g in GOODS]
    goods += [f"item {i}" for i in range(40)]
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("hawb,channel,score,declared_goods,flight\n")
        for start in range(0, rows, 50_000):
            lines = []
            for i in range(start, min(rows, start + 50_000)):
                flight = f"LH{8000 + i % 200}"
                lines.append(
                    f"{flight}-{i:08d},{rng.choice(channels)},{rng.random():.4f},"
                    f"{rng.choice(goods)},{flight}\n"
                )
            out.write("".join(lines))


async def timed_load(path: Path) -> tuple[RiskBook, dict[str, float]]:
    book = RiskBook()
    feed = FileFeed(path)
    started = time.perf_counter()
    batch = await feed.fetch()
    fetched = time.perf_counter()
    book.add(batch)
    added = time.perf_counter()
    if batch.problems:
        raise SystemExit(f"the manifest has problems: {batch.problems[:3]}")
    del batch
    os.utime(path)  # touched: the feed reads it again
    again = time.perf_counter()
    problems = await book.refresh_once([feed])
    reloaded = time.perf_counter()
    if problems:
        raise SystemExit(f"the reload reported problems: {problems[:3]}")
    return book, {
        "load_s": added - started,
        "fetch_s": fetched - started,
        "add_s": added - fetched,
        "reload_s": reloaded - again,
    }


def lookup_us(book: RiskBook, rows: int, count: int = 20_000) -> tuple[float, float]:
    rng = random.Random(5)
    hawbs = [f"LH{8000 + i % 200}-{i:08d}" for i in (rng.randrange(rows * 2) for _ in range(count))]
    times = []
    for hawb in hawbs:
        started = time.perf_counter_ns()
        book.get(hawb)
        times.append((time.perf_counter_ns() - started) / 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def traced_bytes(path: Path) -> tuple[int, int]:
    """Bytes the book holds after a load, by tracemalloc; also the book's own count."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        book = RiskBook()
        book.add(asyncio.run(FileFeed(path).fetch()))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held, int(getattr(book, "nbytes", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="manifest rows (1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the manifest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="risk-load-") as folder:
        path = Path(folder) / "manifest.csv"
        progress(f"writing {args.rows:,} rows to {path}")
        write_manifest(path, args.rows, args.seed)
        gc.collect()
        rss_before = rss_mb()
        progress("loading (timed)")
        book, times = asyncio.run(timed_load(path))
        peak = peak_rss_mb()
        gc.collect()
        rss_growth = (rss_mb() - rss_before) * 2**20
        held = len(book)
        progress("timing lookups")
        p50, p99 = lookup_us(book, args.rows)
        del book
        gc.collect()
        progress("loading again under tracemalloc (slow)")
        traced, nbytes = traced_bytes(path)
        size = path.stat().st_size
    result = {
        "rows": held,
        "file_mb": round(size / 1e6, 1),
        **{name: round(value, 3) for name, value in times.items()},
        "lookup_us_p50": round(p50, 1),
        "lookup_us_p99": round(p99, 1),
        "bytes_per_result": round(traced / held, 1),
        "book_nbytes_per_result": round(nbytes / held, 1),
        "rss_growth_per_result": round(rss_growth / held, 1),
        "peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
