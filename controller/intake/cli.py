"""``cargogate intake …``: look at the images no parcel claimed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controller.intake.quarantine import Quarantine

intake_app = typer.Typer(help="Scanner intake: inspect quarantined images.", no_args_is_help=True)
console = Console()


@intake_app.command("quarantine")
def list_quarantine(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Quarantine folder (the site file's intake.quarantine, e.g. var/quarantine)."
        ),
    ] = Path("var/quarantine"),
) -> None:
    """List images that matched no parcel: when, from which source, which key, and why."""
    entries = Quarantine(folder).entries()
    if not entries:
        console.print(f"no quarantined images in {folder}")
        return
    table = Table(title=f"{len(entries)} quarantined image(s) in {folder}", title_justify="left")
    for column in ("quarantined at", "source", "key", "reason", "pixels"):
        table.add_column(column)
    for e in entries:
        key = e.hawb or (f"tid-{e.tracking_id}" if e.tracking_id is not None else "-")
        pixels = f"{e.pixels_file.name} {e.shape} {e.dtype}" if e.pixels_file else "-"
        reason = e.reason + (f" ({e.error})" if e.error else "")
        table.add_row(e.quarantined_at, e.source, key, reason, pixels)
    console.print(table)
