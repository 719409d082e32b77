"""What every ``cargogate`` command prints through: the two consoles and the problem table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from controller.config import ConfigError

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
