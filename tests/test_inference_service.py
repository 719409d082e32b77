"""The inference service on a real onnxruntime session with small contract-following models."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from controller.alarms import Alarms
from controller.core.domain import XrayStatus
from controller.core.settings import Policy
from controller.inference.contract import ModelContractError, PolicyClassesError
from controller.inference.factory import build_onnx_xray
from controller.inference.preprocess import preprocess
from controller.inference.service import OnnxXrayService, ServiceState
from controller.inference.session import ModelLoadError
from controller.inference.settings import OnnxXray
from tests.imaging.images import DictImages, parcel_image
from tests.imaging.models import CLASSES, build_model, contract_metadata, reference_scores

BRIGHT = np.ones((64, 64), np.float32)  # mean 1.0 > trigger: makes "fail"/"stuck" misbehave


def settings(model: Path, **overrides: object) -> OnnxXray:
    raw: dict[str, object] = {"type": "onnx", "model": model, "timeout_s": 5.0}
    raw.update(overrides)
    return OnnxXray.model_validate(raw)


@contextlib.asynccontextmanager
async def service(
    model: Path, images: DictImages | None = None, **overrides: object
) -> AsyncIterator[OnnxXrayService]:
    svc = build_onnx_xray(settings(model, **overrides), images or DictImages())
    async with svc:
        yield svc


async def test_scores_match_the_onnx_reference_evaluator(tmp_path: Path) -> None:
    model = build_model(tmp_path / "m.onnx", log_transmission=True, mean=[1.0], std=[0.5])
    images = DictImages()
    raw = parcel_image(seed=2)
    images.put("H1", raw)
    async with service(model, images) as svc:
        result = await svc.analyse("L1", 7, "H1")
        tensor = preprocess(raw, svc.contract)
    assert result.status is XrayStatus.OK
    assert result.model_version == "test0001"
    assert list(result.scores) == list(CLASSES)
    expected = reference_scores(model, tensor[None])[0]
    np.testing.assert_allclose(list(result.scores.values()), expected, rtol=1e-4, atol=1e-5)


async def test_concurrent_requests_are_batched_with_unchanged_results(tmp_path: Path) -> None:
    model = build_model(tmp_path / "m.onnx")
    raws = [parcel_image(seed=i) for i in range(8)]
    async with service(model, batch_window_ms=300, max_batch=8) as svc:
        singles = [await svc.score(raw) for raw in raws]
        before = svc.stats.batches
        together = await asyncio.gather(*(svc.score(raw) for raw in raws))
        batched_runs = svc.stats.batches - before
    assert batched_runs < len(raws)  # at least two images shared a run
    assert max(svc.stats.batch_sizes[-batched_runs:]) > 1
    for one, many in zip(singles, together, strict=True):
        assert many.status is XrayStatus.OK
        np.testing.assert_allclose(list(one.scores.values()), list(many.scores.values()), 1e-5)


async def test_cancelled_requests_are_left_out_of_the_batch(tmp_path: Path) -> None:
    model = build_model(tmp_path / "m.onnx")
    async with service(model, batch_window_ms=400, max_batch=8) as svc:
        await svc.score(parcel_image())  # learn a run time
        keep = asyncio.ensure_future(svc.score(parcel_image(1)))
        drop = asyncio.ensure_future(svc.score(parcel_image(2)))
        while svc.stats.queued < 3 and not keep.done():  # noqa: ASYNC110 - polls a counter
            await asyncio.sleep(0.005)
        assert not keep.done(), "the batch window closed before the test could cancel"
        drop.cancel()
        result = await keep
    assert result.status is XrayStatus.OK
    assert svc.stats.skipped_cancelled == 1
    assert svc.stats.images == 2


async def test_warm_up_runs_at_start_and_providers_fall_back_to_cpu(tmp_path: Path) -> None:
    model = build_model(tmp_path / "m.onnx")
    wanted = ["NoSuchExecutionProvider", "CPUExecutionProvider"]
    async with service(model, providers=wanted, warmup=True) as svc:
        assert svc.providers == ["CPUExecutionProvider"]
        assert svc.state is ServiceState.READY


async def test_missing_image_is_reported_missing(tmp_path: Path) -> None:
    async with service(build_model(tmp_path / "m.onnx"), image_wait_s=0.2) as svc:
        result = await svc.analyse("L1", 5, "NOIMAGE")
    assert result.status is XrayStatus.MISSING
    assert "NOIMAGE" in result.detail


async def test_model_failure_fails_secure_and_the_session_is_restarted(tmp_path: Path) -> None:
    model = build_model(tmp_path / "fail.onnx", behaviour="fail")
    alarms = Alarms(None, time.monotonic)
    svc = OnnxXrayService(settings(model, max_restarts=2), DictImages(), alarms=alarms)
    async with svc:
        failed = await svc.score(BRIGHT)
        assert failed.status is XrayStatus.FAILED
        assert "model run failed" in failed.detail
        ok = await svc.score(parcel_image())
        assert ok.status is XrayStatus.OK
    assert svc.stats.restarts == 1
    sources = [source for _, source, _, _ in alarms.history]
    assert sources == ["xray/onnx/session", "xray/onnx/session"]  # raised, then cleared
    assert alarms.active == {}


async def test_restarts_are_capped_then_inference_stays_failed(tmp_path: Path) -> None:
    model = build_model(tmp_path / "fail.onnx", behaviour="fail")
    alarms = Alarms(None, time.monotonic)
    svc = OnnxXrayService(settings(model, max_restarts=2), DictImages(), alarms=alarms)
    async with svc:
        for _ in range(3):
            assert (await svc.score(BRIGHT)).status is XrayStatus.FAILED
        assert svc.state is ServiceState.FAILED
        after = await svc.score(parcel_image())  # a good image no longer helps
    assert after.status is XrayStatus.FAILED
    assert "gave up after 2 session restart(s)" in after.detail
    assert svc.stats.restarts == 2
    assert "xray/onnx/failed" in alarms.active


async def test_stuck_session_is_aborted_by_the_watchdog(tmp_path: Path) -> None:
    model = build_model(tmp_path / "stuck.onnx", behaviour="stuck")
    async with service(model, timeout_s=0.5) as svc:
        started = time.monotonic()
        stuck = await svc.score(BRIGHT)
        took = time.monotonic() - started
        assert stuck.status is XrayStatus.FAILED
        assert "stuck session" in stuck.detail
        assert took < 30  # the Loop would spin for hours without the abort
        ok = await svc.score(parcel_image())
    assert ok.status is XrayStatus.OK
    assert svc.stats.restarts == 1


async def test_event_loop_keeps_ticking_while_a_batch_runs(tmp_path: Path) -> None:
    model = build_model(tmp_path / "stuck.onnx", behaviour="stuck")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with service(model, timeout_s=1.0) as svc:
        task = asyncio.create_task(ticker())
        result = await svc.score(BRIGHT)  # holds the session for the whole timeout
        task.cancel()
    assert result.status is XrayStatus.FAILED
    assert ticks >= 10  # 100 possible in 1 s; a blocked loop would give ~0


async def test_policy_classes_the_model_lacks_stop_start_up(tmp_path: Path) -> None:
    model = build_model(tmp_path / "m.onnx", classes=["firearm", "knife"])
    svc = build_onnx_xray(
        settings(model), DictImages(), policy_classes=["firearm", "blade", "lithium_battery"]
    )
    with pytest.raises(PolicyClassesError, match="'blade', 'lithium_battery'"):
        await svc.start()
    await svc.close()


async def test_another_model_with_its_own_classes_drops_in_by_config(tmp_path: Path) -> None:
    classes = ["knife", "gun", "powder"]
    model = build_model(tmp_path / "other.onnx", classes=classes, channels=2, version="abc123")
    images = DictImages()
    images.put("D1", np.stack([parcel_image(1), parcel_image(2)]))
    svc = build_onnx_xray(settings(model), images, policy_classes=["gun"])
    async with svc:
        result = await svc.analyse("L1", 1, "D1")
    assert list(result.scores) == classes
    assert result.model_version == "abc123"


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no metadata", "wrong input"])
async def test_unusable_model_files_fail_start_up_with_a_clear_error(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "m.onnx"
    if damage == "corrupt":
        path.write_bytes(b"\x08\x07garbage that is not a protobuf")
    elif damage == "no metadata":
        build_model(path, metadata={})
    elif damage == "wrong input":
        build_model(path, input_name="pixels", metadata=contract_metadata())
    svc = build_onnx_xray(settings(path), DictImages())
    expected: type[Exception] = ModelLoadError
    if damage in ("no metadata", "wrong input"):
        expected = ModelContractError
    with pytest.raises(expected, match=str(path).replace("\\", "\\\\")):
        await svc.start()
    await svc.close()


async def test_shipped_model_scores_a_generated_parcel(tmp_path: Path) -> None:
    shipped = sorted(Path(__file__).parents[1].glob("models/*.onnx"))
    if not shipped:
        pytest.skip("no model shipped in models/ yet")
    synth = pytest.importorskip("simulation.xray_synth", reason="the X-ray generator is absent")
    for path in shipped:
        images = DictImages()
        sample = synth.render_parcel(21, "firearm")
        images.put("S1", sample.pixels)
        svc = build_onnx_xray(settings(path), images, policy_classes=list(Policy().classes))
        async with svc:
            result = await svc.analyse("L1", 1, "S1")
        assert result.status is XrayStatus.OK, result.detail
        assert set(Policy().classes) <= set(result.scores)
        assert all(0.0 <= v <= 1.0 for v in result.scores.values())


async def test_closing_answers_requests_still_in_flight(tmp_path: Path) -> None:
    model = build_model(tmp_path / "stuck.onnx", behaviour="stuck")
    svc = build_onnx_xray(settings(model, timeout_s=30.0), DictImages())
    await svc.start()
    pending = asyncio.ensure_future(svc.score(BRIGHT))
    while svc.stats.queued < 1:  # noqa: ASYNC110 - polls a counter
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the run is under way
    await svc.close()
    result = await asyncio.wait_for(pending, 10)
    assert result.status is XrayStatus.FAILED
    assert "stopped" in result.detail
