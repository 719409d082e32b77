"""The synthetic X-ray generator: determinism, physics, noise, every class, preprocessing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulation import xray_synth as xs


def _single(part: xs.Part, seed: int = 1) -> xs.Scene:
    obj = xs.PlacedObject("probe", (part,), 300.0, 250.0, 0.3, False)
    return xs.Scene(seed=seed, threat=None, objects=(obj,), box_mm=(0, 0, 1, 1))


def _scene(*parts: xs.Part) -> xs.Scene:
    objs = tuple(
        xs.PlacedObject(f"p{i}", (p,), 300.0 + 20 * i, 250.0, 0.2 * i, False)
        for i, p in enumerate(parts)
    )
    return xs.Scene(seed=3, threat=None, objects=objs, box_mm=(0, 0, 1, 1))


def test_same_seed_same_image_and_labels() -> None:
    a = xs.render_parcel(42, "firearm")
    b = xs.render_parcel(42, "firearm")
    assert np.array_equal(a.pixels, b.pixels)
    assert a.labels == b.labels
    assert a.scene == b.scene
    c = xs.render_parcel(43, "firearm")
    assert not np.array_equal(a.pixels, c.pixels)


def test_raw_image_dtype_shape_and_range() -> None:
    single = xs.render_parcel(5, None).pixels
    dual = xs.render_parcel(5, None, dual_energy=True).pixels
    assert single.dtype == np.uint16
    assert single.shape == (xs.RAW_HEIGHT, xs.RAW_WIDTH)
    assert dual.dtype == np.uint16
    assert dual.shape == (2, xs.RAW_HEIGHT, xs.RAW_WIDTH)
    # The unobstructed belt transmits almost everything; the parcel attenuates.
    corner = single[:8, :8].astype(np.float64) / xs.RAW_MAX
    assert 0.9 < corner.mean() <= 1.0
    assert single.min() < 0.8 * xs.RAW_MAX


@pytest.mark.parametrize("threat", xs.THREAT_CLASSES)
def test_each_class_renders_and_adds_attenuation(threat: str) -> None:
    sample = xs.render_parcel(11, threat)
    assert sample.labels == {name: int(name == threat) for name in xs.THREAT_CLASSES}
    threats = [o for o in sample.scene.objects if o.threat]
    assert [o.kind for o in threats] == [threat]
    without = xs.Scene(
        sample.scene.seed,
        None,
        tuple(o for o in sample.scene.objects if not o.threat),
        sample.scene.box_mm,
    )
    diff = xs.line_integrals(sample.scene, ("mid",)) - xs.line_integrals(without, ("mid",))
    assert diff.min() >= -1e-5
    assert diff.max() > 0.2  # the item is visible, not a faint speck


def test_benign_parcel_has_no_threat() -> None:
    sample = xs.render_parcel(12, None)
    assert not any(o.threat for o in sample.scene.objects)
    assert sum(sample.labels.values()) == 0


def test_unknown_threat_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="threat='bazooka'"):
        xs.compose_scene(1, "bazooka")


def test_clutter_can_be_restricted_and_bad_kinds_are_refused() -> None:
    scene = xs.compose_scene(8, None, clutter=(4, 6), clutter_kinds=("book",))
    assert {o.kind for o in scene.objects} == {"box", "book"}
    assert 4 <= len(scene.objects) - 1 <= 6
    with pytest.raises(ValueError, match="clutter_kinds=\\['sofa'\\]"):
        xs.compose_scene(8, None, clutter_kinds=("sofa",))


def test_line_integral_is_mu_times_thickness() -> None:
    steel = xs.MATERIALS["steel"]
    thin = xs.line_integrals(_single(xs.Part("rect", "steel", 2.0, (0, 0, 60, 40))), ("mid",))
    thick = xs.line_integrals(_single(xs.Part("rect", "steel", 4.0, (0, 0, 60, 40))), ("mid",))
    assert thin.max() == pytest.approx(steel.mu("mid") * 0.2, rel=1e-5)
    assert thick.max() == pytest.approx(2 * thin.max(), rel=1e-5)
    # More material, lower transmission, pixel by pixel.
    inside = thin > 0
    assert np.all(np.exp(-thick[inside]) < np.exp(-thin[inside]))


def test_overlapping_objects_attenuate_like_their_sum() -> None:
    a = xs.Part("ellipse", "water", 40, (0, 0, 120, 80), rounded=True)
    b = xs.Part("rect", "steel", 3, (10, 5, 70, 30))
    both = xs.line_integrals(_scene(a, b), ("low", "high"))
    only_a = xs.line_integrals(_scene(a), ("low", "high"))
    only_b_scene = xs.Scene(3, None, (_scene(a, b).objects[1],), (0, 0, 1, 1))
    only_b = xs.line_integrals(only_b_scene, ("low", "high"))
    overlap = (only_a > 0) & (only_b > 0)
    assert overlap.sum() > 100
    np.testing.assert_allclose(both, only_a + only_b, rtol=1e-6, atol=1e-6)
    # Beer–Lambert: transmissions multiply where the objects overlap.
    np.testing.assert_allclose(
        np.exp(-both)[overlap], (np.exp(-only_a) * np.exp(-only_b))[overlap], rtol=1e-5
    )


def test_dual_energy_separates_metal_from_organic() -> None:
    """Steel loses far more at low than at high energy than plastic does (higher Z)."""
    steel = xs.line_integrals(_single(xs.Part("rect", "steel", 3, (0, 0, 50, 50))), ("low", "high"))
    plastic = xs.line_integrals(
        _single(xs.Part("rect", "plastic", 60, (0, 0, 50, 50))), ("low", "high")
    )
    assert steel[0].max() / steel[1].max() > 1.3 * (plastic[0].max() / plastic[1].max())


@pytest.mark.parametrize("transmission", [0.9, 0.3, 0.05])
def test_noise_is_photon_counting(transmission: float) -> None:
    integrals = np.full((1, 256, 512), -math.log(transmission), dtype=np.float32)
    raw = xs.expose(integrals, np.random.default_rng(7), gain_spread=0.0, read_noise=0.0)
    t = raw.astype(np.float64) / xs.RAW_MAX
    assert t.mean() == pytest.approx(transmission, rel=0.005)
    expected_var = transmission / xs.PHOTONS_FULL  # Poisson: var(counts) = mean(counts)
    assert t.var() == pytest.approx(expected_var, rel=0.05)
    # Independent pixels: no correlation between neighbours.
    centred = t - t.mean()
    corr = (centred[:, :, 1:] * centred[:, :, :-1]).mean() / centred.var()
    assert abs(corr) < 0.02


def test_noise_depends_on_seed_only() -> None:
    integrals = np.full((1, 32, 32), 0.5, dtype=np.float32)
    a = xs.expose(integrals, np.random.default_rng(1))
    b = xs.expose(integrals, np.random.default_rng(1))
    c = xs.expose(integrals, np.random.default_rng(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


SPEC = xs.PreprocessSpec(1, 96, 128, True, (0.5,), (2.0,))


def test_preprocess_follows_the_contract_step_by_step() -> None:
    raw = xs.render_parcel(21, "blade").pixels
    x = xs.preprocess(raw, SPEC)
    assert x.dtype == np.float32
    assert x.shape == (1, 96, 128)
    t = raw.astype(np.float64) / 65535
    block = t.reshape(96, 8, 128, 8).mean(axis=(1, 3))
    expected = (-np.log(np.maximum(block, 1e-4)) - 0.5) / 2.0
    np.testing.assert_allclose(x[0], expected, atol=1e-5)


def test_preprocess_handles_8_bit_like_16_bit() -> None:
    raw16 = xs.render_parcel(22, "liquid_container").pixels
    raw8 = np.rint(raw16.astype(np.float64) / 65535 * 255).astype(np.uint8)
    x16, x8 = xs.preprocess(raw16, SPEC), xs.preprocess(raw8, SPEC)
    assert np.abs(x16 - x8).mean() < 0.01


def test_area_resize_is_exact_area_average() -> None:
    """Oracle for the non-integer case: repeat each pixel until both factors are whole, then
    take block means; that is the exact mean over each output pixel's footprint."""
    rng = np.random.default_rng(5)
    image = rng.random((1, 100, 130), dtype=np.float32)
    ours = xs.area_resize(image, 36, 48)
    fine = np.repeat(np.repeat(image[0].astype(np.float64), 9, axis=0), 24, axis=1)
    oracle = fine.reshape(36, 25, 48, 65).mean(axis=(1, 3))
    np.testing.assert_allclose(ours[0], oracle, atol=1e-5)
    assert ours.mean() == pytest.approx(float(image.mean()), rel=1e-5)
    whole = xs.area_resize(image[:, :96, :128], 12, 16)
    blocks = image[0, :96, :128].reshape(12, 8, 16, 8).mean((1, 3))
    np.testing.assert_allclose(whole[0], blocks, atol=1e-6)


def test_preprocess_refuses_wrong_shape_and_dtype() -> None:
    with pytest.raises(ValueError, match=r"pixels.shape=\(2, 768, 1024\)"):
        xs.preprocess(np.zeros((2, 768, 1024), np.uint16), SPEC)
    with pytest.raises(ValueError, match=r"pixels\.dtype=int32"):
        xs.preprocess(np.zeros((768, 1024), np.int32), SPEC)
    with pytest.raises(ValueError, match="at least 96×128"):
        xs.preprocess(np.zeros((50, 50), np.uint16), SPEC)


def test_spec_from_metadata_reads_and_checks_the_contract() -> None:
    props = {
        "cargogate.input": json.dumps(
            {"channels": 1, "height": 96, "width": 128, "layout": "NCHW"}
        ),
        "cargogate.preprocess": json.dumps(
            {"log_transmission": True, "source_max": "dtype", "mean": [0.3], "std": [0.4]}
        ),
    }
    spec = xs.spec_from_metadata(props)
    assert spec == xs.PreprocessSpec(1, 96, 128, True, (0.3,), (0.4,))
    with pytest.raises(ValueError, match=r"cargogate.preprocess is missing"):
        xs.spec_from_metadata({"cargogate.input": props["cargogate.input"]})
    bad = dict(
        props,
        **{
            "cargogate.preprocess": json.dumps(
                {"log_transmission": True, "mean": [0.3, 1], "std": [0.4]}
            )
        },
    )
    with pytest.raises(ValueError, match="expected 1 values"):
        xs.spec_from_metadata(bad)


def test_dataset_classes_are_balanced_and_deterministic() -> None:
    drawn = [xs.threat_for_seed(s) for s in range(3000)]
    assert drawn == [xs.threat_for_seed(s) for s in range(3000)]
    benign = drawn.count(None) / len(drawn)
    assert 0.45 < benign < 0.55
    for name in xs.THREAT_CLASSES:
        assert 0.07 < drawn.count(name) / len(drawn) < 0.13
