"""One onnxruntime session and its options: the only module that imports onnxruntime.

Execution providers are tried in the order configured; any the installed onnxruntime lacks are
skipped with a log line, and the CPU provider is always appended as the fallback. A run can be
aborted from another thread (:meth:`ModelSession.terminate`), which is how the watchdog frees
a stuck session.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from controller.inference.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelContract,
    ModelContractError,
    contract_from_metadata,
)

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"


class ModelLoadError(RuntimeError):
    """The model file cannot be opened by onnxruntime; the message names the file and why."""


def choose_providers(wanted: list[str]) -> list[str]:
    """The configured providers this onnxruntime offers, in order, with the CPU last."""
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available and p != CPU]
    skipped = [p for p in wanted if p not in available]
    if skipped:
        log.warning(
            "execution provider(s) %s not available in this onnxruntime (have %s); "
            "falling back to %s",
            ", ".join(skipped),
            ", ".join(sorted(available)),
            CPU,
        )
    return [*chosen, CPU]


class ModelSession:
    """An inference session for a model that follows :mod:`controller.inference.contract`."""

    def __init__(self, path: Path, intra_op_threads: int, providers: list[str]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 4  # fatal only: the service reports run failures itself
        self.path = path
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=choose_providers(providers)
            )
        except Exception as exc:  # onnxruntime raises several unrelated types here
            raise ModelLoadError(f"model {path}: onnxruntime cannot load it: {exc}") from None
        self.providers: list[str] = list(self._session.get_providers())
        meta = self._session.get_modelmeta().custom_metadata_map
        self.contract: ModelContract = contract_from_metadata(meta, source=f"model {path}")
        self._check_signature()
        self._lock = threading.Lock()
        self._running: ort.RunOptions | None = None

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        where = f"model {self.path}"
        if list(inputs) != [INPUT_NAME]:
            raise ModelContractError(
                f"{where}: inputs are {list(inputs)}; expected exactly one named {INPUT_NAME!r}"
            )
        if OUTPUT_NAME not in outputs:
            raise ModelContractError(
                f"{where}: outputs are {list(outputs)}; expected one named {OUTPUT_NAME!r}"
            )
        shape = inputs[INPUT_NAME].shape
        c = self.contract
        expected = [c.channels, c.height, c.width]
        fixed = [d if isinstance(d, int) else None for d in shape[1:]]
        mismatch = len(fixed) != 3 or any(
            d is not None and d != e for d, e in zip(fixed, expected, strict=True)
        )
        if mismatch:
            raise ModelContractError(
                f"{where}: input {INPUT_NAME!r} has shape {shape}; the metadata says "
                f"[N, {c.channels}, {c.height}, {c.width}]"
            )
        if inputs[INPUT_NAME].type != "tensor(float)":
            raise ModelContractError(
                f"{where}: input {INPUT_NAME!r} is {inputs[INPUT_NAME].type}; expected "
                "tensor(float)"
            )

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Scores for an N×C×H×W batch (N×K). Blocks; call it off the event loop."""
        options = ort.RunOptions()
        with self._lock:
            self._running = options
        try:
            (scores,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch}, options)
        finally:
            with self._lock:
                self._running = None
        return np.asarray(scores, dtype=np.float32)

    def terminate(self) -> None:
        """Ask a run in progress to stop; it then raises in its own thread. Thread-safe."""
        with self._lock:
            if self._running is not None:
                self._running.terminate = True
