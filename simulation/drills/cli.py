"""``cargogate drill NAME``: run scripted fault drills and print one PASS/FAIL line each.

Registered in :mod:`simulation.registration` as a plugin command, so the controller reaches
the drills (and the PLC emulator they drive) only through the adapter registry. Exit code: 0
when every drill run passed or was skipped, 1 on any FAIL, 2 for a usage error.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from controller.app.site import SiteConfig, load_config
from controller.app.terminal import console, errors, print_problems
from controller.core.settings import ConfigError
from simulation.drills.catalog import DRILLS, by_name
from simulation.drills.framework import Drill, DrillContext, Status, Verdict, run_drills

PG_ENV = "CARGOGATE_TEST_PG_URL"


def drill(
    name: Annotated[
        str | None,
        typer.Argument(help="The drill to run (see --list), or 'all'.", show_default=False),
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option(
            help="Site file whose site id, policy and lines (lanes, protocol, link settings) "
            "the drill plays; default: a built-in site with L1 on OPC UA and L2 on Modbus TCP. "
            "The PLCs are always emulated on loopback and the journal is a scratch file."
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the drills with what each one does.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the traffic, risk results and X-ray.")] = 7,
    central_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL server for the central-database drills (a scratch database is "
            f"made there and dropped); default: ${PG_ENV}. Without one they SKIP."
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            help="Keep each drill's scratch folder (site files, journals, logs) under this "
            "folder; default: a temporary folder, removed afterwards."
        ),
    ] = None,
) -> None:
    """Run scripted fault drills against the real controller and emulated PLCs.

    Each drill plays seeded bursts of parcels over OPC UA and Modbus TCP, strikes with its
    fault, and checks the outcome from the journal and what the PLCs saw: every parcel ends in
    exactly one terminal state or is open with a reason, none doubled, every decision the
    sorter applied is journalled, alarms raised and cleared in turn. One line per drill:
    PASS, FAIL (with its problems) or SKIP (with why). Exit code 1 on any FAIL.
    """
    if list_:
        width = max(len(d.name) for d in DRILLS)
        for known in DRILLS:
            console.print(
                f"{known.name:<{width}}  {known.summary}", highlight=False, soft_wrap=True
            )
        return
    if name is None:
        errors.print("name a drill (see cargogate drill --list) or 'all'")
        raise typer.Exit(code=2)
    chosen = _chosen(name)
    base = _base(site)
    url = central_url or os.environ.get(PG_ENV) or None
    with tempfile.TemporaryDirectory(prefix="cargogate-drill-") as scratch:
        root = (keep or Path(scratch)).resolve()  # the site files name absolute paths

        def context(one: Drill) -> DrillContext:
            workdir = root / one.name
            if workdir.exists():
                shutil.rmtree(workdir)
            return DrillContext(workdir, seed, base, url)

        verdicts = asyncio.run(run_drills(chosen, context, _print))
    if any(verdict.status is Status.FAIL for verdict in verdicts):
        raise typer.Exit(code=1)


def _print(verdict: Verdict) -> None:
    console.print(verdict.line(), highlight=False, soft_wrap=True)
    for detail in verdict.details():
        console.print(detail, highlight=False, soft_wrap=True)


def _chosen(name: str) -> list[Drill]:
    if name == "all":
        return list(DRILLS)
    found = by_name(name)
    if found is None:
        errors.print(f"no drill {name!r}; known: {', '.join(d.name for d in DRILLS)}, all")
        raise typer.Exit(code=2)
    return [found]


def _base(site: Path | None) -> SiteConfig | None:
    if site is None:
        return None
    try:
        return load_config(site)
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None
