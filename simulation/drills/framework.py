"""What a drill is, how one runs, and its one-line verdict.

A :class:`Drill` is a name, a one-line description and a coroutine that plays the fault on a
:class:`simulation.drills.rig.Rig` and returns the :class:`simulation.drills.outcome.Findings`
(the outcome checker's, plus the drill's own checks). :func:`run_drills` runs drills one after
the other in one event loop (sharing the emulated OPC UA servers), each under a time limit with
its own scratch folder and log, and turns each into a :class:`Verdict`: PASS when nothing is
wrong, FAIL with every problem, SKIP (never PASS) when a part the drill needs is not there,
such as the central database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from controller.app.site import SiteConfig
from simulation.drills.hosts import OpcUaHosts
from simulation.drills.outcome import Findings

DRILL_LIMIT_S = 150.0
"""A drill still running after this long has hung: it is stopped and reported as FAIL."""
SHOWN_PROBLEMS = 12

_QUIET = {"asyncua": logging.ERROR, "pymodbus": logging.CRITICAL, "alembic": logging.WARNING}


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


class SkipDrillError(Exception):
    """The drill cannot run here (no central database ...); the message says why."""


@dataclass(frozen=True)
class DrillContext:
    """What one run of a drill gets: its scratch folder, seed, the site file's configuration
    (None: the built-in site), the central database it may use and the run's shared OPC UA
    servers (None: its own)."""

    workdir: Path
    seed: int
    base: SiteConfig | None = None
    central_url: str | None = None
    hosts: OpcUaHosts | None = None


DrillBody = Callable[[DrillContext], Awaitable[Findings]]


@dataclass(frozen=True)
class Drill:
    name: str
    summary: str
    """One line: the fault and what must hold."""
    body: DrillBody


@dataclass(frozen=True)
class Verdict:
    drill: str
    status: Status
    summary: str
    problems: tuple[str, ...] = ()
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line verdict: status, drill, counts, problems, time."""
        tail = f"; {len(self.problems)} problem(s)" if self.problems else ""
        return f"{self.status} {self.drill}: {self.summary}{tail} [{self.seconds:.1f} s]"

    def details(self) -> list[str]:
        """The problems behind a FAIL, the first :data:`SHOWN_PROBLEMS` of them."""
        shown = [f"  - {p}" for p in self.problems[:SHOWN_PROBLEMS]]
        if len(self.problems) > SHOWN_PROBLEMS:
            shown.append(f"  ... and {len(self.problems) - SHOWN_PROBLEMS} more")
        return shown


async def run_drills(
    drills: Sequence[Drill],
    context: Callable[[Drill], DrillContext],
    report: Callable[[Verdict], None],
    limit_s: float = DRILL_LIMIT_S,
) -> list[Verdict]:
    """Run ``drills`` in turn, each with the context ``context`` gives it (its OPC UA servers
    shared across the run), calling ``report`` with each verdict as it comes."""
    hosts = OpcUaHosts()
    verdicts = []
    try:
        for drill in drills:
            ctx = dataclasses.replace(context(drill), hosts=hosts)
            verdict = await run_drill(drill, ctx, limit_s)
            report(verdict)
            verdicts.append(verdict)
    finally:
        await hosts.aclose()
    return verdicts


async def run_drill(drill: Drill, ctx: DrillContext, limit_s: float = DRILL_LIMIT_S) -> Verdict:
    """Run ``drill``; never raises (a drill that crashes or hangs is a FAIL)."""
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with _logs(ctx.workdir / "drill.log"):
        try:
            findings = await _limited(drill.body(ctx), limit_s)
        except SkipDrillError as exc:
            return Verdict(drill.name, Status.SKIP, str(exc), seconds=time.monotonic() - began)
        except Exception as exc:
            logging.getLogger(__name__).exception("drill %s failed to run", drill.name)
            why = f"the drill could not finish: {type(exc).__name__}: {exc}"
            return Verdict(drill.name, Status.FAIL, why, (why,), time.monotonic() - began)
    status = Status.FAIL if findings.problems else Status.PASS
    return Verdict(
        drill.name,
        status,
        findings.summary(),
        tuple(findings.problems),
        time.monotonic() - began,
    )


async def _limited(work: Awaitable[Findings], limit_s: float) -> Findings:
    try:
        async with asyncio.timeout(limit_s):
            return await work
    except TimeoutError:
        raise TimeoutError(f"still running after {limit_s:g} s") from None


@contextmanager
def _logs(path: Path) -> Iterator[None]:
    """This run's warnings and errors (the controller's, the emulator's) into ``path``."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    levels = {name: logging.getLogger(name).level for name in _QUIET}
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
