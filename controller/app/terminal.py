"""What every ``cargogate`` command prints through: the two consoles and the problem table."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.table import Table

from controller.app.logs import JsonLines, RepeatFilter
from controller.core.settings import ConfigError

console = Console()
errors = Console(stderr=True)


def print_problems(exc: ConfigError) -> None:
    """Every problem of a file, one row each: where, the value found, what was expected."""
    table = Table(title=f"{exc.source}: {len(exc.problems)} problem(s)", title_justify="left")
    table.add_column("where", style="cyan", no_wrap=True)
    table.add_column("value", style="magenta")
    table.add_column("problem")
    for where, value, message in exc.problems:
        table.add_row(where, value, message)
    errors.print(table)


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
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
