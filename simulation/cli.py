"""Typer-ready commands of the twin: ``simulate``, ``sweep`` and ``replay``.

Registered in :mod:`simulation.registration`, so ``cargogate`` loads this module (and SimPy,
matplotlib, Dask) only when one of them runs. A scenario with errors prints every problem
with its path and value and exits with code 2, never a traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from controller.app.terminal import console, errors, print_problems
from controller.core.settings import ConfigError
from simulation.kpis import compute_kpis
from simulation.offline import run_full
from simulation.replay import read_recording, recorded_summary
from simulation.replay import replay as run_replay
from simulation.report import write_report
from simulation.run import TwinRun, run_fast, stop_time_s
from simulation.scenario import ScenarioBundle, load_scenario
from simulation.sweep import (
    ClusterError,
    GridPoint,
    LocalPorts,
    chunks,
    dask_client,
    default_chunk_size,
    grid,
    port_range,
    scheduler_address,
    sweep_on,
    worker_slots,
    write_sweep,
)

FIDELITIES = ("fast", "full")
DASK_PORT = 8786
"""A Dask scheduler's port when ``--scheduler`` names none."""
SCHEDULER_CONNECT_S = 5.0
T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """A mistake in the command line or its files: one line, exit 2, no traceback."""
    errors.print(escape(message), soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def load_or_exit(path: Path, **overrides: Any) -> ScenarioBundle:
    try:
        return load_scenario(path, **overrides)
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None


def run_with_progress(bundle: ScenarioBundle, fidelity: str) -> TwinRun:
    """Run with a rich progress bar over simulated hours."""
    total_h = stop_time_s(bundle) / 3600
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TextColumn("{task.fields[closed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(
            f"{bundle.scenario.name} ({fidelity})", total=total_h, clock="", closed=""
        )

        def progress(now_s: float, closed: int, generated: int) -> None:
            bar.update(
                task,
                completed=min(now_s / 3600, total_h),
                clock=f"{now_s / 3600:5.1f} h simulated",
                closed=f"{closed:,}/{generated:,} parcels closed",
            )

        run = (run_fast if fidelity == "fast" else run_full)(bundle, progress)
        bar.update(task, completed=total_h)
    return run


def simulate(
    scenario: Annotated[
        Path, typer.Argument(help="Scenario file (YAML), e.g. config/scenarios/peak-day.yaml.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Report folder (default: reports/SCENARIO, the scenario file's name)."),
    ] = None,
    fidelity: Annotated[
        str,
        typer.Option(
            help="fast: the real decision policy, lifecycle and KPIs in the loop (a day in "
            "seconds); full: the whole asyncio controller core through its ports (slower, "
            "for short runs)."
        ),
    ] = "fast",
    hours: Annotated[
        float | None, typer.Option(help="Simulate only the first HOURS of the scenario.")
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Override the scenario's seed.")] = None,
    allow_overload: Annotated[
        bool,
        typer.Option(
            "--allow-overload",
            help="Run even when arrivals exceed induction capacity, and show the growing queue.",
        ),
    ] = False,
) -> None:
    """Run the digital twin on a scenario and write a report folder: kpis.json, parcels.csv,
    PNG plots and report.html (one self-contained page)."""
    if fidelity not in FIDELITIES:
        fail(f"--fidelity: expected one of {', '.join(FIDELITIES)}, got {fidelity!r}")
    overrides: dict[str, Any] = {}
    if hours is not None:
        if hours <= 0:
            fail(f"--hours: expected a positive number of hours, got {hours}")
        overrides["horizon_h"] = hours
    if seed is not None:
        overrides["seed"] = seed
    if allow_overload:
        overrides["allow_overload"] = True
    bundle = load_or_exit(scenario, **overrides)
    folder = out or Path("reports") / bundle.scenario.name
    writing(folder, lambda: folder.mkdir(parents=True, exist_ok=True))  # before, not after, a run
    run = run_with_progress(bundle, fidelity)
    kpis = writing(folder, lambda: write_report(run, folder))
    console.print(summary_table(kpis))
    console.print(f"report: {folder / 'report.html'}")


def summary_table(kpis: dict[str, Any]) -> Table:
    table = Table(title=f"{kpis['scenario']}: key figures", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    share = kpis["share_within_target"]
    table.add_row(
        f"cleared within {kpis['target_s']:g} s", "-" if share is None else f"{share * 100:.1f} %"
    )
    table.add_row(
        "parcels closed / open at end", f"{kpis['parcels_closed']:,} / {kpis['open_at_end']:,}"
    )
    sec = kpis["security"]
    table.add_row(
        "contraband intercepted / held / missed",
        f"{sec['intercepted_at_inspection']} / {sec['held_at_exception']} / "
        f"{sec['missed_released']}",
    )
    table.add_row("clean parcels inspected", f"{sec['clean_parcels_inspected']:,}")
    util = kpis["utilisation"]
    for name in ("review_officers", "inspection_stations"):
        value = util[name]
        table.add_row(
            f"{name.replace('_', ' ')} utilisation",
            "-" if value is None else f"{value * 100:.1f} %",
        )
    table.add_row("max queue before induction", str(kpis["queues_max"]["before_induction"]))
    table.add_row("wall time", f"{kpis['wall_s']:.1f} s ({kpis['fidelity']} fidelity)")
    return table


def writing(folder: Path, write: Callable[[], T]) -> T:
    """``write()`` into ``folder``; a folder that cannot be made or written is one line."""
    try:
        return write()
    except OSError as exc:
        fail(f"--out: cannot write into {folder}: {exc.strerror or exc}")


def _floats(text: str | None, name: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--{name}: expected comma-separated numbers, got {text!r}")


def _counts(text: str | None, name: str) -> list[int]:
    """Whole numbers of people or stations: ``2.5`` is a mistake, not 2."""
    numbers = _floats(text, name)
    if any(n != int(n) or n < 0 for n in numbers):
        fail(f"--{name}: expected comma-separated whole numbers, got {text!r}")
    return [int(n) for n in numbers]


def reachable(address: str) -> None:
    """Exit with one line unless a Dask scheduler's port answers at ``address``
    (``tcp://host:port``, ``host:port``); other transports are left to Dask."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port or DASK_PORT
    except ValueError as exc:
        fail(f"--scheduler: {address!r} is not a scheduler address ({exc})")
    if not host:
        fail(f"--scheduler: {address!r} names no host; e.g. tcp://scheduler.example:8786")
    try:
        socket.create_connection((host, port), timeout=SCHEDULER_CONNECT_S).close()
    except OSError as exc:
        fail(f"--scheduler: no Dask scheduler answers at {address} ({exc.strerror or exc})")


def _port_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        return port_range(text)
    except ValueError as exc:
        fail(f"--worker-ports: {exc}")


def run_sweep_with_progress(
    scenario: Path,
    points: list[GridPoint],
    address: str | None,
    workers: int,
    ports: LocalPorts,
    hours: float | None,
    chunk_size: int | None,
    name: str,
) -> list[dict[str, Any]]:
    """Start (or reach) the cluster once, then run the grid under a progress bar over points."""
    starting = console.status("starting Dask" if address is None else f"reaching {address}")
    with starting, dask_client(address, workers, ports) as client:
        starting.stop()
        slots = worker_slots(client)
        size = chunk_size or default_chunk_size(len(points), slots)
        console.print(
            f"{len(points)} variant(s) of {name} in {len(chunks(points, size))} chunk(s) on "
            f"{slots} Dask worker thread(s)"
        )
        console.print(f"scheduler: {scheduler_address(client)}", soft_wrap=True)
        if ports.dashboard and not address:
            console.print(f"dashboard: {client.dashboard_link}", soft_wrap=True)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("variants"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        # Two refreshes a second: the bar shares the CPUs with the local workers.
        with Progress(*columns, console=console, refresh_per_second=2) as bar:
            task = bar.add_task(name, total=len(points))
            return sweep_on(
                client,
                scenario,
                points,
                hours,
                size,
                on_progress=lambda done: bar.update(task, completed=done),
            )


def _port(value: int | None, option: str) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        fail(f"{option}: expected a port 1-65535, got {value}")
    return value


def sweep(
    scenario: Annotated[Path, typer.Argument(help="Base scenario file (YAML).")],
    officers: Annotated[
        str | None, typer.Option(help="Review officers to try, comma-separated, e.g. 2,4,6.")
    ] = None,
    induction: Annotated[
        str | None, typer.Option(help="Induction limits per line (parcels/h), e.g. 10000,12000.")
    ] = None,
    release_max_score: Annotated[
        str | None,
        typer.Option(
            help="Policy thresholds to try: highest GREEN risk score released, e.g. 0.2,0.3."
        ),
    ] = None,
    stations: Annotated[
        str | None,
        typer.Option(
            help="Inspection stations staffed all day (replaces the shift plan), e.g. 8,12."
        ),
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Simulate only the first HOURS.")] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Address of an existing Dask scheduler, e.g. tcp://host:8786 (default: start "
            "a local cluster). Its workers need this project and the scenario files at the "
            "same path."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes of the local cluster.")] = 2,
    scheduler_port: Annotated[
        int | None,
        typer.Option(help="Local cluster: the scheduler's port (default: any free port)."),
    ] = None,
    dashboard_port: Annotated[
        int | None,
        typer.Option(help="Local cluster: serve the Dask dashboard on this port (default: none)."),
    ] = None,
    worker_ports: Annotated[
        str | None,
        typer.Option(
            help="Local cluster: ports FIRST:LAST for the workers and their nannies, two per "
            "worker (default: any free ports)."
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Grid points per Dask task (default: a few tasks per worker)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: reports/SCENARIO-sweep).")
    ] = None,
) -> None:
    """Run a grid of scenario variants in parallel on Dask with the scenario's fixed seed, and
    plot the trade-offs: share within the target vs officers, threats intercepted vs
    inspection rate."""
    if hours is not None and hours <= 0:
        fail(f"--hours: expected a positive number of hours, got {hours}")
    base = load_or_exit(scenario, allow_overload=True)
    points = grid(
        _counts(officers, "officers"),
        _floats(induction, "induction"),
        _floats(release_max_score, "release-max-score"),
        _counts(stations, "stations"),
    )
    if workers < 1:
        fail(f"--workers: expected at least 1, got {workers}")
    if chunk_size is not None and chunk_size < 1:
        fail(f"--chunk-size: expected at least 1, got {chunk_size}")
    ports = LocalPorts(
        scheduler=_port(scheduler_port, "--scheduler-port") or 0,
        dashboard=_port(dashboard_port, "--dashboard-port"),
        workers=_port_range(worker_ports),
    )
    if scheduler:
        pinned = [
            option
            for option, value in (
                ("--scheduler-port", scheduler_port),
                ("--dashboard-port", dashboard_port),
                ("--worker-ports", worker_ports),
            )
            if value is not None
        ]
        if pinned:
            fail(f"{pinned[0]}: only for a local cluster, not with --scheduler")
        reachable(scheduler)
    folder = out or Path("reports") / f"{base.scenario.name}-sweep"
    writing(folder, lambda: folder.mkdir(parents=True, exist_ok=True))
    try:
        rows = run_sweep_with_progress(
            scenario, points, scheduler, workers, ports, hours, chunk_size, base.scenario.name
        )
    except ClusterError as exc:
        fail(f"{exc.option}: {exc.message}")
    except OSError as exc:  # the scheduler or a worker went away during the sweep
        fail(f"--scheduler: the Dask cluster failed: {exc}")
    writing(folder, lambda: write_sweep(rows, folder))
    table = Table(title="sweep", title_justify="left")
    for column in (
        "officers",
        "induct/h",
        "release≤",
        "stations",
        "≤target",
        "opened",
        "caught",
        "missed",
    ):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        if row.get("error"):
            table.add_row(
                str(row["officers"]),
                "-",
                "-",
                "-",
                f"[red]{escape(row['error'])}[/red]",
                "",
                "",
                "",
            )
            continue
        table.add_row(
            str(row["officers"]),
            f"{row['induction_per_h']:,.0f}",
            f"{row['release_max_score']:g}",
            str(row["stations"]),
            f"{100 * (row['share_within_target'] or 0):.1f} %",
            f"{100 * (row['inspection_rate'] or 0):.1f} %",
            f"{row['intercepted']}/{row['contraband']}",
            str(row["missed"]),
        )
    console.print(table)
    console.print(f"results: {folder}")


def replay(
    journal: Annotated[Path, typer.Argument(help="The controller's audit journal (SQLite file).")],
    scenario: Annotated[
        Path,
        typer.Argument(
            help="Scenario whose site, staffing and plant settings to replay under (its "
            "arrivals are replaced by the recorded parcels)."
        ),
    ],
    officers: Annotated[
        int | None, typer.Option(help="What if: review officers on screen.")
    ] = None,
    stations: Annotated[
        int | None, typer.Option(help="What if: inspection stations staffed all shift.")
    ] = None,
    release_max_score: Annotated[
        float | None, typer.Option(help="What if: highest GREEN risk score released.")
    ] = None,
    audit_rate: Annotated[float | None, typer.Option(help="What if: random audit rate.")] = None,
    site_id: Annotated[
        str | None, typer.Option("--site", help="Site id, when the journal holds several.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Report folder of the what-if run (default: reports/replay)."),
    ] = None,
) -> None:
    """Replay a recorded shift from the audit journal through the twin, as recorded and with
    what-if changes (officers, stations, thresholds), and compare them."""
    if not journal.is_file():
        fail(f"journal: no such file {journal}")
    what_if: dict[str, Any] = {}
    if officers is not None:
        what_if["review"] = {"officers": officers}
    if stations is not None:
        what_if["inspection"] = {"shifts": [{"from_h": 0, "to_h": 10_000, "stations": stations}]}
    policy = {
        k: v
        for k, v in (("release_max_score", release_max_score), ("audit_rate", audit_rate))
        if v is not None
    }
    if policy:
        what_if["policy"] = policy
    base = load_or_exit(scenario, allow_overload=True)
    changed = load_or_exit(scenario, allow_overload=True, **what_if)
    try:
        recording = read_recording(journal, site_id)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(f"journal: {journal} is not a CargoGate audit journal ({reason})")
    folder = out or Path("reports") / "replay"
    writing(folder, lambda: folder.mkdir(parents=True, exist_ok=True))
    try:
        with console.status(f"replaying {len(recording.parcels):,} recorded parcels"):
            as_recorded = compute_kpis(run_replay(base, recording))
            changed_run = run_replay(changed, recording)
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None
    what = writing(folder, lambda: write_report(changed_run, folder))
    rec = recorded_summary(recording)
    table = Table(
        title=f"replay of {journal.name}: {rec['parcels']:,} parcels", title_justify="left"
    )
    table.add_column("figure")
    table.add_column("recorded", justify="right")
    table.add_column("replayed as is", justify="right")
    table.add_column("what if", justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    def inspected(k: dict[str, Any]) -> float:
        n = sum(k["states"].get(s, 0) for s in ("cleared_after_inspection", "seized", "referred"))
        return float(n) / max(int(k["parcels_closed"]), 1)

    table.add_row(
        "inspection rate",
        pct(rec["inspection_rate"]),
        pct(inspected(as_recorded)),
        pct(inspected(what)),
    )
    table.add_row(
        "cleared within target",
        "-",
        pct(as_recorded["share_within_target"]),
        pct(what["share_within_target"]),
    )
    table.add_row(
        "recorded seizures intercepted",
        str(rec["seized"]),
        str(as_recorded["security"]["intercepted_at_inspection"]),
        str(what["security"]["intercepted_at_inspection"]),
    )
    console.print(table)
    console.print(f"what-if report: {folder / 'report.html'}")
