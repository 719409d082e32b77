"""What every ``cargogate`` command prints through: the two consoles, the problem lines and
the live view's frame."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.segment import Segment
from rich.style import Style

from controller.app.logs import JsonLines, RepeatFilter
from controller.core.settings import ConfigError

console = Console()
errors = Console(stderr=True)
_ours: list[logging.Handler] = []
"""The log handlers :func:`setup_logging` made (a host's own are never touched)."""


def print_problems(exc: ConfigError) -> None:
    """Every problem of a file, one line each: ``where: what is wrong (got value)``; never
    wrapped, so each stays one line for grep and the journal (ExecStartPre's output)."""
    errors.print(
        f"[red]{escape(exc.source)}: {len(exc.problems)} problem(s)[/red]",
        soft_wrap=True,
        highlight=False,
    )
    for line in problem_lines(exc):
        errors.print(f"  {escape(line)}", soft_wrap=True, highlight=False)


def problem_lines(exc: ConfigError) -> list[str]:
    """``path.to.field: problem (got value)`` for each problem, as :class:`ConfigError` words
    it (the value left out where it is a whole section, ``-``); a multi-line message (a YAML
    error) is joined up."""
    lines = []
    for where, value, message in exc.problems:
        text = " ".join(message.split())
        lines.append(f"{where}: {text}" if value == "-" else f"{where}: {text} (got {value})")
    return lines


def setup_logging(level: str = "info", json_lines: bool = False) -> None:
    """Our log lines with time and source (or JSON lines for journald); the same complaint
    at most once a minute with a count (:mod:`controller.app.logs`); libraries' chatter
    kept to what needs a person.

    pymodbus dumps its last frames with every error, asyncua narrates every reconnect attempt,
    alembic each migration and uvicorn its own start; the adapters, the journal and the
    console already report those in our own words (alarms, link states, the console's URL).
    """
    root = logging.getLogger()
    before = set(root.handlers)
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in set(root.handlers) - before:  # ours only: a host's own handlers stay as set
        handler.addFilter(RepeatFilter())
        if json_lines:
            handler.setFormatter(JsonLines())
        _ours.append(handler)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)


class FitHeight:
    """``renderable`` cut to the terminal's height, less ``spare`` rows, with a last line that
    says how much is hidden. A live frame taller than its terminal (a tmux pane) cannot be
    redrawn in place: the rows that scrolled off stay behind, one torn copy per refresh."""

    def __init__(self, renderable: RenderableType, spare: int = 1) -> None:
        self.renderable = renderable
        self.spare = spare

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = max(options.size.height - self.spare, 1)
        lines = console.render_lines(self.renderable, options, pad=False)
        if len(lines) > height:
            hidden = len(lines) - height + 1
            note = f"… {hidden} more line(s): a taller terminal shows them"
            lines = [*lines[: height - 1], [Segment(note[: options.max_width], Style(dim=True))]]
        for i, line in enumerate(lines):
            yield from line
            if i < len(lines) - 1:
                yield Segment.line()


@contextlib.contextmanager
def live_view() -> Iterator[Callable[[RenderableType], None]]:
    """A live view on :data:`console` that redraws in place; yields ``show(frame)``. Each frame
    is fitted to the terminal (:class:`FitHeight`), and our log lines print above the view
    through the live display instead of across it (they would tear it as a taller frame does).
    """
    with (
        Live(console=console, refresh_per_second=4, transient=True) as live,
        _logging_to(sys.stderr),  # entered second: the live display's proxy for stderr
    ):
        yield lambda frame: live.update(FitHeight(frame))


@contextlib.contextmanager
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Our stream handlers write to ``stream`` for a while (then to their own again)."""
    attached = logging.getLogger().handlers
    moved = [(h, h.stream) for h in _ours if isinstance(h, logging.StreamHandler) and h in attached]
    for handler, _ in moved:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, own in moved:
            handler.setStream(own)
