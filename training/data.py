"""Datasets of preprocessed synthetic X-ray images, rendered in parallel and cached on disk.

Every image is rendered raw (uint16, scanner size) by :mod:`simulation.xray_synth` and then
passed through its reference :func:`~simulation.xray_synth.preprocess`, so the model trains on
exactly the pixels the inference service computes from a scanner image. The cache holds the
log-transmission images before standardisation (mean 0, std 1 spec), keyed by seed range.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from simulation.xray_synth import THREAT_CLASSES, PreprocessSpec, dataset_sample, preprocess

#: Model input geometry: 768×1024 raw pixels averaged over 8×8 blocks.
INPUT_SPEC = PreprocessSpec(
    channels=1, height=96, width=128, log_transmission=True, mean=(0.0,), std=(1.0,)
)


@dataclass(frozen=True, slots=True)
class Split:
    """Images ``x`` (N, C, H, W) float32 (log transmission, not standardised), labels ``y``
    (N, K) in :data:`THREAT_CLASSES` order, and the seeds they were rendered from."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    seeds: npt.NDArray[np.int64]


def render_one(seed: int, spec: PreprocessSpec = INPUT_SPEC) -> tuple[np.ndarray, np.ndarray]:
    """One dataset image at ``seed``: its preprocessed pixels and its label vector."""
    sample = dataset_sample(seed)
    label = np.array([sample.labels[name] for name in THREAT_CLASSES], dtype=np.float32)
    return preprocess(sample.pixels, spec), label


def _render_chunk(seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [render_one(seed) for seed in seeds]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def render_split(
    first_seed: int,
    count: int,
    *,
    workers: int = 1,
    cache_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Split:
    """Render seeds ``first_seed .. first_seed + count - 1``, from the cache when present."""
    seeds = np.arange(first_seed, first_seed + count, dtype=np.int64)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(
            (Path(__file__).parent.parent / "simulation" / "xray_synth.py").read_bytes()
        ).hexdigest()[:10]
        path = cache_dir / f"xray-{first_seed}-{count}-{key}.npz"
        if path.exists():
            with np.load(path) as cached:
                if progress is not None:
                    progress(count)
                return Split(cached["x"], cached["y"], seeds)
    chunks = [seeds[i : i + 64].tolist() for i in range(0, count, 64)]
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    if workers <= 1:
        results = map(_render_chunk, chunks)
        for x, y in results:
            xs.append(x)
            ys.append(y)
            if progress is not None:
                progress(len(x))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for x, y in pool.imap(_render_chunk, chunks):
                xs.append(x)
                ys.append(y)
                if progress is not None:
                    progress(len(x))
    split = Split(np.concatenate(xs), np.concatenate(ys), seeds)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=split.x, y=split.y)
        tmp.replace(path)
    return split
