"""Every command in README.md's shell blocks, run as written in a fresh copy of the checkout.

The copy holds the files git knows (tracked, and new ones it does not ignore) with this
checkout's ``.venv`` linked in, as after a clone and ``make demo``'s first install; the
commands run in document order (the replay reads the journal ``make demo`` leaves), with the
virtualenv on ``PATH`` as the README asks (``source .venv/bin/activate``). A command ending in
``&`` runs in the background while the block's next command runs. A command that serves
(``make demo``, ``cargogate run``) passes once its console answers ``/api/v1/health`` with
``ok`` (every link up); it is then stopped as Ctrl-C stops it, SIGINT to its process group,
and must have stopped cleanly (its journal flushed: the ``journal:`` line). The commands this
machine cannot run as written are in :data:`CANNOT_RUN_HERE`, each with why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STAMP = Path(".venv/.installed-stamp")
"""What ``make`` builds the virtualenv for; the copy must find it up to date (never reinstall
into the shared ``.venv``)."""

CANNOT_RUN_HERE = {
    "make test": "runs the whole suite, this test included (it would run itself)",
    "/etc/cargogate/site.yaml": "needs a site installed in /etc/cargogate: its PLCs, "
    "certificates and the service user (config/site.example.yaml is checked instead)",
}
"""A command containing a key is not run here, for the reason given."""

HEALTH = "http://127.0.0.1:8080/api/v1/health"
"""Where a serving command's console answers (the console's default address)."""
SERVING = {"make demo": 5.0, "cargogate run config/": 0.0}
"""Commands that run until stopped; they pass once :data:`HEALTH` says ``ok``, and are then
left to work this many seconds more (the demo's parcels reach the journal the replay reads)."""
MACHINE_PROBLEM = re.compile(
    r"^  \S+: (no such file or folder|environment variable is not set|cannot be made: .*"
    r"|not writable by this user) \(got .*\)$"
)
EXPECTED_EXIT = {"config/site.example.yaml": 2}
"""Commands the README shows failing: off site, the example names files this machine lacks
(each line must be such a machine problem, never one of the file itself)."""
PORTS = {"make demo": (8080,), "cargogate run config/plc/": (8080, 4840, 5020)}
"""Fixed ports a command needs free (another service on this machine would fail it)."""


@dataclass
class Step:
    """One command the README gives (and the ones it puts in the background before it)."""

    command: str
    background: list[str] = field(default_factory=list)

    @property
    def bare(self) -> str:
        """The command without its trailing comment."""
        return bare(self.command)

    def why_not(self) -> str | None:
        return next((why for key, why in CANNOT_RUN_HERE.items() if key in self.bare), None)


def bare(command: str) -> str:
    return re.sub(r"\s+#.*$", "", command)


def readme_steps(text: str) -> list[Step]:
    """The commands of every ``sh``/``bash``/``console`` block, in document order."""
    steps = []
    for block in re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", text, re.M | re.S):
        background: list[str] = []
        for line in block.replace("\\\n", " ").splitlines():
            command = line.strip()
            if not command or command.startswith("#"):
                continue
            if command.endswith("&"):
                background.append(command.removesuffix("&").strip())
            else:
                steps.append(Step(command, background))
                background = []
        assert not background, f"a block ends in background commands: {background}"
    return steps


STEPS = readme_steps(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the checkout with its ``.venv`` linked in (never reinstalled)."""
    if not (ROOT / STAMP).is_file():
        pytest.skip(f"{STAMP} is missing: build the virtualenv with `make` first")
    copy = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so no list of its files: {listed.stderr.decode()}")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is not copied
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    stamp = (ROOT / STAMP).stat().st_mtime
    os.utime(copy / "pyproject.toml", (stamp - 1, stamp - 1))  # make finds .venv up to date
    return copy


def test_the_readme_has_the_commands_a_new_user_needs() -> None:
    commands = [step.bare for step in STEPS]
    assert "make demo" in commands
    assert any(c.startswith(".venv/bin/cargogate config check") for c in commands)
    assert any(c.startswith("cargogate simulate") for c in commands)


@pytest.mark.parametrize("step", STEPS, ids=[step.bare for step in STEPS])
def test_the_readme_command_runs_as_written(step: Step, checkout: Path, tmp_path: Path) -> None:
    why = step.why_not()
    if why:
        pytest.skip(why)
    busy = [port for key, ports in PORTS.items() if key in step.bare for port in ports]
    taken = [port for port in busy if _in_use(port)]
    if taken:
        pytest.skip(f"port(s) {taken} in use on this machine: the command would fail on them")
    if step.bare.startswith("make "):
        fresh = subprocess.run(["make", "-q", str(STAMP)], cwd=checkout, check=False)
        assert fresh.returncode == 0, "make would reinstall the shared .venv: refusing"
    with contextlib.ExitStack() as stack:
        behind = [stack.enter_context(_started(c, checkout, tmp_path)) for c in step.background]
        work_s = next((s for key, s in SERVING.items() if key in step.bare), None)
        if work_s is not None:
            with _started(step.command, checkout, tmp_path) as serving:
                _wait_healthy(serving, behind)
                time.sleep(work_s)
            assert "journal: " in serving.output(), serving.output()  # stopped cleanly
        else:
            _run_to_the_end(step.command, checkout)
        for process in behind:
            assert process.alive(), process.output()
    for process in behind:
        assert process.returncode == 0, process.output()


@dataclass
class Process:
    command: str
    popen: subprocess.Popen[bytes]
    log: Path
    returncode: int | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def interrupt(self, timeout_s: float = 30.0) -> None:
        """Ctrl-C: SIGINT to the command's process group, then wait for it to end."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            raise AssertionError(f"{self.command!r} ignored Ctrl-C:\n{self.output()}") from None
        self.returncode = self.popen.returncode


def _environment(checkout: Path) -> dict[str, str]:
    """The environment after ``source .venv/bin/activate`` in ``checkout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGOGATE_", "PYTEST_"))}
    env["VIRTUAL_ENV"] = str(checkout / ".venv")
    env["PATH"] = f"{checkout / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def _started(command: str, checkout: Path, tmp_path: Path) -> Iterator[Process]:
    """``command`` running in ``checkout`` in its own process group, until the block ends."""
    log = tmp_path / f"{abs(hash(command))}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            ["bash", "-c", command],
            cwd=checkout,
            env=_environment(checkout),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    process = Process(command, popen, log)
    try:
        yield process
    finally:
        process.interrupt()
        assert "Traceback" not in process.output(), process.output()


def _wait_healthy(serving: Process, behind: list[Process], timeout_s: float = 90.0) -> None:
    """Until the console says every link is up (every process still running meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in (serving, *behind):
            assert process.alive(), f"{process.command!r} ended:\n{process.output()}"
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(HEALTH, timeout=2) as answer,
        ):
            if b'"status":"ok"' in answer.read():
                return
        time.sleep(0.5)
    raise AssertionError(f"{serving.command!r} never became healthy:\n{serving.output()}")


def _run_to_the_end(command: str, checkout: Path, timeout_s: float = 120.0) -> None:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=checkout,
        env=_environment(checkout),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = done.stdout + done.stderr
    expected = next((code for key, code in EXPECTED_EXIT.items() if key in bare(command)), 0)
    assert done.returncode == expected, output
    assert "Traceback" not in output, output
    if expected:
        problems = done.stderr.splitlines()[1:]
        assert problems, output
        assert all(MACHINE_PROBLEM.match(line) for line in problems), output


def _in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
