"""Tiny ONNX models that follow the CargoGate model contract, built with ``onnx.helper``.

Tests use these so they do not depend on the shipped model. Each scores per-channel means
through a fixed linear layer and a sigmoid, so scores depend on the image. Two variants
misbehave on demand, with real onnxruntime behaviour: when the mean of the input tensor
exceeds ``trigger`` a "fail" model indexes out of bounds (onnxruntime raises) and a "stuck"
model spins in a ``Loop`` of 10^12 iterations until the run is terminated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ("firearm", "blade", "lithium_battery", "liquid_container", "narcotics_organic")
Behaviour = Literal["normal", "fail", "stuck"]


def contract_metadata(
    classes: Sequence[str] = CLASSES,
    channels: int = 1,
    height: int = 32,
    width: int = 32,
    log_transmission: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    version: str = "test0001",
) -> dict[str, str]:
    return {
        "cargogate.classes": json.dumps(list(classes)),
        "cargogate.input": json.dumps(
            {"channels": channels, "height": height, "width": width, "layout": "NCHW"}
        ),
        "cargogate.preprocess": json.dumps(
            {
                "log_transmission": log_transmission,
                "mean": list(mean) if mean is not None else [0.0] * channels,
                "std": list(std) if std is not None else [1.0] * channels,
            }
        ),
        "cargogate.thresholds": json.dumps({c: {"alarm": 0.5, "clear": 0.1} for c in classes}),
        "cargogate.version": json.dumps(version),
        "cargogate.trained_on": json.dumps("nothing: a test fixture"),
    }


def build_model(
    path: Path,
    *,
    classes: Sequence[str] = CLASSES,
    channels: int = 1,
    height: int = 32,
    width: int = 32,
    log_transmission: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    version: str = "test0001",
    behaviour: Behaviour = "normal",
    trigger: float = 0.9,
    metadata: Mapping[str, str] | None = None,
    input_name: str = "image",
) -> Path:
    """Write a contract-following model to ``path`` and return the path."""
    k = len(classes)
    rng = np.random.default_rng(7)
    weights = rng.normal(0.0, 3.0, size=(channels, k)).astype(np.float32)
    bias = np.linspace(-2.0, 1.0, k, dtype=np.float32)
    inits = [
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
        numpy_helper.from_array(np.array(trigger, np.float32), "trigger"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", [input_name, "hw_axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["clean_scores"]),
        helper.make_node("ReduceMean", [input_name], ["overall"], keepdims=0),
        helper.make_node("Greater", ["overall", "trigger"], ["triggered"]),
        helper.make_node("Cast", ["triggered"], ["triggered_i"], to=TensorProto.INT64),
    ]
    if behaviour == "normal":
        nodes.append(helper.make_node("Identity", ["clean_scores"], ["scores"]))
    elif behaviour == "fail":
        inits += [
            numpy_helper.from_array(np.array([0.0, 0.0], np.float32), "table"),
            numpy_helper.from_array(np.array(1000, np.int64), "far"),
        ]
        nodes += [
            helper.make_node("Mul", ["triggered_i", "far"], ["index"]),
            helper.make_node("Gather", ["table", "index"], ["picked"]),
            helper.make_node("Add", ["clean_scores", "picked"], ["scores"]),
        ]
    else:
        inits += [
            numpy_helper.from_array(np.array(10**12, np.int64), "many"),
            numpy_helper.from_array(np.array(True), "keep_going"),
            numpy_helper.from_array(np.array(0.0, np.float32), "acc0"),
        ]
        nodes += [
            helper.make_node("Mul", ["triggered_i", "many"], ["trips"]),
            helper.make_node("Loop", ["trips", "keep_going", "acc0"], ["acc"], body=_spin_body()),
            helper.make_node("Mul", ["acc", "zero"], ["nothing"]),
            helper.make_node("Add", ["clean_scores", "nothing"], ["scores"]),
        ]
    graph = helper.make_graph(
        nodes,
        "cargogate_test_model",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, ["N", channels, height, width]
            )
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = (
        metadata
        if metadata is not None
        else contract_metadata(
            classes, channels, height, width, log_transmission, mean, std, version
        )
    )
    helper.set_model_props(model, dict(meta))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _spin_body() -> onnx.GraphProto:
    return helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )


def reference_scores(path: Path, batch: np.ndarray) -> np.ndarray:
    """Scores from onnx's own reference evaluator: an oracle independent of onnxruntime."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load(str(path)))
    (scores,) = evaluator.run(["scores"], {"image": batch.astype(np.float32)})
    return np.asarray(scores)
