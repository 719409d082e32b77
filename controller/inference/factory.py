"""Builds the X-ray inference service from its settings; this module loads onnxruntime.

:func:`onnx_xray` is the registry's factory of ``xray: {type: onnx}``
(:mod:`controller.inference.registration`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from controller.core.clock import Clock
from controller.core.domain import XrayResult
from controller.core.ports import AlarmSink, ImageSource, ScanImage
from controller.core.settings import ConfigError
from controller.inference.service import OnnxXrayService
from controller.inference.settings import OnnxXray


class XrayContext(Protocol):
    """What building the inference service reads from the composition root's context."""

    @property
    def where(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def alarms(self) -> AlarmSink: ...

    @property
    def images(self) -> ImageSource | None: ...

    @property
    def policy_classes(self) -> Sequence[str]: ...

    @property
    def result_listeners(self) -> Sequence[Callable[[ScanImage, XrayResult], None]]: ...


def onnx_xray(settings: OnnxXray, ctx: XrayContext) -> OnnxXrayService:
    """Registry factory of ``xray: {type: onnx}``: scores the images scanner intake matched."""
    if ctx.images is None:
        raise ConfigError(
            "site",
            [(f"{ctx.where}.type", "'onnx'", "scores scanner images, but no intake is configured")],
        )
    service = build_onnx_xray(
        settings,
        ctx.images,
        policy_classes=ctx.policy_classes,
        alarms=ctx.alarms,
        clock=ctx.clock,
    )
    service.listeners.extend(ctx.result_listeners)
    return service


def build_onnx_xray(
    settings: OnnxXray,
    images: ImageSource,
    *,
    policy_classes: Sequence[str] = (),
    alarms: AlarmSink | None = None,
    clock: Clock | None = None,
) -> OnnxXrayService:
    """The inference service for ``settings``; enter it (``async with``) before the lines run.

    Start-up fails with a clear error if the model is missing or malformed, or if
    ``policy_classes`` (``site.policy.classes``) names a class the model does not score.
    """
    return OnnxXrayService(
        settings, images, policy_classes=policy_classes, alarms=alarms, clock=clock
    )
