"""Runs the conformance kit in a pytest of its own (a subprocess, as an integrator runs it) and
reads what each rule gave from the run's junit XML; and what each rule should give, from the
kit's checklist."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from controller.conformance import checklist
from controller.conformance.harness import Kit
from controller.conformance.rules import RULES

ENTRY_POINT = "cargogate-conformance"
PLUGIN = "controller.conformance.plugin"
EXPECTED = {
    checklist.Status.DONE: "passed",
    checklist.Status.TODO: "xfailed",
    checklist.Status.EXEMPT: "skipped",
}


@dataclass(frozen=True)
class Outcome:
    kit: str
    """The test's parameter id (the kit's id), "" when the fixture is not parametrized."""
    rule: str
    """The rule's id, ``<port>:<name>``."""
    outcome: str
    """passed, failed, error, skipped or xfailed."""
    message: str


@dataclass(frozen=True)
class KitRun:
    outcomes: list[Outcome]
    returncode: int
    output: str

    def by_rule(self) -> dict[tuple[str, str], str]:
        return {(o.kit, o.rule): o.outcome for o in self.outcomes}

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def plugin_installed() -> bool:
    """Whether pytest here loads the plugin by itself (its entry point is installed)."""
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.name == ENTRY_POINT for ep in entry_points(group="pytest11"))


def run_kit(
    ports: Sequence[str],
    paths: Sequence[Path | str],
    workdir: Path,
    *,
    python: str = sys.executable,
    load_plugin: bool | None = None,
    extra: Sequence[str] = (),
    cwd: Path | None = None,
    timeout_s: float = 540,
) -> KitRun:
    """``pytest --cargogate-conformance=<ports> <paths>`` in a subprocess. ``load_plugin``
    passes ``-p`` for the plugin (default: when its entry point is not installed here)."""
    report = workdir / f"kit-{'-'.join(ports)}-{len(list(workdir.glob('kit-*.xml')))}.xml"
    if load_plugin is None:
        load_plugin = not plugin_installed()
    command = [python, "-m", "pytest", "-p", "no:cacheprovider"]
    command += ["-p", PLUGIN] if load_plugin else []
    command += [f"--cargogate-conformance={','.join(ports)}", f"--junitxml={report}", "-rA"]
    command += [*extra, *map(str, paths)]
    done = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    output = done.stdout + done.stderr
    outcomes = read_junit(report) if report.exists() else []
    return KitRun(outcomes, done.returncode, output)


def read_junit(path: Path) -> list[Outcome]:
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        rule = properties.get("cargogate_rule")
        if rule is None:
            continue
        name = case.get("name", "")
        kit = name[name.index("[") + 1 : -1] if name.endswith("]") else ""
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = ("failed" if child.tag == "failure" else "error"), _text(child)
            elif child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfailed" if xfail else "skipped"), _text(child)
        outcomes.append(Outcome(kit, rule, outcome, message))
    return outcomes


def _text(element: ET.Element) -> str:
    return (element.get("message") or "") + "\n" + (element.text or "")


def expected_outcomes(kits: Mapping[str, Kit], port: str) -> dict[tuple[str, str], str]:
    """What every rule should give each kit, by its checklist."""
    expected = {}
    for kit_id, kit in kits.items():
        path = kit.checklist
        for rule in RULES[port]:
            mark = checklist.DONE if path is None else checklist.load(path, port).mark(rule)
            expected[(kit_id, str(rule))] = EXPECTED[mark.status]
    return expected
