"""Preprocessing and the model contract, without a session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from controller.inference.contract import (
    ModelContract,
    ModelContractError,
    PolicyClassesError,
    Preprocessing,
    check_policy_classes,
    contract_from_metadata,
)
from controller.inference.preprocess import BadImageError, area_resize, preprocess
from tests.imaging.images import parcel_image
from tests.imaging.models import CLASSES, contract_metadata


def contract(
    channels: int = 1,
    height: int = 32,
    width: int = 32,
    log: bool = True,
    mean: float = 0.5,
    std: float = 0.25,
) -> ModelContract:
    return ModelContract(
        classes=CLASSES,
        channels=channels,
        height=height,
        width=width,
        preprocessing=Preprocessing(log, (mean,) * channels, (std,) * channels),
        thresholds={},
        version="v",
        trained_on="",
    )


def reference_area_resize(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Exact area average by replication: repeat each pixel out-size times, block-mean."""
    h, w = plane.shape
    big = np.repeat(np.repeat(plane.astype(np.float64), height, axis=0), width, axis=1)
    mean: np.ndarray = big.reshape(height, h, width, w).mean(axis=(1, 3))
    return mean


@pytest.mark.parametrize(
    ("h", "w", "oh", "ow"), [(96, 64, 32, 32), (13, 21, 5, 8), (50, 40, 7, 40)]
)
def test_area_resize_matches_exact_area_average(h: int, w: int, oh: int, ow: int) -> None:
    plane = np.random.default_rng(h * w).random((h, w)).astype(np.float32)
    got = area_resize(plane, oh, ow)
    assert got.dtype == np.float32
    assert got.shape == (oh, ow)
    np.testing.assert_allclose(got, reference_area_resize(plane, oh, ow), rtol=1e-5, atol=1e-6)


def test_integer_block_mean_is_exact_for_16_bit_input() -> None:
    raw = parcel_image(seed=3, height=768, width=1024, level=1.0)
    got = area_resize(raw, 128, 128)
    expected = raw.reshape(128, 6, 128, 8).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_8_bit_16_bit_and_float_images_of_one_scene_give_the_same_tensor() -> None:
    t8 = np.random.default_rng(5).integers(1, 256, size=(64, 96)).astype(np.uint8)
    t16 = (t8.astype(np.uint32) * 257).astype(np.uint16)  # 255 * 257 = 65535
    tf = t8.astype(np.float32) / 255
    c = contract()
    a, b, f = (preprocess(x, c) for x in (t8, t16, tf))
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, f, atol=1e-5)


def test_log_transmission_and_normalisation_follow_the_formula() -> None:
    raw = parcel_image(seed=9, height=64, width=64, level=1.0)
    c = contract(height=32, width=32, log=True, mean=0.7, std=0.3)
    t = raw.astype(np.float64).reshape(32, 2, 32, 2).mean(axis=(1, 3)) / 65535
    expected = (-np.log(np.maximum(t, 1e-4)) - 0.7) / 0.3
    np.testing.assert_allclose(preprocess(raw, c)[0], expected, rtol=1e-4, atol=1e-4)


def test_dual_energy_channels_are_normalised_separately() -> None:
    raw = np.stack([parcel_image(1, 64, 64), parcel_image(2, 64, 64)])
    c = ModelContract(CLASSES, 2, 32, 32, Preprocessing(False, (0.1, 0.2), (1.0, 2.0)), {}, "v", "")
    out = preprocess(raw, c)
    single = contract(height=32, width=32, log=False, mean=0.0, std=1.0)
    np.testing.assert_allclose(out[0], preprocess(raw[0], single)[0] - 0.1, atol=1e-6)
    np.testing.assert_allclose(out[1], (preprocess(raw[1], single)[0] - 0.2) / 2.0, atol=1e-6)


def test_matches_the_training_pipeline_preprocessing() -> None:
    synth = pytest.importorskip("simulation.xray_synth", reason="the X-ray generator is absent")
    for log, raw in [
        (True, synth.render_parcel(11, "blade").pixels),
        (False, synth.render_parcel(12, None).pixels),
        (True, parcel_image(4, 100, 70, 1.0)),  # non-integer factors
    ]:
        c = contract(height=64, width=64, log=log, mean=1.5, std=0.8)
        spec = synth.PreprocessSpec(1, 64, 64, log, (1.5,), (0.8,))
        np.testing.assert_allclose(preprocess(raw, c), synth.preprocess(raw, spec), atol=2e-5)


# --- bad images: each gets a clear error naming what is wrong ---------------------------------


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((0, 0), np.uint16), "empty"),
        (np.zeros((64, 0), np.uint8), "empty"),
        (np.zeros((64, 64), np.int32), "dtype is int32"),
        (np.zeros((64, 64), np.float16), "dtype is float16"),
        (np.zeros((64, 64), bool), "dtype is bool"),
        (np.zeros((64, 64), np.complex64), "dtype is complex64"),
        (np.zeros((2, 1, 64, 64), np.uint16), "4 dimensions"),
        (np.zeros(64, np.uint16), "1 dimensions"),
        (np.zeros((16, 16), np.uint16), "at least 32×32"),  # wrong size: smaller than the model
        (np.zeros((3, 64, 64), np.uint16), "3 channel(s)"),
        (np.broadcast_to(np.uint16(0), (9000, 64)), "limit is 8192 px a side"),
        (np.broadcast_to(np.uint16(0), (8000, 8001)), "64 MP"),
        (np.full((64, 64), np.nan, np.float32), "NaN or infinite"),
        (np.full((64, 64), np.inf, np.float64), "NaN or infinite"),
        (np.full((64, 64), 2.0, np.float32), "float images must hold transmission"),
        ([[1, 2], [3, 4]], "expected a numpy array"),
        (None, "expected a numpy array"),
    ],
)
def test_bad_images_raise_a_clear_error(pixels: object, message: str) -> None:
    with pytest.raises(BadImageError, match=None) as info:
        preprocess(pixels, contract())
    assert message in str(info.value)


def test_single_channel_image_for_a_dual_energy_model_is_refused() -> None:
    c = ModelContract(CLASSES, 2, 32, 32, Preprocessing(False, (0, 0), (1, 1)), {}, "v", "")
    with pytest.raises(BadImageError, match="single-channel image cannot feed"):
        preprocess(parcel_image(), c)


# --- the contract ------------------------------------------------------------------------------


def test_contract_is_read_from_metadata() -> None:
    meta = contract_metadata(channels=2, height=48, width=40, log_transmission=True)
    c = contract_from_metadata(meta)
    assert (c.channels, c.height, c.width) == (2, 48, 40)
    assert c.classes == CLASSES
    assert c.preprocessing.log_transmission is True
    assert c.version == "test0001"
    assert c.thresholds["firearm"] == {"alarm": 0.5, "clear": 0.1}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cargogate.classes", "[]", "non-empty JSON list"),
        ("cargogate.classes", "not json", "not valid JSON"),
        ("cargogate.classes", json.dumps(["a", "a"]), "repeats"),
        ("cargogate.input", json.dumps({"channels": 0, "height": 4, "width": 4}), "channels"),
        (
            "cargogate.input",
            json.dumps({"channels": 1, "height": 4, "width": 4, "layout": "NHWC"}),
            "NCHW",
        ),
        ("cargogate.preprocess", json.dumps({"mean": [0, 0], "std": [1]}), "mean"),
        ("cargogate.preprocess", json.dumps({"std": [0]}), "must be > 0"),
        ("cargogate.thresholds", json.dumps({"gun": {"alarm": 1, "clear": 0}}), "'gun'"),
        ("cargogate.version", '""', "empty"),
    ],
)
def test_bad_metadata_names_the_key(key: str, value: str, message: str) -> None:
    meta = contract_metadata()
    meta[key] = value
    with pytest.raises(ModelContractError, match=key.replace(".", r"\.")) as info:
        contract_from_metadata(meta)
    assert message in str(info.value)


def test_missing_metadata_keys_are_listed() -> None:
    meta = contract_metadata()
    del meta["cargogate.input"], meta["cargogate.version"]
    with pytest.raises(ModelContractError, match=r"cargogate\.input, cargogate\.version"):
        contract_from_metadata(meta)


def test_policy_classes_missing_from_the_model_are_named() -> None:
    c = contract_from_metadata(contract_metadata(classes=["firearm", "knife"]))
    check_policy_classes(c, ["firearm"], "m.onnx")
    with pytest.raises(PolicyClassesError) as info:
        check_policy_classes(c, ["firearm", "blade", "narcotics_organic"], "m.onnx")
    text = str(info.value)
    assert "'blade', 'narcotics_organic'" in text
    assert "['firearm', 'knife']" in text


def test_shipped_models_follow_the_contract() -> None:
    shipped = sorted(Path(__file__).parents[1].glob("models/*.onnx"))
    if not shipped:
        pytest.skip("no model shipped in models/ yet")
    for path in shipped:
        model = onnx.load(str(path))
        meta = {p.key: p.value for p in model.metadata_props}
        c = contract_from_metadata(meta, source=path.name)
        assert c.classes
        assert c.version
