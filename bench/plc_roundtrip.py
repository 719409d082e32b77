"""Destination request → reply round trip over OPC UA and Modbus TCP on loopback.

The emulated PLC (server, plant side) runs in a child process and measures, per parcel, the
time from its destination request to the controller's reply arriving in its reply ring; the
controller side (the real adapter answering at once) runs in this process. Each protocol is
driven at the target rate (4 lines × 20,000 parcels/h ≈ 22.2 parcels/s, Poisson arrivals),
after a discarded warm-up, then at doubling rates from 5× that until a phase is no longer
sustained. A phase is *sustained* when every reply arrived and its p99 stayed within the
150 ms reply budget (docs/plc-interface.md); ``max_rate_meeting_p99_target_pps`` is the highest
rate whose p99 also met the protocol's target (OPC UA 25 ms, Modbus 10 ms).

Prints one JSON object per protocol on its own line:
``{"protocol", "rate_pps", "p50_ms", "p99_ms", "max_ms", "max_sustained_parcels_per_s",
"headroom_x", "max_rate_meeting_p99_target_pps", "p99_target_ms", "phases": [...]}``;
p50/p99 are at the target rate.

    .venv/bin/python bench/plc_roundtrip.py [--phase-s 4] [--protocol opcua --protocol modbus]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.core.clock import MonotonicClock
from controller.core.domain import DestinationReply, DestinationRequest
from controller.core.reasons import Reason
from controller.core.settings import Line
from plc_adapters.emulator import EmulatedPlc
from plc_adapters.factory import build_wire_sorter
from plc_adapters.layout import Layout
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage
from plc_adapters.settings import ModbusSorter, OpcUaSorter

TARGET_PPS = 4 * 20_000 / 3600
SUSTAINED_P99_MS = 150.0
FREEZE_GC = os.environ.get("CARGOGATE_BENCH_GC_FREEZE") == "1"
P99_TARGET_MS = {"opcua": 25.0, "modbus": 10.0}
NAMESPACE = "urn:cargogate:bench"

LINE = Line.model_validate(
    {
        "id": "B1",
        "belt": {"speed_m_s": 2.0, "scan_to_divert_m": 12, "plc_margin_s": 0.5},
        "lanes": [{"id": 1, "kind": "release"}, {"id": 2, "kind": "inspection"},
                  {"id": 9, "kind": "exception"}],
    }
)  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def plc_side(protocol: str, ports: Any, go: Any, results: Any, phase_s: float) -> None:
    layout = Layout(64, 8)
    clock = MonotonicClock()
    image: OpcUaServerImage | ModbusServerImage
    if protocol == "opcua":
        image = OpcUaServerImage(OpcUaHost("127.0.0.1", 0, NAMESPACE), "B1", layout)
    else:
        image = ModbusServerImage("127.0.0.1", 0, 1, layout)
    sent: dict[int, float] = {}
    rtt: dict[int, float] = {}

    def on_reply(reply: DestinationReply) -> None:
        started = sent.get(reply.tracking_id)
        if started is not None and reply.tracking_id not in rtt:
            rtt[reply.tracking_id] = time.perf_counter() - started

    async with EmulatedPlc(LINE, layout, image, clock, on_reply=on_reply) as plc:
        if FREEZE_GC:
            gc.freeze()  # start-up objects out of the collector's way (see --gc-freeze)
        ports.put(image.endpoint)
        await asyncio.to_thread(go.wait)
        rng = random.Random(1)
        next_id = 1
        phases = []
        rate = TARGET_PPS
        first = True
        while True:
            ids = []
            length = 2.0 if first else (3 * phase_s if rate == TARGET_PPS else phase_s)
            end = time.perf_counter() + length
            due = time.perf_counter()
            while due < end:
                due += rng.expovariate(rate)
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[next_id] = time.perf_counter()
                plc.request(next_id, f"CG{next_id:09d}", clock.now())
                ids.append(next_id)
                next_id += 1
            await asyncio.sleep(1.0)  # let the last replies of the phase arrive
            got = [rtt[i] * 1000 for i in ids if i in rtt]
            p99 = percentile(got, 0.99) if got else float("inf")
            phase = {
                "rate_pps": round(rate, 1),
                "parcels": len(ids),
                "replied": len(got),
                "p50_ms": round(statistics.median(got), 2) if got else None,
                "p99_ms": round(p99, 2),
                "max_ms": round(max(got), 2) if got else None,
            }
            phase["sustained"] = len(got) == len(ids) and p99 <= SUSTAINED_P99_MS
            phase["meets_p99_target"] = len(got) == len(ids) and p99 <= P99_TARGET_MS[protocol]
            if first:  # warm-up: connections, caches, the clock mapping
                first = False
                continue
            phases.append(phase)
            if not phase["sustained"] or rate > 20_000:
                break
            rate = 5 * TARGET_PPS if rate == TARGET_PPS else rate * 2
        results.put(phases)


def run_plc(protocol: str, ports: Any, go: Any, results: Any, phase_s: float) -> None:
    asyncio.run(plc_side(protocol, ports, go, results, phase_s))


async def controller_side(protocol: str, endpoint: str, stop: asyncio.Event) -> None:
    settings: OpcUaSorter | ModbusSorter
    if protocol == "opcua":
        settings = OpcUaSorter(
            type="opcua", endpoint=endpoint, namespace_uri=NAMESPACE, link={"lane_slots": 8}
        )
    else:
        port = int(endpoint.rsplit(":", 1)[1].split("/")[0])
        settings = ModbusSorter(type="modbus", host="127.0.0.1", port=port, link={"lane_slots": 8})
    adapter = build_wire_sorter("B1", settings, MonotonicClock())

    async def answer() -> None:
        async for telegram in adapter.telegrams():
            if isinstance(telegram, DestinationRequest):
                reply = DestinationReply("B1", telegram.tracking_id, 1, Reason.LOW_RISK_CLEAN_XRAY)
                await adapter.reply(reply)
            adapter.acknowledge(telegram)  # nothing to journal here: at once

    task = asyncio.create_task(answer())
    if FREEZE_GC:
        gc.freeze()
    await stop.wait()
    task.cancel()
    await adapter.aclose()


def bench(protocol: str, phase_s: float) -> dict[str, Any]:
    context = mp.get_context("spawn")
    ports, results, go = context.Queue(), context.Queue(), context.Event()
    child = context.Process(target=run_plc, args=(protocol, ports, go, results, phase_s))
    child.start()
    endpoint = ports.get(timeout=120)

    async def main() -> list[dict[str, Any]]:
        stop = asyncio.Event()
        controller = asyncio.create_task(controller_side(protocol, endpoint, stop))
        await asyncio.sleep(2.0)  # connect and settle
        go.set()
        phases: list[dict[str, Any]] = await asyncio.to_thread(results.get, True, 600)
        stop.set()
        await controller
        return phases

    phases = asyncio.run(main())
    child.join(timeout=30)
    at_target = phases[0]
    sustained = [p["rate_pps"] for p in phases if p["sustained"]]
    best = max(sustained) if sustained else 0.0
    meeting = [p["rate_pps"] for p in phases if p["meets_p99_target"]]
    return {
        "protocol": protocol,
        "rate_pps": at_target["rate_pps"],
        "p50_ms": at_target["p50_ms"],
        "p99_ms": at_target["p99_ms"],
        "max_ms": at_target["max_ms"],
        "max_sustained_parcels_per_s": best,
        "headroom_x": round(best / TARGET_PPS, 1),
        "max_rate_meeting_p99_target_pps": max(meeting) if meeting else 0.0,
        "p99_target_ms": P99_TARGET_MS[protocol],
        "gc_freeze": FREEZE_GC,
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-s", type=float, default=4.0, help="seconds per offered rate")
    parser.add_argument("--protocol", action="append", choices=["opcua", "modbus"])
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after start-up on both sides (as a long-running service may)",
    )
    args = parser.parse_args()
    if args.gc_freeze:
        os.environ["CARGOGATE_BENCH_GC_FREEZE"] = "1"  # inherited by the spawned PLC process
        global FREEZE_GC
        FREEZE_GC = True
    for protocol in args.protocol or ["opcua", "modbus"]:
        print(json.dumps(bench(protocol, args.phase_s)), flush=True)


if __name__ == "__main__":
    main()
