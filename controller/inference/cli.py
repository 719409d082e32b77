"""``cargogate model …``: check an ONNX model against the CargoGate contract and a site's policy.

A command-line entry point (registered in :mod:`controller.inference.registration`, loaded
only when run): it sits above the application layer and may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from controller.app.site import load_config
from controller.core.settings import ConfigError
from controller.inference.contract import ModelContractError, check_policy_classes
from controller.inference.session import ModelLoadError, ModelSession

model_app = typer.Typer(help="X-ray models: check one before deploying it.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


@model_app.command("check")
def check_model(
    model: Annotated[
        Path,
        typer.Argument(help="ONNX model file, e.g. models/xray-cnn-v1.onnx (shipped)."),
    ],
    site: Annotated[
        Path | None,
        typer.Option(help="Site file whose policy.classes the model must score."),
    ] = None,
) -> None:
    """Load MODEL as the controller would, print its contract, and check the site's classes."""
    try:
        session = ModelSession(model, 1, ["CPUExecutionProvider"])
    except (ModelLoadError, ModelContractError) as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=2) from None
    c = session.contract
    table = Table(title=f"{model}", title_justify="left", show_header=False)
    table.add_row("version", c.version)
    table.add_row("trained on", c.trained_on or "-")
    table.add_row("input", f"{c.channels}×{c.height}×{c.width} (C×H×W)")
    prep = c.preprocessing
    table.add_row("preprocess", f"log={prep.log_transmission} mean={prep.mean} std={prep.std}")
    table.add_row("classes", ", ".join(c.classes))
    console.print(table)
    if site is not None:
        try:
            config = load_config(site)
            check_policy_classes(c, config.policy.classes, str(model))
        except (ConfigError, ValueError) as exc:
            errors.print(f"[red]{exc}[/red]")
            raise typer.Exit(code=2) from None
        console.print(f"[green]every policy class in {site} is scored by this model[/green]")
