"""Twin speed: a day at 20,000 parcels/h on one line with the real policy in the loop.

Prints one JSON object: parcels, wall_s, cpu_s, parcels_per_s, events_per_s, peak_rss_mb
(targets: wall_s <= 30 for 24 h on one core, peak_rss_mb <= 1024), plus the machine's bare
SimPy event rate measured right after the run, to compare runs on busy or different machines.
``--fidelity full`` runs the asyncio controller core through its ports instead (much slower;
use --hours 1).

    .venv/bin/python bench/twin_speed.py            # the full day, fast path
    .venv/bin/python bench/twin_speed.py --hours 2 --fidelity full
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulation.offline import run_full
from simulation.run import run_fast
from simulation.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "config" / "scenarios" / "bench-day.yaml"


def simpy_calibration(events: int = 200_000) -> float:
    """Bare SimPy timeouts with callbacks per CPU second on this machine, right now: the
    yardstick for comparing runs on machines of different speed or load."""
    import simpy

    env = simpy.Environment()
    left = [events]

    def again(_: simpy.Event) -> None:
        left[0] -= 1
        if left[0] > 0:
            env.timeout(1.0).callbacks.append(again)

    for i in range(8):
        env.timeout(i).callbacks.append(again)
    start = time.process_time()
    env.run()
    return events / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--rate", type=float, default=20000.0, help="parcels per hour")
    parser.add_argument("--fidelity", choices=["fast", "full"], default="fast")
    args = parser.parse_args()
    bundle = load_scenario(
        SCENARIO,
        horizon_h=args.hours,
        arrivals={"steady": [{"from_h": 0, "to_h": args.hours, "parcels_per_h": args.rate}]},
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = (run_fast if args.fidelity == "fast" else run_full)(bundle)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    parcels = len(run.records)
    print(
        json.dumps(
            {
                "benchmark": "twin_speed",
                "fidelity": run.fidelity,
                "hours": args.hours,
                "parcels": parcels,
                "open_at_end": run.open_parcels,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "parcels_per_s": round(parcels / wall),
                "events_per_s": round(run.events / wall),
                "events": run.events,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "share_within_150s": run.controller_kpis["share_within_target"],
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "simpy_timeouts_per_cpu_s": round(simpy_calibration()),
            }
        )
    )


if __name__ == "__main__":
    main()
