"""Shutdowns that end: every close path of the wire adapters and emulations is bounded.

A library call that waits on a peer (a server waiting for its clients to go, a task that
swallowed its cancellation) must not hold a controller's stop past the service manager's
patience; what does not finish in time is logged and left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

log = logging.getLogger(__name__)

#: Wall seconds one close step may take.
CLOSE_LIMIT_S = 5.0


async def bounded(step: Awaitable[object], what: str, limit_s: float = CLOSE_LIMIT_S) -> None:
    """Await ``step`` for at most ``limit_s``; errors and overruns are logged, never raised."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if not done:
        task.cancel()
        log.warning("%s did not finish within %.0f s; left behind", what, limit_s)
        return
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)


async def cancel_and_wait(
    task: asyncio.Task[object] | asyncio.Task[None] | None,
    what: str,
    limit_s: float = CLOSE_LIMIT_S,
) -> None:
    """Cancel ``task`` and wait at most ``limit_s`` for it to end."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        done, _ = await asyncio.wait({task}, timeout=limit_s)
        if not done:
            log.warning("%s ignored its cancellation for %.0f s; left behind", what, limit_s)
