"""The on-site X-ray inference service: implements :class:`controller.core.ports.XrayPort`.

For each parcel it waits for the image (from an :class:`controller.core.ports.ImageSource`),
preprocesses it on a worker thread, and queues the tensor for the micro-batcher, which groups
concurrent requests for at most ``batch_window_ms`` (less when a request's time is running
out) and runs them through onnxruntime on its own thread, so the event loop never blocks.

Faults are answers, never exceptions: no image → MISSING, unreadable image → BAD_IMAGE,
model error, invalid output or a run past ``timeout_s`` → FAILED. A watchdog aborts a stuck
run, rebuilds the session and warms it up; after ``max_restarts`` restarts with no healthy
run in between it gives up, raises an alarm and answers FAILED from then on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from controller.core.clock import Clock, MonotonicClock
from controller.core.domain import XrayResult, XrayStatus
from controller.core.link import LinkState
from controller.core.ports import AlarmSink, ImageSource, ScanImage
from controller.inference.contract import ModelContract, check_policy_classes
from controller.inference.preprocess import BadImageError, preprocess
from controller.inference.session import ModelSession
from controller.inference.settings import OnnxXray

log = logging.getLogger(__name__)

#: Scores may exceed [0, 1] by float rounding only.
_SCORE_SLACK = 1e-4
#: After asking a stuck run to stop, how long to wait before abandoning its thread.
_TERMINATE_GRACE_S = 1.0

T = TypeVar("T")
ResultListener = Callable[[ScanImage, XrayResult], None]


class ServiceState(StrEnum):
    STOPPED = "stopped"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"  # gave up after max_restarts; answers FAILED until restarted by hand


class ModelOutputError(RuntimeError):
    """The model returned scores of the wrong shape or outside [0, 1]."""


@dataclass
class _Request:
    tensor: NDArray[np.float32]
    future: asyncio.Future[XrayResult]
    queued_at: float
    not_after: float


@dataclass
class InferenceStats:
    """Counters for the dashboard and tests."""

    queued: int = 0
    batches: int = 0
    images: int = 0
    largest_batch: int = 0
    skipped_cancelled: int = 0
    failures: int = 0
    restarts: int = 0
    last_run_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    def ran(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.images += size
        self.largest_batch = max(self.largest_batch, size)
        self.last_run_s = seconds
        if len(self.batch_sizes) < 10_000:
            self.batch_sizes.append(size)


class OnnxXrayService:
    """Scores parcel images with an ONNX model; use as ``async with`` or start()/close()."""

    def __init__(
        self,
        settings: OnnxXray,
        images: ImageSource,
        *,
        policy_classes: Sequence[str] = (),
        alarms: AlarmSink | None = None,
        clock: Clock | None = None,
        name: str = "xray/onnx",
    ) -> None:
        self.settings = settings
        self.images = images
        self.policy_classes = tuple(policy_classes)
        self.alarms = alarms
        self.clock: Clock = clock or MonotonicClock()
        self.name = name
        self.state = ServiceState.STOPPED
        self.stats = InferenceStats()
        self.failure = ""
        self.listeners: list[ResultListener] = []
        self._session: ModelSession | None = None
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._batcher: asyncio.Task[None] | None = None
        self._run_pool = _single_thread("cargogate-onnx")
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(
            settings.preprocess_threads, thread_name_prefix="cargogate-prep"
        )
        self._consecutive_restarts = 0
        self._in_flight: list[_Request] = []
        self._started = False

    @property
    def contract(self) -> ModelContract:
        if self._session is None:
            raise RuntimeError("the inference service is not started")
        return self._session.contract

    @property
    def link_state(self) -> LinkState:
        """Connecting until the model is loaded; up when ready; degraded while the session
        restarts; down once inference gave up or the service stopped."""
        if self.state is ServiceState.STOPPED:
            return LinkState.DOWN if self._started else LinkState.CONNECTING
        return _LINK[self.state]

    @property
    def providers(self) -> list[str]:
        return [] if self._session is None else list(self._session.providers)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model, check it against the policy, warm it up, start batching.

        Raises :class:`controller.inference.session.ModelLoadError`,
        :class:`controller.inference.contract.ModelContractError` or
        :class:`controller.inference.contract.PolicyClassesError` with a clear message.
        """
        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(self._run_pool, self._open_session)
        check_policy_classes(session.contract, self.policy_classes, str(self.settings.model))
        self._session = session
        self.state = ServiceState.READY
        self._started = True
        self._batcher = asyncio.create_task(self._batch_loop(), name=f"{self.name} batcher")
        log.info(
            "%s: model %s version %s, classes %s, input %dx%dx%d, providers %s",
            self.name,
            self.settings.model,
            session.contract.version,
            list(session.contract.classes),
            session.contract.channels,
            session.contract.height,
            session.contract.width,
            session.providers,
        )

    async def close(self) -> None:
        """The old name of :meth:`aclose`."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop batching, answer what waits with FAILED, end the session. Idempotent."""
        self._started = True
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
            self._batcher = None
        stopped = XrayResult.fault(XrayStatus.FAILED, "inference service stopped")
        for request in self._in_flight:
            _answer(request, stopped)
        while not self._queue.empty():
            _answer(self._queue.get_nowait(), stopped)
        if self._session is not None:
            self._session.terminate()
        self._run_pool.shutdown(wait=False, cancel_futures=True)
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
        self.state = ServiceState.STOPPED

    async def __aenter__(self) -> OnnxXrayService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open_session(self) -> ModelSession:
        """Build and warm up a session (runs on the inference thread)."""
        s = self.settings
        session = ModelSession(s.model, s.intra_op_threads, s.providers)
        if s.warmup:
            c = session.contract
            _check_scores(
                session.run(np.zeros((1, c.channels, c.height, c.width), np.float32)), 1, c
            )
        return session

    # --- the port ------------------------------------------------------------------------

    async def analyse(self, line: str, tracking_id: int, hawb: str) -> XrayResult:
        """Wait for the parcel's image and score it. Never raises (except cancellation)."""
        wait_s = self.settings.image_wait_s
        image = await _within(
            self.clock, self.clock.now() + wait_s, self.images.image_for(line, tracking_id, hawb)
        )
        if isinstance(image, Exception):
            log.warning("%s: image source failed for %s: %r", self.name, hawb, image)
            return XrayResult.fault(XrayStatus.MISSING, f"image source failed: {image!r}")
        if image is None:
            return XrayResult.fault(
                XrayStatus.MISSING,
                f"no image for HAWB {hawb!r} / tracking id {tracking_id} within {wait_s:g} s",
            )
        if image.pixels is None:
            result = XrayResult.fault(
                XrayStatus.BAD_IMAGE, f"{image.source}: {image.error or 'unreadable image'}"
            )
        else:
            result = await self.score(image.pixels)
            if result.status is XrayStatus.BAD_IMAGE:
                result = XrayResult.fault(result.status, f"{image.source}: {result.detail}")
        # listeners learn the parcel the image was scored for (the scanner may not know it)
        self._notify(dataclasses.replace(image, tracking_id=tracking_id), result)
        return result

    async def score(self, pixels: object) -> XrayResult:
        """Score one raw image (H×W or C×H×W array). Never raises (except cancellation)."""
        if self.state is not ServiceState.READY and self.state is not ServiceState.RESTARTING:
            return XrayResult.fault(XrayStatus.FAILED, self.failure or f"inference {self.state}")
        loop = asyncio.get_running_loop()
        contract = self.contract
        try:
            tensor = await loop.run_in_executor(self._prep_pool, preprocess, pixels, contract)
        except BadImageError as exc:
            return XrayResult.fault(XrayStatus.BAD_IMAGE, str(exc))
        except Exception as exc:  # a numpy fault on a pathological array is still a bad image
            return XrayResult.fault(XrayStatus.BAD_IMAGE, f"preprocessing failed: {exc!r}")
        now = loop.time()
        request = _Request(tensor, loop.create_future(), now, now + self.settings.timeout_s)
        self._queue.put_nowait(request)
        self.stats.queued += 1
        return await request.future

    def _notify(self, image: ScanImage, result: XrayResult) -> None:
        for listener in self.listeners:
            try:
                listener(image, result)
            except Exception as exc:  # a report writer must never stop scoring
                log.error("%s: result listener %r failed: %r", self.name, listener, exc)

    # --- micro-batching and the watchdog -------------------------------------------------

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        window_s = self.settings.batch_window_ms / 1000
        while True:
            batch = [await self._queue.get()]
            self._in_flight = batch  # answered by close() if the service stops meanwhile
            close_at = min(batch[0].queued_at + window_s, self._latest_start(batch))
            while len(batch) < self.settings.max_batch:
                if self._queue.empty():
                    wait = close_at - loop.time()
                    if wait <= 0:
                        break
                    try:
                        request = await asyncio.wait_for(self._queue.get(), wait)
                    except TimeoutError:
                        break
                else:
                    request = self._queue.get_nowait()
                batch.append(request)
                close_at = min(close_at, self._latest_start([request]))
            await self._run(batch)
            self._in_flight = []

    def _latest_start(self, batch: list[_Request]) -> float:
        """Start the run early enough that the tightest request still fits its time."""
        return min(r.not_after for r in batch) - self.stats.last_run_s

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        live = [r for r in batch if not r.future.done()]
        self.stats.skipped_cancelled += len(batch) - len(live)
        if not live:
            return
        if self.state is ServiceState.FAILED or self._session is None:
            for r in live:
                _answer(r, XrayResult.fault(XrayStatus.FAILED, self.failure))
            return
        session = self._session
        contract = session.contract
        tensors = np.stack([r.tensor for r in live])
        started = time.perf_counter()
        job = loop.run_in_executor(self._run_pool, session.run, tensors)
        try:
            scores = await asyncio.wait_for(asyncio.shield(job), self.settings.timeout_s)
            _check_scores(scores, len(live), contract)
        except TimeoutError:
            why = f"model run exceeded timeout_s={self.settings.timeout_s:g} s (stuck session)"
            await self._fail(live, why, session, job)
            return
        except Exception as exc:
            await self._fail(live, f"model run failed: {exc}", session, job)
            return
        self.stats.ran(len(live), time.perf_counter() - started)
        if self._consecutive_restarts:
            self._consecutive_restarts = 0
            self._alarm("session", "inference healthy again", active=False)
        for r, row in zip(live, scores, strict=True):
            values = np.clip(row, 0.0, 1.0)
            result = XrayResult(
                XrayStatus.OK,
                MappingProxyType(
                    {name: float(v) for name, v in zip(contract.classes, values, strict=True)}
                ),
                contract.version,
            )
            _answer(r, result)

    async def _fail(
        self,
        live: list[_Request],
        why: str,
        session: ModelSession,
        job: asyncio.Future[NDArray[np.float32]],
    ) -> None:
        """Fail the batch secure, then restart the session (or give up at the cap)."""
        self.stats.failures += 1
        log.error("%s: %s", self.name, why)
        for r in live:
            _answer(r, XrayResult.fault(XrayStatus.FAILED, why))
        if not job.done():
            session.terminate()
            done, _ = await asyncio.wait({job}, timeout=_TERMINATE_GRACE_S)
            if not done:  # the thread is lost to native code: leave it, take a fresh one
                log.error("%s: stuck run ignored the abort; abandoning its thread", self.name)
                self._run_pool.shutdown(wait=False, cancel_futures=True)
                self._run_pool = _single_thread("cargogate-onnx")
        if job.done() and not job.cancelled():
            job.exception()  # retrieved: the failure is already reported above
        await self._restart(why)

    async def _restart(self, why: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._consecutive_restarts >= self.settings.max_restarts:
                self.state = ServiceState.FAILED
                self.failure = (
                    f"inference failed and gave up after {self._consecutive_restarts} "
                    f"session restart(s); last error: {why}"
                )
                self._session = None
                self._alarm("failed", self.failure, active=True)
                return
            self._consecutive_restarts += 1
            self.stats.restarts += 1
            self.state = ServiceState.RESTARTING
            self._alarm("session", f"restarting the inference session: {why}", active=True)
            log.warning(
                "%s: restarting session (%d of at most %d in a row)",
                self.name,
                self._consecutive_restarts,
                self.settings.max_restarts,
            )
            try:
                self._session = await loop.run_in_executor(self._run_pool, self._open_session)
            except Exception as exc:
                why = f"session restart failed: {exc}"
                log.error("%s: %s", self.name, why)
                continue
            self.state = ServiceState.READY
            return

    def _alarm(self, what: str, message: str, *, active: bool) -> None:
        if self.alarms is not None:
            self.alarms.alarm(f"{self.name}/{what}", message, active=active)


_LINK = {
    ServiceState.READY: LinkState.UP,
    ServiceState.RESTARTING: LinkState.DEGRADED,
    ServiceState.FAILED: LinkState.DOWN,
}


def _single_thread(prefix: str) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=prefix)


def _answer(request: _Request, result: XrayResult) -> None:
    if not request.future.done():
        request.future.set_result(result)


def _check_scores(scores: NDArray[np.float32], rows: int, contract: ModelContract) -> None:
    expected = (rows, len(contract.classes))
    if scores.shape != expected:
        raise ModelOutputError(
            f"scores have shape {scores.shape}; expected {expected} for classes "
            f"{list(contract.classes)}"
        )
    if not np.all(np.isfinite(scores)):
        raise ModelOutputError("scores contain NaN or infinite values")
    low, high = float(scores.min()), float(scores.max())
    if low < -_SCORE_SLACK or high > 1 + _SCORE_SLACK:
        raise ModelOutputError(f"scores span [{low:.4g}, {high:.4g}]; expected probabilities")


async def _within(clock: Clock, when: float, work: Coroutine[Any, Any, T]) -> T | Exception | None:
    """``work``'s result if it ends by ``when`` on ``clock``, its exception, or None if late."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep_until(when))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        return None
    exc = task.exception()
    if exc is None:
        return task.result()
    return exc if isinstance(exc, Exception) else None
