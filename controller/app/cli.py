"""The ``cargogate`` command line: run a site, check a site file, print the version.

The other sub-commands (``simulate``, ``plc-emulator``, ``model`` ...) come from the adapter
plugins (:mod:`controller.app.registry`): each is loaded only when it is run or listed, so
``cargogate run`` on a site loads neither SimPy nor the emulator.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from controller import __version__
from controller.app import command_cli
from controller.app.audit_cli import audit_app
from controller.app.central_cli import central_app
from controller.app.preflight import machine_problems
from controller.app.registry import Command, default_registry, resolve
from controller.app.services import Services, StartupError
from controller.app.site import SiteConfig, load_config
from controller.app.terminal import console, errors, live_view, print_problems, setup_logging
from controller.app.user_cli import users_app
from controller.core.link import LinkState
from controller.core.settings import ConfigError
from controller.core.views import SiteView

log = logging.getLogger(__name__)


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class PluginGroup(TyperGroup):
    """The top-level group: its own commands, then every plugin's, each built on first use."""

    # ctx and commands are typed Any: typer vendors its own click in recent releases
    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return own + [name for name in plugin_commands() if name not in own]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        command = plugin_commands().get(cmd_name)
        if found is not None or command is None:
            return found
        return plugin_command(command)


@functools.cache
def plugin_commands() -> dict[str, Command]:
    return {command.name: command for command in default_registry().commands()}


@functools.cache
def plugin_command(command: Command) -> Any:
    """The click command for a plugin's ``Typer`` group or command function."""
    target = resolve(command.target)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = command.name
        return group
    single = typer.Typer(add_completion=False, rich_markup_mode="markdown")
    single.command(command.name)(target)
    return typer.main.get_command(single)


app = typer.Typer(
    cls=PluginGroup,
    help="CargoGate: customs clearance control for express cargo centers.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings wrap to the terminal; blank lines part paragraphs
)
config_app = typer.Typer(help="Work with site files.", no_args_is_help=True)


ConfigPath = Annotated[
    Path, typer.Argument(help="Site file (YAML), e.g. config/demo.yaml.", show_default=False)
]


def checked(path: Path) -> SiteConfig:
    """The site file at ``path``, valid, and with everything it names on this machine: the
    files it reads, the places it writes, its environment variables (raises ConfigError)."""
    config = load_config(path)
    problems = machine_problems(config)
    if problems:
        raise ConfigError(str(path), problems)
    return config


def _load(path: Path) -> SiteConfig:
    try:
        return checked(path)
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None


@config_app.command("check")
def config_check(
    files: Annotated[list[Path], typer.Argument(help="One or more site files to validate.")],
) -> None:
    """Validate site files as `run` would: every problem with its path and value, one per line;
    the files and folders each names, and its environment variables, must be there (relative
    paths are taken from the site file's folder). Exit 2 on any problem."""
    failed = False
    for path in files:
        try:
            config = checked(path)
        except ConfigError as exc:
            print_problems(exc)
            failed = True
            continue
        lanes = sum(len(line.lanes) for line in config.lines)
        windows = ", ".join(
            f"{line.id} {line.belt.decision_window_s:.2f} s" for line in config.lines
        )
        console.print(
            f"[green]ok[/green] {escape(str(path))}: site {config.site.id}, "
            f"{len(config.lines)} line(s), {lanes} lane(s); decision windows: {windows}",
            soft_wrap=True,
        )
    if failed:
        raise typer.Exit(code=2)


@app.command()
def run(
    config_file: ConfigPath,
    duration: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Stop after this many wall-clock seconds (default: run until Ctrl-C).",
        ),
    ] = None,
    live: Annotated[
        bool | None,
        typer.Option(help="Show the live KPI view (default: when the output is a terminal)."),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option(help="Logging level.", case_sensitive=False)
    ] = LogLevel.INFO,
    log_json: Annotated[
        bool, typer.Option(help="Log one JSON object per line (for journald and log shippers).")
    ] = False,
) -> None:
    """Run the controller for every line of a site until stopped (Ctrl-C or SIGTERM)."""
    config = _load(config_file)
    setup_logging(log_level.value, json_lines=log_json)
    show_live = sys.stdout.isatty() if live is None else live
    try:
        final = asyncio.run(_run(config, duration, show_live, config_file))
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None
    except StartupError as exc:
        # a site mistake (a missing model, a port in use), not a crash; traceback at debug
        log.debug("start-up failed", exc_info=exc)
        errors.print(f"[red]cannot start:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    console.print(frame(config, final))
    console.print(f"journal: {config.store.journal_path}")


async def _run(
    config: SiteConfig, duration: float | None, show_live: bool, site_file: Path
) -> SiteView:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    services = Services(config)
    gc.freeze()  # the start-up objects live for the whole run: keep them out of collections
    async with services:
        if services.console is not None:
            console.print(
                f"console: [bold]{services.console.url}[/bold]  "
                f"(users: cargogate user add NAME --role ROLE --site {site_file})"
            )
        if not show_live:
            return await services.run(duration, stop)
        with live_view() as show:
            return await services.run(duration, stop, report=lambda s: show(frame(config, s)))


def frame(config: SiteConfig, snap: SiteView) -> Group:
    """The live view's frame, and the summary a run ends with: KPIs, links, alarms, plant,
    parcels per lane and reason codes (the live view cuts it to the terminal's height)."""
    k = snap.kpis
    target = f"{config.clearance.target_s:g} s"
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row(
        f"cleared within {target}", _pct(k.overall.share) + f"  ({k.overall.verdicts} verdicts)"
    )
    head.add_row("rolling", "  ".join(f"{w}: {_pct(s.share)}" for w, s in k.rolling.items()))
    if k.by_line:
        head.add_row("by line", "  ".join(f"{n}: {_pct(s.share)}" for n, s in k.by_line.items()))
    head.add_row("clearance buckets", "  ".join(f"{b}: {n}" for b, n in k.buckets.items()))
    head.add_row(
        "decisions",
        f"{k.decisions}  deadline misses {k.deadline_misses}  "
        f"recirculations {k.recirculations}  open parcels {snap.open_parcels}",
    )
    head.add_row("closed", "  ".join(f"{s}: {n}" for s, n in k.by_state.items()) or "-")
    head.add_row(
        "audit journal",
        f"{snap.journal_rows} rows in {snap.journal_commits} commits; "
        f"{snap.risk_results} risk results in memory",
    )
    if snap.forwarder is not None:
        f = snap.forwarder
        state = "[green]connected[/green]" if f.connected else f"[red]down[/red] {f.last_error}"
        head.add_row("central database", f"{state}, backlog {f.backlog}, shipped {f.shipped_total}")
    if snap.links:
        head.add_row("links", "  ".join(f"{n}: {_link(s)}" for n, s in snap.links.items()))
    if snap.alarms:
        sources = ", ".join(a.source for a in snap.alarms)
        head.add_row("alarms", f"[red]{len(snap.alarms)} active[/red]: {sources}")
    if snap.plant:
        p = snap.plant
        head.add_row(
            "plant",
            f"{p['inducted']} inducted, {p['threats_inducted']} threats, "
            f"{p['threats_released']} threats released, "
            f"plant clock {snap.controller.clock_s:,.0f} s",
        )
    lanes = Table(title="parcels per lane", title_justify="left")
    lanes.add_column("line/lane")
    lanes.add_column("kind")
    lanes.add_column("parcels", justify="right")
    kinds = {(line.id, lane.id): lane.kind.value for line in config.lines for lane in line.lanes}
    for key, n in k.by_lane.items():
        line_id, lane_id = key.split("/")
        lanes.add_row(key, kinds.get((line_id, int(lane_id)), "?"), str(n))
    reasons = Table(title="reason codes", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("parcels", justify="right")
    for name, n in list(k.by_reason.items())[:12]:
        reasons.add_row(name, str(n))
    row = Table.grid(padding=(0, 4))
    row.add_row(lanes, reasons)
    return Group(head, row)


_LINK_STYLE = {
    LinkState.UP: "green",
    LinkState.CONNECTING: "yellow",
    LinkState.DEGRADED: "yellow",
    LinkState.DOWN: "red",
}


def _link(state: LinkState) -> str:
    return f"[{_LINK_STYLE[state]}]{state.value}[/{_LINK_STYLE[state]}]"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


# the order of --help: run a site first, then the tools around it (the plugins' come last)
app.add_typer(config_app, name="config")
app.add_typer(users_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(central_app, name="central")
command_cli.register(app)  # hold, lift, inspect, verdict, ack, close: to the running controller


@app.command()
def version() -> None:
    """Print the CargoGate version."""
    console.print(f"cargogate {__version__}")
