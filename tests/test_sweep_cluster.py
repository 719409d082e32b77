"""Sweeps on real Dask clusters: chunking, identical results whatever the cluster, pinned ports
on a local cluster, and a scheduler and worker started as separate processes as on other
hosts."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from simulation.sweep import (
    LOCAL_HOST,
    ClusterError,
    GridPoint,
    LocalPorts,
    chunks,
    dask_client,
    default_chunk_size,
    grid,
    port_problem,
    port_range,
    run_point,
    run_sweep,
    scheduler_address,
    sweep_on,
)
from tests.twin.files import scenario_dict, write_files

DASK = Path(sys.executable).with_name("dask")


def free_block(count: int) -> int:
    """The first of ``count`` consecutive ports free on loopback, below Linux's ephemeral range
    (so no outgoing connection takes one meanwhile)."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20_000, 30_000 - count)
        if all(port_problem(LOCAL_HOST, p) is None for p in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    """Someone else's server on ``port``."""
    with socket.socket() as other:
        other.bind((LOCAL_HOST, port))
        other.listen()
        yield other


@pytest.fixture
def small_scenario(tmp_path: Path) -> Path:
    return write_files(
        tmp_path,
        scenario_dict(
            horizon_h=0.1,
            arrivals={"steady": [{"from_h": 0, "to_h": 0.1, "parcels_per_h": 3000}]},
            manifest={"yellow_rate": 0.2},
        ),
    )


POINTS = grid(officers=[0, 2, 4], release_max_score=[0.05, 0.3])


def test_chunks_take_every_point_once_at_a_stride() -> None:
    points = [GridPoint(officers=n) for n in range(10)]
    parts = chunks(points, 3)
    assert [[i for i, _ in part] for part in parts] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert all(points[i] == point for part in parts for i, point in part)
    assert chunks(points, 10) == [list(enumerate(points))]
    assert [len(part) for part in chunks(points, 1)] == [1] * 10
    with pytest.raises(ValueError, match="at least 1"):
        chunks(points, 0)
    # A few chunks per worker thread; never an empty chunk.
    assert default_chunk_size(16, 2) == 2
    assert default_chunk_size(1000, 2) == 125
    assert default_chunk_size(3, 8) == 1


def test_port_ranges_are_read_or_refused_with_the_reason() -> None:
    assert port_range("40000:40100") == (40000, 40100)
    assert port_range("40000") == (40000, 40000)
    for text, says in (
        ("40100:40000", "FIRST <= LAST"),
        ("0:10", "1-65535"),
        ("40000:70000", "1-65535"),
        ("4000O", "a port or a range"),
        ("1:2:3", "a port or a range"),
    ):
        with pytest.raises(ValueError, match=says):
            port_range(text)


def test_results_are_identical_whatever_the_cluster(small_scenario: Path) -> None:
    """The same rows from one process, one worker in one chunk, two workers a point per
    chunk, and two workers in default chunks; in grid order, with progress counted."""
    reference = [run_point(str(small_scenario), point) for point in POINTS]
    assert all(row["error"] == "" and row["parcels"] > 100 for row in reference)
    assert len({row["inspection_rate"] for row in reference}) > 1  # the grid matters
    seen: list[int] = []
    for workers, chunk_size in ((1, len(POINTS)), (2, 1), (2, None)):
        seen.clear()
        rows = run_sweep(
            small_scenario, POINTS, workers=workers, chunk_size=chunk_size, on_progress=seen.append
        )
        assert rows == reference, (workers, chunk_size)
        assert seen == sorted(seen)
        assert seen[-1] == len(POINTS)


def test_a_local_cluster_listens_only_on_its_pinned_ports(small_scenario: Path) -> None:
    scheduler = free_block(1)
    first = free_block(6)
    ports = LocalPorts(scheduler=scheduler, workers=(first, first + 5))
    with dask_client(workers=2, ports=ports) as client:
        assert scheduler_address(client) == f"tcp://{LOCAL_HOST}:{scheduler}"
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        used = [int(address.rsplit(":", 1)[1]) for address in workers]
        used += [int(info["nanny"].rsplit(":", 1)[1]) for info in workers.values()]
        assert len(set(used)) == 4
        assert all(first <= port <= first + 5 for port in used), used
        rows = sweep_on(client, small_scenario, POINTS[:2])
    assert [row["officers"] for row in rows] == [0, 0]
    assert all(row["error"] == "" for row in rows)


def test_a_pinned_port_in_use_is_named_before_anything_starts() -> None:
    port = free_block(1)
    pinned = LocalPorts(scheduler=port)
    with (
        listening(port),
        pytest.raises(ClusterError) as caught,
        dask_client(workers=1, ports=pinned),
    ):
        pytest.fail("a cluster started on a port in use")
    assert caught.value.option == "--scheduler-port"
    assert f"port {port} on {LOCAL_HOST} is not free" in caught.value.message

    first = free_block(4)
    pinned = LocalPorts(workers=(first, first + 3))
    with (
        listening(first + 1),
        pytest.raises(ClusterError) as caught,
        dask_client(workers=2, ports=pinned),
    ):
        pytest.fail("two workers started on three free ports")
    assert caught.value.option == "--worker-ports"
    assert caught.value.message == (
        f"{first}:{first + 3} has 3 free port(s) on {LOCAL_HOST}; 2 worker(s) need 4 "
        "(a nanny and a worker each)"
    )


@contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([str(DASK), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            socket.create_connection((LOCAL_HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


def test_a_sweep_runs_on_a_separate_scheduler_and_worker(small_scenario: Path) -> None:
    """`dask scheduler` and `dask worker` as an operator starts them on other hosts; the sweep
    refuses a scheduler without workers, then gives the same rows as one process."""
    port = free_block(1)
    first = free_block(4)
    address = f"tcp://{LOCAL_HOST}:{port}"
    common = ["--no-dashboard"]
    with process("scheduler", "--host", LOCAL_HOST, "--port", str(port), *common) as scheduler:
        wait_listening(port, scheduler)
        with pytest.raises(ClusterError) as caught, dask_client(address, join_timeout_s=1):
            pytest.fail("a sweep ran on a scheduler without workers")
        assert caught.value.option == "--scheduler"
        assert "no worker joined the scheduler" in caught.value.message
        worker_args = [address, "--nworkers", "2", "--nthreads", "1", *common]
        worker_args += ["--worker-port", f"{first}:{first + 1}"]
        worker_args += ["--nanny-port", f"{first + 2}:{first + 3}"]
        with process("worker", *worker_args):
            rows = run_sweep(small_scenario, POINTS, address, chunk_size=2)
    reference: list[dict[str, Any]] = [run_point(str(small_scenario), p) for p in POINTS]
    assert rows == reference
