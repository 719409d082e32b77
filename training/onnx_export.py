"""Write a folded net as an ONNX model with the CargoGate metadata contract.

The graph is built node by node with ``onnx.helper`` (no exporter in between), so the file
depends only on the weights and is byte-for-byte reproducible. Contract (docs/model-card.md):
input ``image`` float32 [N, C, H, W] with dynamic N; output ``scores`` float32 [N, K],
sigmoid probabilities; metadata ``cargogate.*`` as JSON strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from simulation.xray_synth import PreprocessSpec
from training.net import FoldedNet

OPSET = 17


def weights_version(initializers: Sequence[onnx.TensorProto]) -> str:
    """First 12 hex digits of sha256 over the initializers' names, shapes and raw bytes."""
    digest = hashlib.sha256()
    for tensor in sorted(initializers, key=lambda t: t.name):
        array = numpy_helper.to_array(tensor)
        digest.update(tensor.name.encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]


def build_model(
    net: FoldedNet,
    spec: PreprocessSpec,
    classes: Sequence[str],
    thresholds: Mapping[str, Mapping[str, float]],
) -> onnx.ModelProto:
    """The ONNX model of ``net`` with the full metadata contract filled in."""
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x = "image"
    for i, conv in enumerate(net.convs):
        k = conv.weight.shape[-1]
        inits += [
            numpy_helper.from_array(conv.weight, f"conv{i}.weight"),
            numpy_helper.from_array(conv.bias, f"conv{i}.bias"),
        ]
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"conv{i}.weight", f"conv{i}.bias"],
                [f"conv{i}"],
                kernel_shape=[k, k],
                strides=[conv.stride, conv.stride],
                pads=[k // 2] * 4,
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        x = f"relu{i}"
        if conv.pool:
            nodes.append(
                helper.make_node("MaxPool", [x], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2])
            )
            x = f"pool{i}"
    inits += [
        numpy_helper.from_array(net.head_weight, "head.weight"),
        numpy_helper.from_array(net.head_bias, "head.bias"),
    ]
    nodes += [
        helper.make_node("GlobalMaxPool", [x], ["gmax"]),
        helper.make_node("GlobalAveragePool", [x], ["gavg"]),
        helper.make_node("Concat", ["gmax", "gavg"], ["pooled4d"], axis=1),
        helper.make_node("Flatten", ["pooled4d"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "head.weight", "head.bias"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cargogate_xray_cnn",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", spec.channels, spec.height, spec.width]
            )
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(classes)])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="cargogate-training",
        ir_version=8,
    )
    model.doc_string = "CargoGate X-ray prohibited-item scorer; trained on synthetic images only."
    metadata = {
        "cargogate.classes": list(classes),
        "cargogate.input": {
            "channels": spec.channels,
            "height": spec.height,
            "width": spec.width,
            "layout": "NCHW",
        },
        "cargogate.preprocess": {
            "log_transmission": spec.log_transmission,
            "source_max": "dtype",
            "resize": "area",
            "order": ["scale_to_transmission", "area_resize", "neg_log", "standardize"],
            "eps": spec.eps,
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
        "cargogate.thresholds": {name: dict(thresholds[name]) for name in classes},
        "cargogate.version": weights_version(inits),
        "cargogate.trained_on": "synthetic images only",
    }
    helper.set_model_props(model, {key: json.dumps(value) for key, value in metadata.items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)
