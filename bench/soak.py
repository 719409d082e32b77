"""Soak benchmark: a million parcels through the controller over the wire, its memory sampled.

Three processes, as on a rig:

* the **controller**: ``cargogate run SITE`` on a generated site file (SQLite journal, command
  channel, console on a free loopback port), its lines' sorters on OPC UA and Modbus TCP
  (``--protocol mixed``, the default: the first half of the lines on each; see below);
* the **floor** (``bench/soak_floor.py``): an emulated PLC per line behind a real asyncua or
  pymodbus server, belts carrying ``--lines`` × 20,000 parcels per simulated hour (Poisson)
  from scan to divert, where the PLC logic picks the lane (0.5 % miss it and go round the
  loop again), flight manifests written into the risk-feed folder two flights ahead of their
  parcels, and the officers at the inspection stations, who record each inspected parcel's
  outcome 1–5 simulated minutes after it reaches the lane, through the controller's command
  socket as ``cargogate inspect`` does;
* this one: starts both, samples the controller's RSS every ``--sample-s`` wall seconds, stops
  the controller with SIGTERM once the floor has drained, and checks every parcel the PLCs
  sent against the journal (``bench/soak_check.py``).

**Acceleration.** The floor runs on a ``ScaledClock``, ``--speed`` times the wall, and so does
the controller: the site's ``plant`` is the *rig* (``bench/soak_rig.py``), a plant adapter whose
only part is that clock. Belts, decision windows, flights, officers, KPI windows and hour
buckets all run in simulated time, so a simulated hour holds what an hour at the nominal rate
holds; link supervision, polling and group commits stay in wall time. What bounds the speed is
the decision window in wall time (5.5 s simulated is 0.46 s of wall at 12×): a stall of the
controller or of the floor costs ``speed`` times as much of it. The scanner is a stand-in
X-ray adapter that scores each HAWB from a hash (0.5 % alarm, 1 % ambiguous), so the policy
releases most parcels and inspects about 6 % (1 % without a manifest row, 1 % RED, 2 %
YELLOW with no review room, the X-ray, the 1 % audit). The rig and the scanner reach the
controller as an integrator's adapters do: through the entry-point group
``cargogate.adapters``, declared by a throwaway distribution on the controller's
``PYTHONPATH``; ``cargogate run`` itself is unchanged.

**Protocol.** Both sustain 4 × 20,000 parcels/h at 12× (267 parcels/s) on this 2-core machine
when it is otherwise idle; ``mixed`` runs both so that one soak covers both adapters. Modbus
costs the controller more CPU (it polls every line every 5 ms), OPC UA costs the floor more
(asyncua's server) and adds up to a publishing interval of latency; under CPU starvation
Modbus is the first to fall behind (a 0.2 s request timeout trips, the link reconnects).

**Figures.** ``lost``: parcels a PLC sent that the journal never closed and does not show
open; ``doubled``: parcels the journal closed twice, or that no PLC sent (``examples`` lists a
few of each with their journal rows); ``mismatched``: a journal end state other than where
the floor put the parcel (its lane, the officer's outcome). ``rss_slope_mb_per_h``: the
least-squares slope of the controller's RSS over simulated hours, from the end of the
warm-up (``--warmup``, a share of the traffic's simulated time) to the last parcel inducted;
the hour-long KPI window fills during the first simulated hour, so short runs include its
filling. ``parcels_per_s`` is over the induction (wall), ``wall_s`` the whole run.
``plc_defaulted``: parcels the PLC sent to its default lane (no reply credited in time);
they end as exceptions, which is fail-secure, not lost. Target: 0 lost, 0 doubled, slope
≤ 5 MB per simulated hour after the warm-up.

``--tracemalloc`` has the rig start tracing the controller's allocations at the end of the
warm-up and snapshot them as long again later and at the last parcel; the JSON then lists
what grew between the snapshots by allocation site (tracing slows the controller several
times over: use a lower ``--speed``).

Prints one JSON object; writes it with ``rss.csv`` (every sample), ``rss.png`` (RSS over
simulated time) and the controller's log to ``--out`` (default ``reports/soak``); progress
goes to stderr. Example: ``python bench/soak.py --parcels 20000``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak_check import verify
from soak_floor import (
    FLIGHT,
    FLIGHTS_AHEAD,
    NAMESPACE,
    PER_LINE_H,
    FloorSpec,
    core_line,
    floor_process,
    protocols,
    write_flight,
)

RSS_SLOPE_TARGET_MB_PER_H = 5.0

# --- the controller's side: site file, plugin, process figures ------------------------------


def site_document(
    work: Path,
    endpoints: Mapping[str, str],
    args: argparse.Namespace,
    snapshots: Path | None = None,
) -> dict[str, Any]:
    """The controller's site file (JSON is YAML) for the floor's ``endpoints``. The risk
    book's bound is sized to the traffic (the site's default holds a day of results), so
    that the fitted slope shows what leaks, not the manifests a site keeps by design."""
    speed = args.speed
    staleness = min(1.0, 0.02 * speed)  # the PLC's tick may be a scan old: 20 ms of wall
    link = {"plc_clock_staleness_s": staleness}
    lines = []
    for line_id, endpoint in endpoints.items():
        sorter: dict[str, Any]
        if endpoint.startswith("opc.tcp://"):
            sorter = {"type": "opcua", "endpoint": endpoint, "namespace_uri": NAMESPACE}
        else:
            host, port = endpoint.removeprefix("modbus://").split("/")[0].rsplit(":", 1)
            sorter = {"type": "modbus", "host": host, "port": int(port)}
        lines.append({**core_line(line_id), "sorter": {**sorter, "link": link}})
    rig: dict[str, Any] = {"type": "soak_rig", "speed": speed}
    if snapshots is not None:
        rig["snapshots"] = str(snapshots)
    return {
        "site": {"id": "SOAK", "name": "soak rig"},
        "lines": lines,
        "policy": {"audit_rate": 0.01, "min_audit_rate": 0.01},
        "store": {"journal_path": str(work / "journal.sqlite")},
        "commands": {"socket": str(work / "cmd.sock")},
        "console": {"host": "127.0.0.1", "port": 0},
        "risk_feeds": [{"type": "file", "path": str(work / "manifests"), "poll_s": 1.0}],
        "risk_book": {"max_results": args.risk_book},
        "xray": {"type": "soak_scanner"},
        "review": {"type": "none"},
        "plant": rig,
    }


def plugin_path(work: Path) -> str:
    """A throwaway distribution that declares ``soak_rig`` under ``cargogate.adapters``;
    returns the ``PYTHONPATH`` on which the controller finds it and the module."""
    dist = work / "plugin" / "cargogate_soak_rig-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cargogate-soak-rig\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[cargogate.adapters]\nsoak = soak_rig\n")
    here = str(Path(__file__).resolve().parent)
    return os.pathsep.join(p for p in (str(dist.parent), here, os.environ.get("PYTHONPATH")) if p)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` (psutil, or /proc where psutil is missing)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        status = Path(f"/proc/{pid}/status").read_text()
        kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kb) / 1024
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    wall_s: float
    sim_h: float
    rss_mb: float
    inducted: int
    finished: int


@dataclass
class Carried:
    """What the run saw while the parcels flowed."""

    samples: list[Sample]
    floor: dict[str, Any]
    """The floor's own counts (PLCs, belts, officers)."""
    rss_ready_mb: float
    induction_wall_s: float
    traffic_wall_s: float
    induction_h: float
    controller_cpu_s: float
    floor_cpu_s: float
    snapshot_parcels: list[int] = field(default_factory=list)
    """Parcels inducted when each tracemalloc snapshot was asked for."""


class Soak:
    """One run's two processes: the floor (spawned) and the controller (``cargogate run``)."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.log = work / "controller.log"
        self.snapshots = work / "snapshots"
        manifests = work / "manifests"
        manifests.mkdir()
        for flight in range(FLIGHTS_AHEAD + 1):
            write_flight(manifests, flight, args.parcels)
        self.spec = FloorSpec(
            protocols(args.lines, args.protocol),
            args.speed,
            args.parcels,
            manifests,
            work / "fates.csv",
            work / "answers.csv",
        )
        context = mp.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.progress = context.RawArray("q", 2)  # inducted, finished
        self.floor = context.Process(
            target=floor_process, args=(self.spec, theirs, self.progress), daemon=True
        )
        self.controller: subprocess.Popen[bytes] | None = None
        self._signals = 0

    def start(self) -> None:
        """The floor first (its servers take free ports), then the controller on a site file
        naming them; returns once every PLC sees the controller's heartbeat and the command
        socket is open."""
        self.floor.start()
        endpoints: dict[str, str] = self._answer(120)
        snapshots = self.snapshots if self.args.tracemalloc else None
        if snapshots is not None:
            snapshots.mkdir()
        site = self.work / "site.yaml"
        document = site_document(self.work, endpoints, self.args, snapshots)
        site.write_text(json.dumps(document, indent=1))
        cargogate = Path(sys.executable).with_name("cargogate")
        with self.log.open("wb") as log:
            self.controller = subprocess.Popen(
                [str(cargogate), "run", str(site), "--no-live", "--log-level", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": plugin_path(self.work)},
                cwd=self.work,
            )
        if self._answer(120) != "linked" or not self._wait_for(self.work / "cmd.sock", 60):
            raise SystemExit(f"the controller did not link up:\n{_tail(self.log)}")

    def carry(self) -> Carried:
        """Let the parcels flow; sample the controller's RSS every ``--sample-s`` wall seconds
        until the floor has ended every parcel (officers included)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        assert self.controller is not None
        pid, args = self.controller.pid, self.args
        rss_ready = rss_mb(pid)
        cpu0, floor_cpu0 = cpu_s(pid), cpu_s(self.floor.pid)
        samples: list[Sample] = []
        floor: dict[str, Any] | None = None
        induced: tuple[float, float, float, float] | None = None  # wall, sim h, both CPUs
        snapshots: list[int] = []
        self.conn.send(str(self.work / "cmd.sock"))  # go
        t0 = next_sample = time.monotonic()
        columns = (Progress.get_default_columns()[0], BarColumn(), MofNCompleteColumn())
        stderr = Console(stderr=True)
        with Progress(*columns, TimeElapsedColumn(), console=stderr, transient=True) as bar:
            task = bar.add_task("soak", total=args.parcels)
            while floor is None:
                self._check_alive()
                if self.conn.poll(0.1):
                    floor = self.conn.recv()
                now = time.monotonic()
                inducted, finished = int(self.progress[0]), int(self.progress[1])
                sim_h = (now - t0) * args.speed / 3600
                if induced is None and inducted >= args.parcels:
                    induced = (now - t0, sim_h, cpu_s(pid), cpu_s(self.floor.pid))
                    self._trace(inducted, snapshots, last=True)
                elif induced is None:
                    self._trace(inducted, snapshots)
                if now < next_sample and floor is None:
                    continue
                next_sample += args.sample_s
                rss = rss_mb(pid)
                samples.append(Sample(now - t0, sim_h, rss, inducted, finished))
                label = f"{sim_h:5.2f} sim h, controller RSS {rss:6.1f} MB"
                bar.update(task, completed=finished, description=label)
        assert induced is not None
        return Carried(
            samples=samples,
            floor=floor,
            rss_ready_mb=rss_ready,
            induction_wall_s=induced[0],
            traffic_wall_s=time.monotonic() - t0,
            induction_h=induced[1],
            controller_cpu_s=induced[2] - cpu0,
            floor_cpu_s=induced[3] - floor_cpu0,
            snapshot_parcels=snapshots,
        )

    def _trace(self, inducted: int, snapshots: list[int], last: bool = False) -> None:
        """With ``--tracemalloc``, signal the rig when due: the first signal (end of the
        warm-up) starts tracing, the next (as long again later, so that what is merely in
        flight cancels out) and the ``last`` (the last parcel) take snapshots."""
        due = (self._signals + 1) * self.args.warmup * self.args.parcels
        if not self.args.tracemalloc or self.controller is None:
            return
        if not last and (self._signals >= 2 or inducted < due):
            return
        self.controller.send_signal(signal.SIGUSR1)
        self._signals += 1
        if self._signals > 1:
            snapshots.append(inducted)

    def stop(self) -> None:
        """Stop the controller as systemd would (SIGTERM: it flushes the journal), then the
        floor."""
        assert self.controller is not None
        self.controller.send_signal(signal.SIGTERM)
        try:
            self.controller.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"the controller did not stop:\n{_tail(self.log)}") from None
        self.conn.send("stop")
        self.floor.join(timeout=60)

    def kill(self) -> None:
        """End whatever still runs (after a failure)."""
        if self.controller is not None and self.controller.poll() is None:
            self.controller.kill()
            self.controller.wait()
        if self.floor.is_alive():
            self.floor.kill()
            self.floor.join()

    def _answer(self, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(0.1):
            self._check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"the floor gave no answer within {timeout_s:g} s")
        return self.conn.recv()

    def _wait_for(self, path: Path, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not path.exists() and time.monotonic() < deadline:
            self._check_alive()
            time.sleep(0.1)
        return path.exists()

    def _check_alive(self) -> None:
        if self.controller is not None and self.controller.poll() is not None:
            raise SystemExit(f"the controller stopped:\n{_tail(self.log)}")
        if not self.floor.is_alive() and not self.conn.poll():
            raise SystemExit("the floor process stopped (its traceback is above)")


# --- figures ---------------------------------------------------------------------------------


def fit(samples: list[Sample], warmup_h: float, end_h: float) -> statistics.LinearRegression | None:
    """Least-squares line of RSS (MB) over simulated hours, warm-up excluded; None with fewer
    than two samples in the window (a short run)."""
    kept = [s for s in samples if warmup_h <= s.sim_h <= end_h]
    try:
        return statistics.linear_regression([s.sim_h for s in kept], [s.rss_mb for s in kept])
    except statistics.StatisticsError:
        return None


def short_series(samples: list[Sample], points: int = 20) -> list[list[float]]:
    """[simulated hours, RSS MB] at about ``points`` evenly spaced samples, the last kept."""
    picked = samples[:: max(1, len(samples) // points)]
    if picked and picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    return [[round(s.sim_h, 3), round(s.rss_mb, 1)] for s in picked]


def report(
    args: argparse.Namespace,
    carried: Carried,
    checked: dict[str, Any],
    line: statistics.LinearRegression | None,
) -> dict[str, Any]:
    """The JSON object: the issue's fields first, then what explains them."""
    samples, end_h = carried.samples, carried.induction_h
    warmup_h = args.warmup * end_h
    slope = None if line is None else round(line.slope, 2)
    lines = protocols(args.lines, args.protocol)
    counts = {k: v for k, v in checked.items() if k not in ("lost", "doubled", "mismatched")}
    return {
        "parcels": args.parcels,
        "lost": checked["lost"],
        "doubled": checked["doubled"],
        "rss_mb_start": round(carried.rss_ready_mb, 1),
        "rss_mb_end": round(samples[-1].rss_mb, 1),
        "rss_slope_mb_per_h": slope,
        "wall_s": None,  # the whole run's, set by run()
        "parcels_per_s": round(args.parcels / carried.induction_wall_s, 1),
        "sim_hours": round(end_h, 3),
        "speed": args.speed,
        "protocol": args.protocol,
        "lines": args.lines,
        "rss_samples": short_series(samples),
        "mismatched": checked["mismatched"],
        "rss_mb_peak": round(max(s.rss_mb for s in samples), 1),
        "rss_slope_target_mb_per_h": RSS_SLOPE_TARGET_MB_PER_H,
        "risk_book_max_results": args.risk_book,
        "warmup_sim_h": round(warmup_h, 3),
        "induction_wall_s": round(carried.induction_wall_s, 1),
        "traffic_wall_s": round(carried.traffic_wall_s, 1),
        "nominal_parcels_per_h": args.lines * PER_LINE_H,
        "lines_by_protocol": dict(sorted(Counter(lines.values()).items())),
        "controller_cpu_share": round(carried.controller_cpu_s / carried.induction_wall_s, 2),
        "floor_cpu_share": round(carried.floor_cpu_s / carried.induction_wall_s, 2),
        **counts,
        **carried.floor,
        "samples": len(samples),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def growth(folder: Path, parcels: list[int], top: int = 12) -> dict[str, Any]:
    """What the controller allocated and still held between its first and last snapshot,
    by allocation site (traceback, innermost frame last), largest first."""
    import tracemalloc

    paths = sorted(folder.glob("snapshot-*.pickle"), key=lambda p: int(p.stem.split("-")[1]))
    if len(paths) < 2 or len(parcels) < 2:
        return {"error": f"{len(paths)} snapshot(s) written, two needed"}
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
    ]
    first, last = (
        tracemalloc.Snapshot.load(str(p)).filter_traces(ignore) for p in (paths[0], paths[-1])
    )
    between = parcels[-1] - parcels[0]
    stats = last.compare_to(first, "traceback")
    root = str(Path(__file__).resolve().parents[1]) + os.sep

    def where(frame: tracemalloc.Frame) -> str:
        return f"{frame.filename.removeprefix(root).split('site-packages/')[-1]}:{frame.lineno}"

    return {
        "parcels_between": between,
        "traced_kb": round(sum(s.size_diff for s in stats) / 1024, 1),
        "bytes_per_parcel": round(sum(s.size_diff for s in stats) / between, 1),
        "sites": [
            {
                "kb": round(stat.size_diff / 1024, 1),
                "blocks": stat.count_diff,
                "bytes_per_parcel": round(stat.size_diff / between, 1),
                "at": [where(frame) for frame in stat.traceback[-4:]],
            }
            for stat in stats[:top]
        ],
    }


def plot(
    samples: list[Sample],
    result: dict[str, Any],
    line: statistics.LinearRegression | None,
    out: Path,
) -> None:
    """RSS over simulated hours, the warm-up shaded, the fitted line (the one reported) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warmup_h, end_h = result["warmup_sim_h"], result["sim_hours"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([s.sim_h for s in samples], [s.rss_mb for s in samples], lw=1.2, label="RSS")
    ax.axvspan(0, warmup_h, color="0.9", label="warm-up")
    ax.axvline(end_h, color="0.6", lw=0.8, ls=":", label="last parcel inducted")
    if line is not None:
        xs = [warmup_h, end_h]
        ys = [line.intercept + line.slope * x for x in xs]
        ax.plot(xs, ys, "--", label=f"fit: {line.slope:+.2f} MB per simulated hour")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("controller RSS (MB)")
    ax.set_title(
        f"soak: {result['parcels']:,} parcels, {result['lines']} lines ({result['protocol']}), "
        f"{result['speed']:g}×; lost {result['lost']}, doubled {result['doubled']}",
        fontsize=10,
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_outputs(
    out: Path,
    samples: list[Sample],
    result: dict[str, Any],
    line: statistics.LinearRegression | None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = ["wall_s,sim_h,rss_mb,inducted,finished"]
    rows += [
        f"{s.wall_s:.2f},{s.sim_h:.4f},{s.rss_mb:.2f},{s.inducted},{s.finished}" for s in samples
    ]
    (out / "rss.csv").write_text("\n".join(rows) + "\n")
    plot(samples, result, line, out / "rss.png")
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start, carry, stop, check; the JSON object (also written to ``--out``)."""
    began = time.perf_counter()
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="cg-soak-"))  # short: a socket path has 107 bytes
    soak = Soak(args, work)
    try:
        soak.start()
        carried = soak.carry()
        soak.stop()
        checked = verify(work / "journal.sqlite", soak.spec.fates, soak.spec.answers)
        checked["controller_log"] = _log_problems(soak.log)
        if args.tracemalloc:
            checked["tracemalloc_growth"] = growth(soak.snapshots, carried.snapshot_parcels)
    finally:
        soak.kill()
        if soak.log.exists():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(soak.log, out / "controller.log")
        if args.keep:
            print(f"working folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    line = fit(carried.samples, args.warmup * carried.induction_h, carried.induction_h)
    result = report(args, carried, checked, line)
    result["wall_s"] = round(time.perf_counter() - began, 1)
    write_outputs(out, carried.samples, result, line)
    return result


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _log_problems(path: Path) -> dict[str, int]:
    """The controller's warning and error lines, counted by level."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        for level in ("WARNING", "ERROR", "CRITICAL"):
            if f" {level} " in line:
                counts[level.lower()] += 1
                break
    return dict(counts)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=1_000_000, help="parcels to carry")
    parser.add_argument("--lines", type=int, default=4, help="sorter lines")
    parser.add_argument(
        "--protocol",
        choices=["mixed", "opcua", "modbus"],
        default="mixed",
        help="the lines' protocol; mixed: the first half OPC UA, the rest Modbus TCP",
    )
    parser.add_argument("--speed", type=float, default=12.0, help="simulated s per wall s")
    parser.add_argument(
        "--warmup", type=float, default=0.1, help="share of simulated time left out of the fit"
    )
    parser.add_argument("--sample-s", type=float, default=2.0, help="wall s between samples")
    parser.add_argument(
        "--risk-book",
        type=int,
        default=100_000,
        help="the controller's risk_book.max_results (the manifests run two flights of "
        f"{FLIGHT:,} parcels ahead)",
    )
    parser.add_argument("--out", default="reports/soak", help="folder for the JSON and plot")
    parser.add_argument(
        "--keep", action="store_true", help="keep the working folder (journal, site, ledger)"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="report what the controller's allocations grew by, by site (slows it down)",
    )
    args = parser.parse_args(argv)
    if args.parcels < 1 or args.lines < 1 or args.speed <= 0 or not 0 <= args.warmup < 1:
        parser.error("--parcels and --lines must be at least 1, --speed > 0, 0 <= --warmup < 1")
    if args.risk_book < (FLIGHTS_AHEAD + 1) * FLIGHT:
        parser.error(
            f"--risk-book {args.risk_book} cannot hold the manifests in flight "
            f"(at least {(FLIGHTS_AHEAD + 1) * FLIGHT:,})"
        )
    return args


def main() -> None:
    print(json.dumps(run(parse())), flush=True)


if __name__ == "__main__":
    main()
