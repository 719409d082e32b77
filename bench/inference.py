"""Benchmark of on-site X-ray inference; prints one JSON object.

Measures, for a raw 1024×768 uint16 scanner image: model load time; latency from raw image to
scores at batch 1 on one thread, preprocessing included (directly, and through the asyncio
service); images/s through the service with micro-batching on one CPU and on two; peak RSS;
and the event-loop lag while inference runs on the loop versus in the service's executor.

Uses the first ``models/*.onnx`` if one is shipped, else a stand-in CNN built here with
``onnx.helper`` (random weights, the same contract); the JSON says which.

    .venv/bin/python bench/inference.py [--model PATH] [--iterations 300] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.core.ports import ScanImage  # noqa: E402
from controller.inference.preprocess import preprocess  # noqa: E402
from controller.inference.service import OnnxXrayService  # noqa: E402
from controller.inference.session import ModelSession  # noqa: E402
from controller.inference.settings import OnnxXray  # noqa: E402

CLASSES = ["firearm", "blade", "lithium_battery", "liquid_container", "narcotics_organic"]


class NoImages:
    async def image_for(self, line: str, tracking_id: int, hawb: str) -> ScanImage:
        raise RuntimeError("the benchmark scores arrays directly")


def standin_model(path: Path, channels: int = 1, size: int = 128) -> Path:
    """A small CNN (3 strided convs, 16/32/64 channels, GAP, linear, sigmoid), random weights."""
    # Lazy vendor import: only needed when no model is shipped, and loading onnx would add to
    # the peak RSS this benchmark reports.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    prev, c_in = "image", channels
    for i, c_out in enumerate((16, 32, 64)):
        w = rng.normal(0, (2 / (9 * c_in)) ** 0.5, (c_out, c_in, 3, 3)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node(
                "Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1]
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev, c_in = f"r{i}", c_out
    fc = rng.normal(0, 0.1, (c_in, len(CLASSES))).astype(np.float32)
    inits += [
        numpy_helper.from_array(fc, "fc"),
        numpy_helper.from_array(np.full(len(CLASSES), -2.0, np.float32), "fcb"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(CLASSES)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    helper.set_model_props(
        model,
        {
            "cargogate.classes": json.dumps(CLASSES),
            "cargogate.input": json.dumps(
                {"channels": channels, "height": size, "width": size, "layout": "NCHW"}
            ),
            "cargogate.preprocess": json.dumps(
                {"log_transmission": True, "mean": [1.0] * channels, "std": [1.0] * channels}
            ),
            "cargogate.version": json.dumps("standin"),
            "cargogate.trained_on": json.dumps("nothing (random weights, benchmark only)"),
        },
    )
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def raw_image(channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (768, 1024) if channels == 1 else (channels, 768, 1024)
    return rng.integers(2000, 60000, size=shape, dtype=np.uint16)


@contextlib.contextmanager
def cpus(count: int) -> Iterator[None]:
    """Threads created inside run on the first ``count`` CPUs (Linux); others unchanged."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def direct_latency(model: Path, iterations: int) -> tuple[float, dict[str, float]]:
    """Raw image → scores on the calling thread, one intra-op thread, batch 1."""
    started = time.perf_counter()
    session = ModelSession(model, 1, ["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000
    c = session.contract
    raw = raw_image(c.channels)
    for _ in range(10):
        session.run(preprocess(raw, c)[None])
    total, prep = [], []
    for _ in range(iterations):
        t0 = time.perf_counter()
        tensor = preprocess(raw, c)
        t1 = time.perf_counter()
        session.run(tensor[None])
        t2 = time.perf_counter()
        total.append((t2 - t0) * 1000)
        prep.append((t1 - t0) * 1000)
    return load_ms, {
        "p50_ms": statistics.median(total),
        "p99_ms": percentile(total, 99),
        "preprocess_p50_ms": statistics.median(prep),
        "model_p50_ms": statistics.median([a - b for a, b in zip(total, prep, strict=True)]),
    }


def settings(model: Path, threads: int, **extra: object) -> OnnxXray:
    return OnnxXray.model_validate(
        {
            "type": "onnx",
            "model": model,
            "intra_op_threads": threads,
            "preprocess_threads": threads,
            **extra,
        }
    )


async def service_latency(model: Path, iterations: int) -> dict[str, float]:
    svc = OnnxXrayService(settings(model, 1, batch_window_ms=0), NoImages())
    async with svc:
        raw = raw_image(svc.contract.channels)
        for _ in range(10):
            await svc.score(raw)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            await svc.score(raw)
            times.append((time.perf_counter() - t0) * 1000)
    return {"service_p50_ms": statistics.median(times), "service_p99_ms": percentile(times, 99)}


async def throughput(
    model: Path, threads: int, seconds: float, clients: int = 32
) -> dict[str, float]:
    svc = OnnxXrayService(settings(model, threads, max_batch=16, batch_window_ms=2.0), NoImages())
    async with svc:
        raws = [raw_image(svc.contract.channels, seed=i) for i in range(4)]
        for raw in raws:
            await svc.score(raw)
        done = 0
        stop = time.perf_counter() + seconds

        async def client(n: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                result = await svc.score(raws[n % len(raws)])
                assert result.status.value == "ok", result.detail
                done += 1

        started = time.perf_counter()
        batches_before = svc.stats.batches
        images_before = svc.stats.images
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
        batches = svc.stats.batches - batches_before
        images = svc.stats.images - images_before
    return {"images_per_s": done / elapsed, "mean_batch": images / max(batches, 1)}


async def loop_lag(model: Path, seconds: float) -> dict[str, float]:
    """Lag of a 1 ms ticker while batches of 8 run on the loop, then through the service."""

    async def measure(work: object) -> float:
        lags: list[float] = []
        stop = time.perf_counter() + seconds

        async def ticker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - t0 - 0.001) * 1000)

        async def load() -> None:
            while time.perf_counter() < stop:
                await work()  # type: ignore[operator]

        await asyncio.gather(ticker(), load())
        return percentile(lags, 99)

    session = ModelSession(model, 1, ["CPUExecutionProvider"])
    c = session.contract
    raw = raw_image(c.channels)
    batch = np.stack([preprocess(raw, c)] * 8)

    async def on_loop() -> None:
        session.run(batch)  # blocks the loop: what not to do
        await asyncio.sleep(0)

    blocked = await measure(on_loop)
    svc = OnnxXrayService(settings(model, 1, max_batch=8, batch_window_ms=2.0), NoImages())
    async with svc:

        async def via_service() -> None:
            await asyncio.gather(*(svc.score(raw) for _ in range(8)))

        free = await measure(via_service)
    return {"loop_lag_p99_ms_run_on_loop": blocked, "loop_lag_p99_ms_service": free}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: models/*.onnx)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    shipped = sorted((ROOT / "models").glob("*.onnx"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, which = args.model, str(args.model)
        elif shipped:
            model, which = shipped[0], str(shipped[0].relative_to(ROOT))
        else:
            model = standin_model(Path(tmp) / "standin.onnx")
            which = "stand-in CNN built by bench/inference.py (no models/*.onnx shipped yet)"
        contract = ModelSession(model, 1, ["CPUExecutionProvider"]).contract
        with cpus(1):
            load_ms, latency = direct_latency(model, args.iterations)
            service = asyncio.run(service_latency(model, args.iterations))
            one = asyncio.run(throughput(model, 1, args.seconds))
        two = asyncio.run(throughput(model, 2, args.seconds))
        lag = asyncio.run(loop_lag(model, min(args.seconds, 3.0)))
    out = {
        "model": which,
        "model_version": contract.version,
        "input": [contract.channels, contract.height, contract.width],
        "raw_image": "1024x768 uint16"
        + ("" if contract.channels == 1 else f" x{contract.channels}"),
        "load_ms": round(load_ms, 2),
        **{k: round(v, 3) for k, v in latency.items()},
        **{k: round(v, 3) for k, v in service.items()},
        "images_per_s_1t": round(one["images_per_s"], 1),
        "mean_batch_1t": round(one["mean_batch"], 2),
        "images_per_s_2t": round(two["images_per_s"], 1),
        "mean_batch_2t": round(two["mean_batch"], 2),
        **{k: round(v, 3) for k, v in lag.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpus": os.cpu_count(),
        "notes": "1t figures run pinned to one CPU (preprocessing and session share it); "
        "2t uses two intra-op and two preprocessing threads; targets: p50_ms <= 5, "
        "images_per_s_2t >= 300",
    }
    out["meets_p50_target"] = latency["p50_ms"] <= 5.0
    out["meets_throughput_target"] = two["images_per_s"] >= 300
    print(json.dumps(out))


if __name__ == "__main__":
    main()
