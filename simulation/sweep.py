"""Staffing and policy studies: a grid of scenario variants run in parallel on Dask.

Each grid point is the base scenario with overrides (review officers, induction rate, a policy
threshold, inspection stations) and the base seed, so points differ only by what the grid
varies, and a point's result depends on nothing else: not on the worker, the cluster or the
chunk it ran in. Points travel in chunks (a few per worker slot, taken at a stride across the
grid so that each chunk mixes cheap and dear variants) and come back as compact tuples, so
neither the scheduler's per-task overhead nor result transfer weighs on a large grid.

The cluster is either an existing Dask scheduler (``address``; every worker needs this project
installed and the scenario files at the same path) or a ``distributed.LocalCluster`` started
once per sweep: worker processes, one thread each (SimPy is pure Python: threads would share
one GIL), forked from a fork server that has already imported this module, on ports that can
be pinned (:class:`LocalPorts`) for a host behind a firewall.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import multiprocessing
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from controller.core.settings import ConfigError
from simulation.kpis import compute_kpis
from simulation.run import run_fast
from simulation.scenario import load_scenario

if TYPE_CHECKING:
    from distributed import Client

SUMMARY_FIELDS = (
    "officers",
    "induction_per_h",
    "release_max_score",
    "stations",
    "share_within_target",
    "parcels",
    "inspection_rate",
    "contraband",
    "intercepted",
    "held_at_exception",
    "missed",
    "clean_inspected",
    "officer_utilisation",
    "station_utilisation",
    "max_queue_before_induction",
    "error",
)
LOCAL_HOST = "127.0.0.1"
"""The local cluster listens on loopback only: its scheduler, nannies and workers are this
host's business."""
CHUNKS_PER_SLOT = 4
"""Chunks per worker thread by default: enough that a worker finishing early takes another
chunk (balance), few enough that per-task costs stay out of sight."""
WORKERS_JOIN_S = 30.0
"""How long a sweep on an existing scheduler waits for its first worker."""
FORKSERVER_PRELOAD = ("distributed", __name__)
"""Imported once by the fork server, so each worker process starts without importing Dask,
SimPy, pydantic and the twin again (seconds per worker with ``spawn``)."""

Progress = Callable[[int], None]
"""Called with the number of points finished so far."""


class ClusterError(Exception):
    """The cluster cannot be started or reached; ``option`` names the command-line option to
    look at, so the command line can say it in one line."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


@dataclass(frozen=True)
class GridPoint:
    """One variant; None keeps the base scenario's value."""

    officers: int | None = None
    induction_per_h: float | None = None
    release_max_score: float | None = None
    stations: int | None = None

    def overrides(self, horizon_h: float, drain_h: float) -> dict[str, Any]:
        out: dict[str, Any] = {"allow_overload": True}
        if self.officers is not None:
            out["review"] = {"officers": self.officers}
        if self.induction_per_h is not None:
            out["induction"] = {"max_per_h": self.induction_per_h, "per_line": {}}
        if self.release_max_score is not None:
            out["policy"] = {"release_max_score": self.release_max_score}
        if self.stations is not None:
            shift = {"from_h": 0, "to_h": horizon_h + drain_h + 1, "stations": self.stations}
            out["inspection"] = {"shifts": [shift]}
        return out


@dataclass(frozen=True)
class LocalPorts:
    """Where a local cluster listens. ``scheduler`` 0 takes any free port; ``dashboard`` None
    starts no dashboard; ``workers`` None lets every nanny and worker take any free port, a
    ``(first, last)`` range (inclusive) holds them all: two ports per worker, its nanny's and
    its own."""

    scheduler: int = 0
    dashboard: int | None = None
    workers: tuple[int, int] | None = None


def grid(
    officers: Sequence[int] = (),
    induction_per_h: Sequence[float] = (),
    release_max_score: Sequence[float] = (),
    stations: Sequence[int] = (),
) -> list[GridPoint]:
    """The cross product of the given values; an empty list keeps the base value."""
    axes: list[Sequence[Any]] = [
        list(officers) or [None],
        list(induction_per_h) or [None],
        list(release_max_score) or [None],
        list(stations) or [None],
    ]
    return [GridPoint(*values) for values in itertools.product(*axes)]


def run_point(scenario: str, point: GridPoint, hours: float | None = None) -> dict[str, Any]:
    """Run one grid point on the fast path and summarise it; every key of SUMMARY_FIELDS."""
    base: dict[str, Any] = {} if hours is None else {"horizon_h": hours}
    row: dict[str, Any] = dict.fromkeys(SUMMARY_FIELDS)
    row.update(
        officers=point.officers,
        induction_per_h=point.induction_per_h,
        release_max_score=point.release_max_score,
        stations=point.stations,
    )
    try:
        probe = load_scenario(Path(scenario), allow_overload=True, **base)
        s = probe.scenario
        bundle = load_scenario(Path(scenario), **base, **point.overrides(s.horizon_h, s.drain_h))
    except ConfigError as exc:
        return {**row, "error": str(exc)}
    s = bundle.scenario
    row.update(
        officers=s.review.officers,
        induction_per_h=s.induction.max_per_h,
        release_max_score=bundle.site.policy.release_max_score,
        stations=max(sh.stations for sh in s.inspection.shifts),
    )
    k = compute_kpis(run_fast(bundle))
    sec = k["security"]
    inspected = sum(
        k["states"].get(name, 0) for name in ("cleared_after_inspection", "seized", "referred")
    )
    parcels = k["parcels_closed"]
    return {
        **row,
        "share_within_target": k["share_within_target"],
        "parcels": parcels,
        "inspection_rate": inspected / parcels if parcels else None,
        "contraband": sec["contraband_parcels"],
        "intercepted": sec["intercepted_at_inspection"],
        "held_at_exception": sec["held_at_exception"],
        "missed": sec["missed_released"],
        "clean_inspected": sec["clean_parcels_inspected"],
        "officer_utilisation": k["utilisation"]["review_officers"],
        "station_utilisation": k["utilisation"]["inspection_stations"],
        "max_queue_before_induction": max(k["queues_max"]["before_induction"].values(), default=0),
        "error": "",
    }


Chunk = list[tuple[int, GridPoint]]
"""Grid points with their index in the grid."""


def run_chunk(
    scenario: str, chunk: Chunk, hours: float | None = None
) -> list[tuple[int, tuple[Any, ...]]]:
    """Run a chunk of points on a Dask worker: each result is its grid index and its values in
    SUMMARY_FIELDS order (no keys repeated on the wire)."""
    out = []
    for index, point in chunk:
        row = run_point(scenario, point, hours)
        out.append((index, tuple(row[name] for name in SUMMARY_FIELDS)))
    return out


def chunks(points: Sequence[GridPoint], size: int) -> list[Chunk]:
    """``points`` in chunks of at most ``size``, taken at a stride: chunk ``j`` holds points
    j, j + n, j + 2n, … of the n chunks, so neighbouring (similar) variants go to different
    chunks and chunk sizes differ by at most one."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    count = math.ceil(len(points) / size)
    return [[(i, points[i]) for i in range(first, len(points), count)] for first in range(count)]


def default_chunk_size(points: int, slots: int) -> int:
    """A few chunks per worker thread (CHUNKS_PER_SLOT), at least one point each."""
    return max(1, math.ceil(points / (max(slots, 1) * CHUNKS_PER_SLOT)))


def port_range(text: str) -> tuple[int, int]:
    """``"40000:40100"`` (inclusive) or a single ``"40000"``; ValueError says what is wrong."""
    first_text, _, last_text = text.partition(":")
    try:
        first = int(first_text)
        last = int(last_text) if last_text else first
    except ValueError:
        raise ValueError(f"expected a port or a range FIRST:LAST, got {text!r}") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"expected ports 1-65535 with FIRST <= LAST, got {text!r}")
    return first, last


def port_problem(host: str, port: int) -> str | None:
    """Why ``port`` cannot be listened on at ``host`` now, or None. Binds as Dask does (with
    SO_REUSEADDR, so a port a finished sweep left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_ports(ports: LocalPorts, workers: int, host: str = LOCAL_HOST) -> None:
    """Raise ClusterError naming the option when a pinned port is taken, before any process
    starts (Dask's own failure would be a traceback from deep in its start-up)."""
    for option, port in (
        ("--scheduler-port", ports.scheduler),
        ("--dashboard-port", ports.dashboard),
    ):
        if port:
            problem = port_problem(host, port)
            if problem:
                raise ClusterError(option, f"port {port} on {host} is not free ({problem})")
    if ports.workers is None:
        return
    first, last = ports.workers
    taken = {ports.scheduler, ports.dashboard}
    free = [p for p in range(first, last + 1) if p not in taken and port_problem(host, p) is None]
    needed = 2 * workers
    if len(free) < needed:
        raise ClusterError(
            "--worker-ports",
            f"{first}:{last} has {len(free)} free port(s) on {host}; {workers} worker(s) need "
            f"{needed} (a nanny and a worker each)",
        )


def _use_forkserver() -> str:
    """Start worker processes from a fork server preloaded with this module, where the
    platform has one; else spawn (each worker then imports everything itself)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    import dask
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()  # type: ignore[no-untyped-call]  # Dask sets its own preload list once per process; ours follows it
    # Has no effect on a fork server already running (a second sweep in this process): its
    # workers are forked from the preloaded server all the same.
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return "forkserver"


@contextmanager
def dask_client(
    address: str | None = None,
    workers: int = 2,
    ports: LocalPorts = LocalPorts(),
    processes: bool = True,
    join_timeout_s: float = WORKERS_JOIN_S,
) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a local cluster started for the
    duration of the block; ClusterError when it cannot start or no worker joins."""
    # Lazy vendor import: distributed adds about half a second to start-up and only
    # `cargogate sweep` needs it, while simulation.cli imports this module for every twin command.
    import dask
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=join_timeout_s)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            raise ClusterError("--scheduler", f"no Dask scheduler at {address}: {exc}") from None
        try:
            try:
                client.wait_for_workers(1, timeout=join_timeout_s)
            except TimeoutError:
                raise ClusterError(
                    "--scheduler",
                    f"no worker joined the scheduler at {address} within {join_timeout_s:g} s "
                    f"(start some with: dask worker {address} --nthreads 1)",
                ) from None
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]
        return

    if ports.dashboard is not None and importlib.util.find_spec("bokeh") is None:
        raise ClusterError(
            "--dashboard-port", "the Dask dashboard needs bokeh: pip install 'bokeh>=3.1'"
        )
    check_ports(ports, workers)
    method = _use_forkserver() if processes else "spawn"
    worker_ports: dict[str, Any] = {}
    if ports.workers is not None:
        span = f"{ports.workers[0]}:{ports.workers[1]}"
        worker_ports = {"port": span, "worker_port": span} if processes else {"port": span}
    settings = {
        "distributed.worker.multiprocessing-method": method,
        # One thread per worker and CPU-bound tasks: hand a worker its next chunk when it asks,
        # not ahead of time, so the last chunks go to whichever worker is free.
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings):
        try:
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=processes,
                host=LOCAL_HOST if processes else None,  # None: in-process transport
                scheduler_port=ports.scheduler,
                dashboard_address=(
                    None if ports.dashboard is None else f"{LOCAL_HOST}:{ports.dashboard}"
                ),
                **worker_ports,
            )
        except (OSError, RuntimeError, ValueError) as exc:  # e.g. a port taken since the check
            raise ClusterError("local cluster", f"Dask did not start: {exc}") from None
        try:
            client = Client(cluster)  # type: ignore[no-untyped-call]
            try:
                yield client
            finally:
                client.close()  # type: ignore[no-untyped-call]
        finally:
            cluster.close()


def scheduler_address(client: Client) -> str:
    """Where the client's scheduler listens, e.g. ``tcp://127.0.0.1:8786``."""
    return str(client.scheduler_info()["address"])


def worker_slots(client: Client) -> int:
    """Threads across the cluster's workers now (at least 1)."""
    info = client.scheduler_info()
    return max(1, sum(int(w.get("nthreads", 1)) for w in info["workers"].values()))


def sweep_on(
    client: Client,
    scenario: Path,
    points: Sequence[GridPoint],
    hours: float | None = None,
    chunk_size: int | None = None,
    on_progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run every point on ``client``'s cluster in chunks; one row per point, in grid order."""
    from distributed import KilledWorker, as_completed

    size = chunk_size or default_chunk_size(len(points), worker_slots(client))
    path = str(scenario.resolve())
    futures = [
        client.submit(run_chunk, path, chunk, hours, pure=False) for chunk in chunks(points, size)
    ]
    rows: list[dict[str, Any] | None] = [None] * len(points)
    done = 0
    try:
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            for index, values in future.result():
                rows[index] = dict(zip(SUMMARY_FIELDS, values, strict=True))
                done += 1
            future.release()
            if on_progress is not None:
                on_progress(done)
    except (KilledWorker, CancelledError) as exc:  # workers died on a chunk, or went away
        raise ClusterError("cluster", f"the sweep stopped after {done} point(s): {exc!r}") from None
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:  # a chunk that came back short is a bug, never a silently shorter table
        raise RuntimeError(f"sweep: no result for grid point(s) {missing}")
    return [row for row in rows if row is not None]


def run_sweep(
    scenario: Path,
    points: list[GridPoint],
    address: str | None = None,
    workers: int = 2,
    processes: bool = True,
    hours: float | None = None,
    *,
    ports: LocalPorts = LocalPorts(),
    chunk_size: int | None = None,
    on_progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run every point on Dask and return one summary row per point, in grid order."""
    with dask_client(address, workers, ports, processes) as client:
        return sweep_on(client, scenario, points, hours, chunk_size, on_progress)


def write_sweep(rows: list[dict[str, Any]], folder: Path) -> None:
    """sweep.json, sweep.csv and the trade-off plots."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    with (folder / "sweep.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in SUMMARY_FIELDS})
    ok = [r for r in rows if not r.get("error")]
    fig = plot_share_vs_officers(ok)
    fig.savefig(folder / "share_vs_officers.png", dpi=110)
    plt.close(fig)
    fig = plot_security_tradeoff(ok)
    fig.savefig(folder / "intercepted_vs_inspection_rate.png", dpi=110)
    plt.close(fig)


def _label(row: dict[str, Any]) -> str:
    return (
        f"induction {row['induction_per_h']:,.0f}/h, stations {row['stations']}, "
        f"release ≤ {row['release_max_score']:g}"
    )


def plot_share_vs_officers(rows: list[dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_label(row), []).append(row)
    for label, members in sorted(groups.items()):
        members.sort(key=lambda r: r["officers"])
        ax.plot(
            [r["officers"] for r in members],
            [100 * (r["share_within_target"] or 0) for r in members],
            marker="o",
            label=label,
        )
    ax.set_xlabel("review officers on screen")
    ax.set_ylabel("% of parcels cleared within the target")
    ax.set_title("Share cleared within target vs review officers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_security_tradeoff(rows: list[dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for row in rows:
        rate = 100 * (row["inspection_rate"] or 0)
        share = row["intercepted"] / row["contraband"] if row["contraband"] else 0.0
        ax.scatter(rate, 100 * share, s=60)
        ax.annotate(
            f"{row['officers']} off., {row['stations']} st., ≤{row['release_max_score']:g}",
            (rate, 100 * share),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize="small",
        )
    ax.set_xlabel("% of parcels physically inspected")
    ax.set_ylabel("% of hidden contraband intercepted at inspection")
    ax.set_title("Threats intercepted vs inspection rate (one point per grid variant)")
    ax.grid(alpha=0.3)
    return fig
