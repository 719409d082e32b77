"""The ONNX model shipped in models/: its contract, its numerics and that it detects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from simulation import xray_synth as xs

MODEL = Path(__file__).resolve().parent.parent / "models" / "xray-cnn-v1.onnx"
KEYS = (
    "cargogate.classes",
    "cargogate.input",
    "cargogate.preprocess",
    "cargogate.thresholds",
    "cargogate.version",
    "cargogate.trained_on",
)


@pytest.fixture(scope="module")
def proto() -> onnx.ModelProto:
    return onnx.load(str(MODEL))


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def meta(proto: onnx.ModelProto) -> dict[str, Any]:
    return {p.key: json.loads(p.value) for p in proto.metadata_props}


@pytest.fixture(scope="module")
def spec(proto: onnx.ModelProto) -> xs.PreprocessSpec:
    return xs.spec_from_metadata({p.key: p.value for p in proto.metadata_props})


def _batch(spec: xs.PreprocessSpec, seeds: list[int], threat: str | None) -> np.ndarray:
    return xs.preprocess_batch(
        (xs.render_parcel(s, threat, clutter=(1, 4)).pixels for s in seeds), spec
    )


def _named(meta: dict[str, Any], row: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(meta["cargogate.classes"], row, strict=True)}


def test_file_is_small_and_valid(proto: onnx.ModelProto) -> None:
    assert MODEL.stat().st_size < 5 * 1024 * 1024
    onnx.checker.check_model(proto, full_check=True)
    opset = {o.domain: o.version for o in proto.opset_import}
    assert opset.get("", opset.get("ai.onnx", 0)) >= 17


def test_metadata_is_complete_and_consistent(proto: onnx.ModelProto, meta: dict[str, Any]) -> None:
    assert set(KEYS) <= set(meta)
    classes = meta["cargogate.classes"]
    assert classes == list(xs.THREAT_CLASSES)
    assert len(set(classes)) == len(classes)
    geometry = meta["cargogate.input"]
    assert geometry["layout"] == "NCHW"
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "image"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [
        geometry["channels"],
        geometry["height"],
        geometry["width"],
    ]
    (graph_output,) = proto.graph.output
    assert graph_output.name == "scores"
    assert graph_output.type.tensor_type.shape.dim[1].dim_value == len(classes)
    pre = meta["cargogate.preprocess"]
    assert isinstance(pre["log_transmission"], bool)
    assert len(pre["mean"]) == len(pre["std"]) == geometry["channels"]
    assert all(s > 0 for s in pre["std"])
    for name in classes:
        limits = meta["cargogate.thresholds"][name]
        assert 0 < limits["clear"] <= limits["alarm"] < 1
    assert meta["cargogate.trained_on"] == "synthetic images only"


def test_version_is_the_hash_of_the_weights(proto: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Recomputed here from the file: sha256 over (name, shape, raw bytes) of each
    initializer in name order, first 12 hex digits (docs/model-card.md)."""
    digest = hashlib.sha256()
    for tensor in sorted(proto.graph.initializer, key=lambda t: t.name):
        array = numpy_helper.to_array(tensor)
        digest.update(tensor.name.encode())
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    assert meta["cargogate.version"] == digest.hexdigest()[:12]


def test_scores_shape_range_and_determinism(
    session: ort.InferenceSession, spec: xs.PreprocessSpec
) -> None:
    x = _batch(spec, [301, 302, 303], "blade")
    first = session.run(["scores"], {"image": x})[0]
    again = session.run(["scores"], {"image": x})[0]
    assert first.dtype == np.float32
    assert first.shape == (3, len(xs.THREAT_CLASSES))
    assert np.all((first >= 0) & (first <= 1))
    assert np.array_equal(first, again)
    one_by_one = np.concatenate(
        [session.run(["scores"], {"image": x[i : i + 1]})[0] for i in range(3)]
    )
    np.testing.assert_allclose(one_by_one, first, atol=1e-5)


def test_reference_evaluator_agrees_with_onnxruntime(
    proto: onnx.ModelProto, session: ort.InferenceSession, spec: xs.PreprocessSpec
) -> None:
    x = np.concatenate([_batch(spec, [401], "firearm"), _batch(spec, [402, 403], None)])
    ours = session.run(["scores"], {"image": x})[0]
    (reference,) = ReferenceEvaluator(proto).run(None, {"image": x})
    np.testing.assert_allclose(np.asarray(reference, dtype=np.float32), ours, atol=1e-4)


@pytest.mark.parametrize("seed", [7001, 7002, 7003, 7004])
def test_detects_a_clearly_rendered_firearm(
    session: ort.InferenceSession, spec: xs.PreprocessSpec, meta: dict[str, Any], seed: int
) -> None:
    x = _batch(spec, [seed], "firearm")
    scores = _named(meta, session.run(["scores"], {"image": x})[0][0])
    assert scores["firearm"] >= meta["cargogate.thresholds"]["firearm"]["alarm"]


#: A parcel an officer would wave through at a glance: soft goods only.
SOFT_GOODS = ("clothes", "book", "shoe")


@pytest.mark.parametrize("seed", [7101, 7102, 7103, 7104])
def test_clearly_benign_parcel_stays_below_alarm(
    session: ort.InferenceSession, spec: xs.PreprocessSpec, meta: dict[str, Any], seed: int
) -> None:
    raw = xs.render_parcel(seed, None, clutter=(2, 5), clutter_kinds=SOFT_GOODS).pixels
    x = xs.preprocess_batch([raw], spec)
    scores = _named(meta, session.run(["scores"], {"image": x})[0][0])
    for name, score in scores.items():
        assert score < meta["cargogate.thresholds"][name]["alarm"], name
