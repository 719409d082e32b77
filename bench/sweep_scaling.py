"""Sweep scaling: the same grid on 1, then 2 local Dask workers (processes, one thread each).

Each count runs in a fresh interpreter, as each ``cargogate sweep`` does. Prints one JSON
object per worker count: workers, points, wall_s (everything a user waits for: the
interpreter and its imports, starting the cluster, the grid, closing the cluster), the parts
startup_s, grid_s and close_s, speedup and efficiency (speed-up / workers) against the first
count, whether the rows are identical to the first count's, and machine_efficiency: the same
ratio for a bare pure-Python loop run right after, the ceiling this machine allows now. The
target is efficiency >= 0.85 from 1 to 2 workers on a 2-core machine. Run it on a quiet
machine: the 1-minute load average is printed before each run, and the grid should take tens
of seconds on one worker.

    .venv/bin/python bench/sweep_scaling.py                    # 16 variants, 1 and 2 workers
    .venv/bin/python bench/sweep_scaling.py --workers 1,2,4 --hours 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulation.sweep import GridPoint, dask_client, grid, sweep_on

SCENARIO = Path(__file__).resolve().parents[1] / "config" / "scenarios" / "bench-day.yaml"
OFFICERS = (4, 6, 8, 10)
STATIONS = (12, 16, 20, 24)


def _spin(loops: int) -> None:
    total = 0
    for i in range(loops):
        total += i * i


def machine_efficiency(workers: int, loops: int = 20_000_000) -> float:
    """The same pure-Python loop in 1 and in ``workers`` processes at once: how far this
    machine itself scales right now (vCPUs that share a core, or other load, cap a sweep's
    efficiency at this)."""
    ctx = multiprocessing.get_context("spawn")

    def wall(n: int) -> float:
        procs = [ctx.Process(target=_spin, args=(loops,)) for _ in range(n)]
        start = time.perf_counter()
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        return time.perf_counter() - start

    return wall(1) / wall(workers)


def timed_sweep(
    points: list[GridPoint], workers: int, hours: float, chunk_size: int | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One sweep on a fresh local cluster of ``workers`` processes, timed in its parts."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with dask_client(workers=workers) as client:
        started = time.perf_counter()
        rows = sweep_on(client, SCENARIO, points, hours, chunk_size)
        computed = time.perf_counter()
    end = time.perf_counter()
    timing = {
        "workers": workers,
        "points": len(points),
        "cluster_s": round(end - start, 2),
        "startup_s": round(started - start, 2),
        "grid_s": round(computed - started, 2),
        "close_s": round(end - computed, 2),
        "load_avg_1m_before": round(load, 2),
    }
    return timing, rows


def in_fresh_process(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one count in a new interpreter, as each ``cargogate sweep`` is: it pays for its own
    imports and worker fork server, and leaves nothing warm for the next count."""
    command = [sys.executable, __file__, "--one", str(workers), "--hours", str(args.hours)]
    if args.chunk_size:
        command += ["--chunk-size", str(args.chunk_size)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    result["timing"] = {"wall_s": round(time.perf_counter() - start, 2), **result["timing"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", default="1,2", help="worker counts, comma-separated (default 1,2)"
    )
    parser.add_argument(
        "--hours", type=float, default=1.5, help="simulated hours per variant (default 1.5)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="points per task (default: a few per worker)"
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    points = grid(officers=OFFICERS, stations=STATIONS)
    if args.one is not None:  # the child: one count, timing and rows as JSON on stdout
        timing, rows = timed_sweep(points, args.one, args.hours, args.chunk_size)
        print(json.dumps({"timing": timing, "rows": rows}))
        return
    counts = [int(part) for part in args.workers.split(",")]
    first: dict[str, Any] | None = None
    for workers in counts:
        result = in_fresh_process(workers, args)
        timing, rows = result["timing"], result["rows"]
        first = first or result
        base = first["timing"]
        speedup = base["wall_s"] / timing["wall_s"] * base["workers"]
        report = {
            "benchmark": "sweep_scaling",
            **timing,
            "speedup": round(speedup, 3),
            "efficiency": round(speedup / workers, 3),
            "identical_rows": rows == first["rows"],
            "errors": [row["error"] for row in rows if row["error"]],
            "hours_per_variant": args.hours,
            "parcels_per_variant": rows[0]["parcels"],
            "cpus": os.cpu_count(),
            "machine_efficiency": round(machine_efficiency(workers), 3),
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
