"""Settings for the on-site X-ray model (site file ``xray: {type: onnx, ...}``).

Pydantic only: the service that loads onnxruntime is built by
:mod:`controller.inference.factory`, named in :mod:`controller.inference.registration`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat


class OnnxXray(BaseModel):
    """Score each parcel's image with an ONNX model that follows the CargoGate contract.

    The class list, input size and preprocessing come from the model's own metadata, so
    another model is dropped in by changing ``model`` alone; ``policy.classes`` must name only
    classes the model scores (checked at start-up).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["onnx"]
    model: Path
    intra_op_threads: int = Field(default=1, ge=1, le=64)
    """onnxruntime threads per run (one parcel image or one micro-batch)."""
    preprocess_threads: int = Field(default=1, ge=1, le=64)
    """Threads that turn raw images into tensors, in parallel with the session run."""
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    """Execution providers in order of preference; unavailable ones fall back to the CPU."""
    max_batch: int = Field(default=8, ge=1, le=256)
    batch_window_ms: float = Field(default=2.0, ge=0, le=1000)
    """How long the first request of a batch waits for company (cut short by deadlines)."""
    timeout_s: PositiveFloat = 1.0
    """A run taking longer counts as a stuck session: it is aborted and the session restarted."""
    image_wait_s: PositiveFloat = 3.0
    """How long to wait for the parcel's image before answering MISSING."""
    max_restarts: int = Field(default=3, ge=0, le=100)
    """Session restarts allowed without a healthy run in between; then inference stays failed."""
    warmup: bool = True
