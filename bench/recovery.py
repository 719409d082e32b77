"""Start-up recovery benchmark: time and memory from process start to "ready to decide".

Builds a journal of ``--hours`` hours at ``--parcels-per-h`` parcels/h (about three rows per
parcel: first scan, decision, divert confirmation; some recirculate, some go to inspection
and are closed there later by an officer's command; holds, lifts and alarms in between),
leaving ``--open`` parcels open at the end: the newest on the belt, the rest waiting at
inspection. Rows are bulk-inserted into the journal's own schema, then the open-parcel and
hold tables are filled by the same fold the 0002 migration runs (``backfill_s``: what the
first start after the upgrade costs on such a journal).

Then a fresh child process imports the controller, opens the journal (``SqliteJournal``:
migration check, writer thread, last seq) and calls :func:`controller.recovery.recover`;
it reports the time from its spawn to that point and its peak RSS (``ru_maxrss``). The file
is in the page cache by then (dropping it needs root), as it is after a controller restart.

Prints one JSON object. Example: ``python bench/recovery.py --keep var/bench-recovery.sqlite``
(``--keep`` reuses the file when it already holds a journal, and keeps it otherwise).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SITE = "BENCH"
_CHUNK_ROWS = 200_000
_COLUMNS = (
    "site, seq, ts, wall_time, kind, line, tracking_id, hawb, state_from, state_to, "
    "destination, lane, reasons, policy_version, data"
)
_DECISION_DATA = [
    json.dumps(
        {
            "risk": {"channel": channel, "score": score, "declared": "apparel"},
            "xray": {
                "status": "ok",
                "scores": {
                    "firearm": 0.01,
                    "blade": 0.02,
                    "lithium_battery": 0.03,
                    "liquid_container": 0.01,
                    "narcotics_organic": 0.01,
                },
                "model": "xray-2026.11",
                "detail": "",
            },
            "held": False,
            "audit_draw": draw,
            "review": None,
            "deadline": 0.0,
            "lap": 0,
        }
    )
    for channel, score, draw in (("GREEN", 0.1, 0.52), ("YELLOW", 0.4, 0.17), ("RED", 0.9, 0.9))
]

Row = tuple[Any, ...]


def _wall(start: datetime, ts: float) -> str:
    """A wall time as SQLAlchemy stores a UTC ``DateTime`` in SQLite."""
    return (start + timedelta(seconds=ts)).strftime("%Y-%m-%d %H:%M:%S.%f")


class Generator:
    """Journal rows in ``seq`` order for a steady flow of parcels on ``lines`` lines."""

    def __init__(self, args: argparse.Namespace, start: datetime) -> None:
        self.rng = random.Random(args.seed)
        self.start = start
        self.lines = args.lines
        self.parcels = round(args.parcels_per_h * args.hours)
        self.gap_s = 3600.0 / args.parcels_per_h
        inspecting = round(args.open * 0.3)
        on_belt = args.open - inspecting
        self.belt_open_from = self.parcels - on_belt  # the newest parcels stay on the belt
        recent = max(0, self.belt_open_from - round(6 * args.parcels_per_h))
        self.waiting = set(self.rng.sample(range(recent, self.belt_open_from), inspecting))
        self.later: list[tuple[float, int, Row]] = []  # rows due later, by ts
        self.seq = 0
        self.order = 0

    def rows(self) -> Iterator[Row]:
        next_tid = [0] * self.lines
        for i in range(self.parcels):
            t = i * self.gap_s
            while self.later and self.later[0][0] <= t:
                yield self._stamp(heapq.heappop(self.later)[2])
            line = i % self.lines
            next_tid[line] = (next_tid[line] + 1) & 0xFFFF  # the PLC reuses tracking ids
            yield from self._parcel(i, t, f"L{line + 1}", next_tid[line], f"B{i:09d}")
        while self.later:
            yield self._stamp(heapq.heappop(self.later)[2])

    def _stamp(self, row: Row) -> Row:
        self.seq += 1
        return (SITE, self.seq, row[0], _wall(self.start, row[0]), *row[1:])

    def _later(self, ts: float, row: Row) -> None:
        self.order += 1
        heapq.heappush(self.later, (ts, self.order, row))

    def _parcel(self, i: int, t: float, line: str, tid: int, hawb: str) -> Iterator[Row]:
        rng = self.rng
        scan = json.dumps({"seq": i, "scan_time": t, "arrived_at": t - 4.0})
        if i % 2000 == 0:
            yield self._stamp(_command(t - 1, hawb, "hold", accepted=True))
            if i % 4000 == 0:
                self._later(t + 3600, _command(t + 3600, hawb, "lift", accepted=True))
            else:
                self._later(t + 60, _command(t + 60, hawb, "lift", accepted=False))
        if i % 5000 == 0:
            yield self._stamp((t, "alarm", line, tid, "", "", "", "", None, "[]", "", "{}"))
        yield self._stamp(_move(t, "transition", line, tid, hawb, "", "scanned", scan))
        if i >= self.belt_open_from:  # still on the belt when the journal ends
            step = rng.randrange(4)
            if step == 0:
                return
            if step == 3:
                row = _move(t + 2, "deadline_miss", line, tid, hawb, "scanned", "defaulted")
                yield self._stamp(row)
                return
            yield self._stamp(_decision(t + 1.2, line, tid, hawb, rng))
            if step == 2:
                row = _move(t + 9, "confirmation", line, tid, hawb, "decided", "recirculating")
                yield self._stamp(row)
            return
        yield self._stamp(_decision(t + 1.2, line, tid, hawb, rng))
        draw = rng.random()
        if i in self.waiting or draw < 0.08:
            row = _move(t + 9, "confirmation", line, tid, hawb, "decided", "in_inspection")
            yield self._stamp(row)
            if i not in self.waiting:  # an officer records the outcome later
                at = t + rng.uniform(300, 3600)
                kind = "command" if draw < 0.04 else "inspection_result"
                outcome = "cleared_after_inspection" if draw < 0.07 else "seized"
                data = json.dumps(
                    {"command": "inspect", "user": "officer", "hawb": hawb, "accepted": True}
                    if kind == "command"
                    else {"outcome": outcome}
                )
                row = _move(at, kind, line, tid, hawb, "in_inspection", outcome, data)
                self._later(at, row)
        elif draw < 0.10:  # missed its divert, comes round for another lap
            yield self._stamp(
                _move(t + 9, "confirmation", line, tid, hawb, "decided", "recirculating")
            )
            self._later(
                t + 60, _move(t + 60, "transition", line, tid, hawb, "recirculating", "scanned")
            )
            self._later(t + 61, _move(t + 61, "decision", line, tid, hawb, "scanned", "decided"))
            self._later(
                t + 69, _move(t + 69, "confirmation", line, tid, hawb, "decided", "released")
            )
        else:
            yield self._stamp(_move(t + 9, "confirmation", line, tid, hawb, "decided", "released"))


def _move(
    ts: float, kind: str, line: str, tid: int, hawb: str, frm: str, to: str, data: str = "{}"
) -> Row:
    return (ts, kind, line, tid, hawb, frm, to, "", None, "[]", "", data)


def _decision(ts: float, line: str, tid: int, hawb: str, rng: random.Random) -> Row:
    return (
        ts, "decision", line, tid, hawb, "scanned", "decided", "release", 1, "[1]",
        "policy-2026.11", rng.choice(_DECISION_DATA),
    )  # fmt: skip


def _command(ts: float, hawb: str, command: str, accepted: bool) -> Row:
    data = {
        "command": command,
        "user": "op1",
        "hawb": hawb,
        "reason": "bench",
        "accepted": accepted,
    }
    return (ts, "command", "", 0, hawb, "", "", "", None, "[]", "", json.dumps(data))


def build(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write the journal rows in bulk, then fill the open-parcel and hold tables by the
    migration's fold. Progress goes to stderr."""
    from controller.store import migrate, openset
    from controller.store.read import read_entries
    from controller.store.sqlite import sqlite_engine

    migrate.upgrade(f"sqlite:///{path}")
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=args.hours)
    gen = Generator(args, start)
    began = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # generation only; the journal itself uses FULL
    insert = f"INSERT INTO journal ({_COLUMNS}) VALUES ({', '.join('?' * 15)})"
    chunk: list[Row] = []
    written = 0
    for row in gen.rows():
        chunk.append(row)
        if len(chunk) >= _CHUNK_ROWS:
            written += _flush(conn, insert, chunk)
            done = written / (gen.parcels * 3.1)
            print(f"\rjournal rows: {written:,} (~{min(done, 1):.0%})", end="", file=sys.stderr)
    written += _flush(conn, insert, chunk)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    generate_s = time.perf_counter() - began
    print(f"\rjournal rows: {written:,} in {generate_s:.0f} s; backfilling", file=sys.stderr)
    began = time.perf_counter()
    engine = sqlite_engine(path)
    try:
        with engine.begin() as sa_conn:
            counts = openset.rebuild(sa_conn)
        with engine.connect() as sa_conn:
            sa_conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    backfill_s = time.perf_counter() - began
    read_entries(path, SITE, limit=10)  # the bulk rows read back through the schema's types
    print(f"open set {counts} in {backfill_s:.0f} s", file=sys.stderr)
    return {"generate_s": round(generate_s, 1), "backfill_s": round(backfill_s, 1)}


def _flush(conn: sqlite3.Connection, insert: str, chunk: list[Row]) -> int:
    conn.execute("BEGIN")
    conn.executemany(insert, chunk)
    conn.execute("COMMIT")
    n = len(chunk)
    chunk.clear()
    return n


def _journal_facts(path: Path) -> tuple[int, str]:
    """Row count and the newest row's wall time (recovery runs as if just after it)."""
    conn = sqlite3.connect(path)
    try:
        rows = int(conn.execute("SELECT count(*) FROM journal").fetchone()[0])
        last = conn.execute(
            "SELECT wall_time FROM journal WHERE site = ? ORDER BY seq DESC LIMIT 1", (SITE,)
        ).fetchone()
    finally:
        conn.close()
    if not rows or last is None:
        raise SystemExit(f"{path} holds no {SITE} journal rows")
    wall = datetime.fromisoformat(last[0]).replace(tzinfo=UTC) + timedelta(seconds=5)
    return rows, wall.isoformat()


def child(path: str, wall_now: str, horizon_h: float) -> None:
    """Runs in the fresh process: open the journal and recover, then report."""
    began = time.perf_counter()
    import asyncio
    import resource

    from controller.core.clock import MonotonicClock
    from controller.recovery import recover
    from controller.store.journal import SqliteJournal

    imported = time.perf_counter()

    async def ready() -> dict[str, Any]:
        clock = MonotonicClock()
        journal = SqliteJournal(Path(path), SITE)
        await journal.start()
        opened = time.perf_counter()
        result = await asyncio.to_thread(
            recover, journal.url, SITE, clock.now(), datetime.fromisoformat(wall_now), horizon_h
        )
        done = time.perf_counter()
        ready_at = time.time()
        await journal.close()
        return {
            "ready_at": ready_at,
            "import_s": imported - began,
            "open_journal_s": opened - imported,
            "recover_s": done - opened,
            "open_parcels": len(result.parcels),
            "in_inspection": sum(p.state.value == "in_inspection" for p in result.parcels),
            "active_holds": len(result.holds),
            "beyond_horizon": result.beyond_horizon,
            "last_seq": journal.last_seq,
        }

    report = asyncio.run(ready())
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    status = Path("/proc/self/status")  # VmHWM: this process's own peak since exec (Linux)
    hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
    report["vm_hwm_mb"] = int(hwm[0].split()[1]) / 1024 if hwm else report["peak_rss_mb"]
    print(json.dumps(report))


def _run(argv: list[str], capture_stderr: bool) -> dict[str, Any]:
    """Run this script in a fresh interpreter and return the JSON it prints last."""
    out = subprocess.run(
        [sys.executable, __file__, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    if out.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{out.stderr or ''}")
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Build (in its own process) and measure (in fresh ones). This process imports no
    controller code and stays small: a child's ``ru_maxrss`` starts from its parent's."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "journal.sqlite"
        built: dict[str, Any] = {"reused": True}
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            gen = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in _GEN]
            built = {"reused": False, **_run(["--build-into", str(path), *gen], False)}
        rows, wall_now = _journal_facts(path)
        runs = []
        for _ in range(args.repeat):
            spawned = time.time()
            run = _run(["--child", str(path), wall_now, str(args.horizon_h)], True)
            run["start_to_ready_s"] = run.pop("ready_at") - spawned
            runs.append(run)
        best = min(runs, key=lambda r: r["start_to_ready_s"])
        return {
            "journal_rows": rows,
            "journal_mb": round(path.stat().st_size / 2**20),
            "open_parcels": best["open_parcels"],
            "in_inspection": best["in_inspection"],
            "active_holds": best["active_holds"],
            "beyond_horizon": best["beyond_horizon"],
            "start_to_ready_s": round(best["start_to_ready_s"], 3),
            "start_to_ready_s_runs": [round(r["start_to_ready_s"], 3) for r in runs],
            "import_s": round(best["import_s"], 3),
            "open_journal_s": round(best["open_journal_s"], 3),
            "recover_s": round(best["recover_s"], 4),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
            "vm_hwm_mb": round(max(r["vm_hwm_mb"] for r in runs), 1),
            **built,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        }


_GEN = ("parcels_per_h", "hours", "open", "lines", "seed")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels-per-h", type=float, default=80_000, help="parcels per hour")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of journal")
    parser.add_argument("--open", type=int, default=2000, help="parcels open at the end")
    parser.add_argument("--lines", type=int, default=4, help="sorter lines")
    parser.add_argument("--horizon-h", type=float, default=24.0, help="recovery horizon")
    parser.add_argument("--repeat", type=int, default=3, help="measured starts (best reported)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generator")
    parser.add_argument("--keep", metavar="PATH", help="journal file to reuse or to keep")
    parser.add_argument("--build-into", metavar="PATH", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        sys.exit(0)
    options = parse(sys.argv[1:])
    if options.build_into:
        print(json.dumps(build(Path(options.build_into), options)))
        sys.exit(0)
    print(json.dumps(main(options)))
