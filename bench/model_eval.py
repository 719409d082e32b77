"""Per-class recall and false-alarm rate of an ONNX X-ray model on the held-out synthetic set.

Renders parcels with ``simulation.xray_synth`` at seeds the training never saw (default
2,000,000 onwards), preprocesses each raw 768×1024 uint16 image exactly as the model's
metadata says (``xray_synth.preprocess``), scores them with onnxruntime and prints one JSON
object: for each class its alarm threshold (from the model's metadata), the number of images
with and without the class, recall (share with the class scoring ≥ alarm) and false-alarm
rate (share without the class scoring ≥ alarm).

    python bench/model_eval.py [--model models/xray-cnn-v1.onnx] [--count 4000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from simulation.xray_synth import (
    THREAT_CLASSES,
    PreprocessSpec,
    dataset_sample,
    preprocess,
    spec_from_metadata,
)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "xray-cnn-v1.onnx"
TEST_FIRST_SEED = 2_000_000


def _render(args: tuple[list[int], PreprocessSpec]) -> tuple[np.ndarray, np.ndarray]:
    seeds, spec = args
    xs, ys = [], []
    for seed in seeds:
        sample = dataset_sample(seed)
        xs.append(preprocess(sample.pixels, spec))
        ys.append([sample.labels[name] for name in THREAT_CLASSES])
    return np.stack(xs), np.asarray(ys, dtype=np.float32)


def _rate(hits: npt.NDArray[np.bool_]) -> float | None:
    return round(float(hits.mean()), 4) if hits.size else None


def _threshold_free(pos: npt.NDArray[np.float32], neg: npt.NDArray[np.float32]) -> dict[str, Any]:
    """Ranking quality, independent of the shipped thresholds: ROC AUC, and the recall a
    threshold set at exactly 5 % false alarms on this set would reach (for comparison only;
    thresholds are never chosen on the held-out set)."""
    if not pos.size or not neg.size:
        return {}
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]), kind="stable"), kind="stable") + 1
    auc = (ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size)
    at_5 = np.sort(neg)[len(neg) - int(np.floor(0.05 * len(neg))) - 1]
    return {
        "roc_auc": round(float(auc), 4),
        "recall_at_5pct_false_alarm": round(float((pos > at_5).mean()), 4),
    }


def evaluate(
    model: Path, first_seed: int, count: int, workers: int, threads: int
) -> dict[str, object]:
    """Score ``count`` held-out parcels from ``first_seed`` and summarise per class."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    spec = spec_from_metadata(props)
    classes = json.loads(props["cargogate.classes"])
    limits = json.loads(props["cargogate.thresholds"])
    started = time.perf_counter()
    chunks = [
        (list(range(s, min(s + 50, first_seed + count))), spec)
        for s in range(first_seed, first_seed + count, 50)
    ]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_render, chunks)
    else:
        parts = [_render(chunk) for chunk in chunks]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    rendered = time.perf_counter()
    scores = np.concatenate(
        [session.run(["scores"], {"image": x[i : i + 128]})[0] for i in range(0, len(x), 128)]
    )
    report: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(classes):
        alarm = float(limits[name]["alarm"])
        if name not in THREAT_CLASSES:
            report[name] = {"alarm": alarm, "note": "the generator renders no such class"}
            continue
        truth = y[:, THREAT_CLASSES.index(name)] > 0.5
        hit = scores[:, k] >= alarm
        report[name] = {
            "alarm": alarm,
            "clear": float(limits[name]["clear"]),
            "n_positive": int(truth.sum()),
            "n_negative": int((~truth).sum()),
            "recall": _rate(hit[truth]),
            "false_alarm_rate": _rate(hit[~truth]),
            "positives_below_clear": _rate(scores[truth, k] < float(limits[name]["clear"])),
            "negatives_below_clear": _rate(scores[~truth, k] < float(limits[name]["clear"])),
            **_threshold_free(scores[truth, k], scores[~truth, k]),
        }
    gate: dict[str, bool] = {}
    for name in ("firearm", "blade"):
        row = report.get(name)
        if isinstance(row, dict) and row.get("recall") is not None:
            gate[name] = row["recall"] >= 0.98 and row["false_alarm_rate"] <= 0.05
    return {
        "model": model.name,
        "version": json.loads(props["cargogate.version"]),
        "trained_on": json.loads(props.get("cargogate.trained_on", "null")),
        "seeds": [first_seed, first_seed + count - 1],
        "n_images": len(x),
        "classes": report,
        "target_recall_0.98_at_fa_0.05": gate,
        "render_s": round(rendered - started, 1),
        "score_s": round(time.perf_counter() - rendered, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model to score")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=TEST_FIRST_SEED,
        help="first held-out seed (training uses 0.., validation 1,000,000..)",
    )
    parser.add_argument("--count", type=int, default=4000, help="held-out parcels to render")
    parser.add_argument("--workers", type=int, default=2, help="processes that render images")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"--model {args.model}: no such file; expected an ONNX model", file=sys.stderr)
        return 2
    if args.count < 1:
        print(f"--count {args.count}: expected at least 1", file=sys.stderr)
        return 2
    try:
        result = evaluate(args.model, args.first_seed, args.count, args.workers, args.threads)
    except ValueError as exc:
        print(f"{args.model}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
