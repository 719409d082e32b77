"""The kit as an integrator gets it: CargoGate built as a wheel and installed in a fresh virtual
environment, where a plain ``pytest --cargogate-conformance=...`` finds the plugin through its
``pytest11`` entry point and plays the project's own adapters and the toy adapter of
docs/integrators.md.

Slow (a wheel build, a virtual environment; well under a minute) but always run. Nothing is
downloaded: the wheel's dependencies come from this environment through a ``.pth`` file in
the new one, and CargoGate itself only from the wheel (checked: ``controller`` is imported from
the new environment). The project's tests are copied beside it, as an integrator's tests sit
in their own repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.conformance.checklist import SUFFIX
from tests.conformance.own.catalog import kits
from tests.conformance.runs import ENTRY_POINT, PLUGIN, expected_outcomes, run_kit

ROOT = Path(__file__).parents[1]
PACKAGES = ("controller", "plc_adapters", "simulation")
KITS = {"sorter": "sorter-inprocess", "xray": "xray-onnx", "images": "images-inprocess"}
"""One quick adapter of each port besides risk, whose every kit runs (with the toy's)."""


@dataclass(frozen=True)
class Installed:
    python: Path
    wheel: Path
    project: Path
    """The project's tests and shipped model, copied out of the source tree."""


def stage(source: Path, root: Path = ROOT) -> Path:
    """What a source distribution holds: the project file, the README and the packages."""
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    for package in PACKAGES:
        shutil.copytree(root / package, source / package, ignore=_BUILD_LITTER)
    return source


_BUILD_LITTER = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def build_wheel(source: Path, dist: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("cargogate-*.whl")
    return wheel


def fresh_environment(folder: Path, wheel: Path) -> Path:
    """A new virtual environment with ``wheel`` installed and this one's packages visible."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "cargogate-dependencies.pth").write_text(ours + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return python


def install(work: Path, root: Path = ROOT) -> Installed:
    wheel = build_wheel(stage(work / "source", root), work / "dist")
    python = fresh_environment(work / "venv", wheel)
    project = work / "project"
    shutil.copytree(root / "tests", project / "tests", ignore=_BUILD_LITTER)
    shutil.copytree(root / "models", project / "models")
    return Installed(python, wheel, project)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_ships_the_kit_and_the_checklists(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = wheel.read(entry_points).decode()
    assert "controller/conformance/plugin.py" in names
    assert {f"controller/conformance/suite_{port}.py" for port in KITS} <= names
    assert "[pytest11]" in declared, declared
    assert f"{ENTRY_POINT} = {PLUGIN}" in declared, declared
    shipped = {Path(n).name for n in names if n.endswith(SUFFIX)}
    in_tree = {p.name for package in PACKAGES for p in (ROOT / package).rglob(f"*{SUFFIX}")}
    assert shipped == in_tree


def test_the_installed_kit_plays_own_and_toy_adapters(installed: Installed, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed.python), "-c", "import controller; print(controller.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=installed.project,
    ).stdout.strip()
    assert where.startswith(str(installed.python.parents[1])), where
    conformance = installed.project / "tests" / "conformance"
    selected = " or ".join([*KITS.values(), "risk-"])
    run = run_kit(
        ["sorter", "xray", "images", "risk"],
        [conformance / "own", conformance / "toy"],
        tmp_path,
        python=str(installed.python),
        load_plugin=False,  # the entry point must bring it
        extra=["-k", f"{selected} or toy"],
        cwd=installed.project,
        timeout_s=300,
    )
    failed = [o for o in run.outcomes if o.outcome in ("failed", "error")]
    assert not failed, "\n\n".join(f"{o.kit} {o.rule}: {o.message}" for o in failed)
    assert run.returncode == 0, run.tail()
    expected: dict[tuple[str, str], str] = {}
    for port, kit_id in KITS.items():
        expected |= expected_outcomes({kit_id: kits(port)[kit_id]}, port)
    expected |= expected_outcomes(kits("risk"), "risk")
    toy = {(kit, rule): o for (kit, rule), o in run.by_rule().items() if kit == ""}
    assert toy == {("", rule): "passed" for (_, rule) in expected_outcomes(kits("risk"), "risk")}
    assert {k: o for k, o in run.by_rule().items() if k[0]} == expected
