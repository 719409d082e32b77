"""A small ONNX model that follows the CargoGate model contract and misbehaves on demand.

It scores every class ``sigmoid(12 × mean - 6)`` of the image (a dark image is clean), so the
drill's parcels are released or inspected by the policy as with the shipped model. When any
image of a batch is bright (mean over 0.5) it misbehaves with real onnxruntime behaviour:
``hang`` spins in a ``Loop`` of 10**12 iterations until the run is terminated (a stuck
session), ``crash`` gathers out of bounds and onnxruntime raises (a failing session).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Behaviour = Literal["hang", "crash"]
SIZE = 32
"""The model's input: one channel of SIZE × SIZE."""


def build_model(path: Path, classes: Sequence[str], behaviour: Behaviour) -> Path:
    """Write the model to ``path`` (scoring ``classes``, the site's policy classes)."""
    k = len(classes)
    inits = [
        numpy_helper.from_array(np.full((1, k), 12.0, np.float32), "w"),
        numpy_helper.from_array(np.full((k,), -6.0, np.float32), "b"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
        numpy_helper.from_array(np.array(0.5, np.float32), "trigger"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image", "hw_axes"], ["means"], keepdims=0),
        helper.make_node("MatMul", ["means", "w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["clean"]),
        helper.make_node("ReduceMax", ["means"], ["brightest"], keepdims=0),
        helper.make_node("Greater", ["brightest", "trigger"], ["triggered"]),
        helper.make_node("Cast", ["triggered"], ["triggered_i"], to=TensorProto.INT64),
    ]
    if behaviour == "crash":
        inits += [
            numpy_helper.from_array(np.array([0.0, 0.0], np.float32), "table"),
            numpy_helper.from_array(np.array(1000, np.int64), "far"),
        ]
        nodes += [
            helper.make_node("Mul", ["triggered_i", "far"], ["index"]),
            helper.make_node("Gather", ["table", "index"], ["picked"]),
            helper.make_node("Add", ["clean", "picked"], ["scores"]),
        ]
    else:
        inits += [
            numpy_helper.from_array(np.array(10**12, np.int64), "many"),
            numpy_helper.from_array(np.array(True), "keep_going"),
            numpy_helper.from_array(np.array(0.0, np.float32), "acc0"),
        ]
        nodes += [
            helper.make_node("Mul", ["triggered_i", "many"], ["trips"]),
            helper.make_node("Loop", ["trips", "keep_going", "acc0"], ["acc"], body=_spin()),
            helper.make_node("Mul", ["acc", "zero"], ["nothing"]),
            helper.make_node("Add", ["clean", "nothing"], ["scores"]),
        ]
    graph = helper.make_graph(
        nodes,
        f"cargogate_drill_{behaviour}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, _contract(classes, behaviour))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _contract(classes: Sequence[str], behaviour: Behaviour) -> dict[str, str]:
    return {
        "cargogate.classes": json.dumps(list(classes)),
        "cargogate.input": json.dumps(
            {"channels": 1, "height": SIZE, "width": SIZE, "layout": "NCHW"}
        ),
        "cargogate.preprocess": json.dumps(
            {"log_transmission": False, "mean": [0.0], "std": [1.0]}
        ),
        "cargogate.thresholds": json.dumps({c: {"alarm": 0.5, "clear": 0.5} for c in classes}),
        "cargogate.version": json.dumps(f"drill-{behaviour}"),
        "cargogate.trained_on": json.dumps("nothing: a fault drill's model"),
    }


def _spin() -> onnx.GraphProto:
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
