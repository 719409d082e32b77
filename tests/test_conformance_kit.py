"""The conformance kit itself: its checklist files, its rules, and its pytest plugin (which
suites it collects, where their fixture comes from, what a checklist's todo and exempt do, and
what a harness that lacks a control gets told). Plugin runs are pytest subprocesses over
copies of the toy pipe feed (a real adapter) in temporary folders."""

from __future__ import annotations

import importlib
import shutil
import textwrap
from pathlib import Path

import pytest

from controller.conformance import checklist
from controller.conformance.plugin import SUITES, chosen_ports
from controller.conformance.rules import PORTS, RULES, rule_of
from tests.conformance.runs import run_kit

TOY = Path(__file__).parent / "conformance" / "toy"
RISK_RULES = [str(rule) for rule in RULES["risk"]]


def write_checklist(path: Path, port: str, body: str) -> Path:
    path.write_text(f'port = "{port}"\nadapter = "toy"\n\n[rules]\n' + textwrap.dedent(body))
    return path


def all_done(port: str, **overrides: str) -> str:
    """Every rule of ``port`` done, but those named (``no_blocking`` for no-blocking)."""
    done = '"done"'
    lines = [f"{r.name} = {overrides.get(r.name.replace('-', '_'), done)}" for r in RULES[port]]
    return "\n".join(lines) + "\n"


def toy_copy(tmp_path: Path, checklist_body: str | None = None) -> Path:
    """The toy pipe feed and its fixture in a folder of their own, with another checklist."""
    folder = tmp_path / "toy"
    shutil.copytree(TOY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    if checklist_body is not None:
        write_checklist(folder / "risk-pipe.conformance.toml", "risk", checklist_body)
    return folder


# --- checklists ------------------------------------------------------------------------------


def test_a_checklist_marks_each_rule(tmp_path: Path) -> None:
    body = all_done(
        "risk",
        outage='{ status = "exempt", reason = "a feed that cannot be unreachable" }',
        no_blocking='{ status = "todo", reason = "parses on the loop for now" }',
    )
    loaded = checklist.load(write_checklist(tmp_path / "c.toml", "risk", body), "risk")
    marks = {name: mark.status for name, mark in loaded.marks.items()}
    assert marks == {rule.name: marks[rule.name] for rule in RULES["risk"]}
    assert marks["outage"] is checklist.Status.EXEMPT
    assert loaded.marks["outage"].reason == "a feed that cannot be unreachable"
    assert marks["no-blocking"] is checklist.Status.TODO
    assert marks["known-hawb"] is checklist.Status.DONE
    assert loaded.adapter == "toy"


def test_a_checklist_with_mistakes_names_every_one(tmp_path: Path) -> None:
    body = all_done("risk", outage='{ status = "exempt" }', bad_rows='"maybe"')
    body = body.replace('new-only = "done"\n', "") + 'speed = "done"\n'
    path = write_checklist(tmp_path / "c.toml", "risk", body)
    with pytest.raises(checklist.ChecklistError) as error:
        checklist.load(path, "risk")
    message = str(error.value)
    assert str(path) in message
    assert "rule 'new-only' is not listed" in message
    assert "unknown rule 'speed'" in message
    assert "rule 'outage': status = 'exempt' needs a reason" in message
    assert "rule 'bad-rows': 'maybe' is neither \"done\" nor a table" in message


def test_a_checklist_of_another_port_or_no_toml_is_refused(tmp_path: Path) -> None:
    path = write_checklist(tmp_path / "c.toml", "sorter", all_done("sorter"))
    with pytest.raises(checklist.ChecklistError, match="port = 'sorter', but this is the risk"):
        checklist.load(path, "risk")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = risk\n")
    with pytest.raises(checklist.ChecklistError, match="not TOML"):
        checklist.load(broken, "risk")


def test_every_checklist_in_the_repository_is_valid() -> None:
    root = Path(__file__).parents[1]
    found = sorted(
        p
        for folder in ("controller", "plc_adapters", "simulation", "tests")
        for p in (root / folder).rglob(f"*{checklist.SUFFIX}")
    )
    assert len(found) >= 13
    for path in found:
        port = path.name.split("-", 1)[0]
        loaded = checklist.load(path, port)
        assert path.name == f"{port}-{loaded.adapter}{checklist.SUFFIX}"


# --- rules and suites ------------------------------------------------------------------------


@pytest.mark.parametrize("port", PORTS)
def test_each_rule_is_played_by_exactly_one_test_of_its_suite(port: str) -> None:
    suite = importlib.import_module(SUITES[port])
    played = [rule_of(value) for name, value in vars(suite).items() if name.startswith("test_")]
    assert sorted(map(str, played)) == sorted(map(str, RULES[port]))
    names = [rule.name for rule in RULES[port]]
    assert len(set(names)) == len(names)


def test_the_option_takes_ports_repeated_or_comma_separated() -> None:
    assert chosen_ports(["risk,sorter", "risk"]) == ("sorter", "risk")
    assert chosen_ports([]) == ()
    with pytest.raises(pytest.UsageError, match="unknown port\\(s\\) scanner; the ports"):
        chosen_ports(["sorter,scanner"])


# --- the plugin ------------------------------------------------------------------------------


def test_an_unknown_port_is_a_usage_error(tmp_path: Path) -> None:
    run = run_kit(["scanner"], [toy_copy(tmp_path)], tmp_path)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert "unknown port(s) scanner" in run.output


def test_the_suite_runs_beside_the_conftest_that_defines_the_fixture(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    toy = toy_copy(project)
    (project / "test_other.py").write_text("def test_other() -> None:\n    pass\n")
    # Run from the project, as an integrator does: test ids are relative to it (from another
    # folder pytest takes the common ancestor of both as its root, unless that is "/").
    run = run_kit(["risk"], [project], tmp_path, extra=["--collect-only", "-q"], cwd=project)
    assert run.returncode == 0, run.tail()
    collected = [line for line in run.output.splitlines() if "::test_" in line]
    kit_tests = [line for line in collected if "cargogate-conformance::risk::" in line]
    assert len(kit_tests) == len(RULES["risk"])
    here = f"{toy.relative_to(project)}/cargogate-conformance::risk::test_"
    assert all(line.startswith(here) for line in kit_tests), kit_tests
    assert "test_other.py::test_other" in run.output
    selected = run_kit(["risk"], [project], tmp_path, extra=["-m", "cargogate_conformance"])
    assert selected.returncode == 0, selected.tail()
    assert "1 deselected" in selected.output
    assert sorted(o.rule for o in selected.outcomes) == sorted(RISK_RULES)
    assert {o.outcome for o in selected.outcomes} == {"passed"}


def test_without_the_option_the_plugin_adds_nothing(tmp_path: Path) -> None:
    run = run_kit([], [toy_copy(tmp_path)], tmp_path, extra=["--collect-only", "-q"])
    assert run.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, run.tail()


def test_a_fixture_from_a_plugin_module_is_served_too(tmp_path: Path) -> None:
    toy = toy_copy(tmp_path)
    (toy / "conftest.py").rename(toy / "toy_fixture.py")
    run = run_kit(["risk"], [toy], tmp_path, extra=["-p", "toy_fixture"], cwd=toy)
    assert run.returncode == 0, run.tail()
    assert sorted(o.rule for o in run.outcomes) == sorted(RISK_RULES)
    assert {o.outcome for o in run.outcomes} == {"passed"}


def test_without_the_fixture_the_kit_says_which_one_is_missing(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    run = run_kit(["xray"], [folder], tmp_path)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED
    assert [o.outcome for o in run.outcomes] == ["error"] * len(RULES["xray"])
    assert "fixture 'cargogate_xray' not found" in run.output


def test_exempt_skips_todo_expects_failure_and_a_passing_todo_fails(tmp_path: Path) -> None:
    body = all_done(
        "risk",
        outage='{ status = "exempt", reason = "the share never goes away" }',
        new_only='{ status = "todo", reason = "it hands out old files again" }',
    )
    run = run_kit(["risk"], [toy_copy(tmp_path, body)], tmp_path)
    outcomes = {o.rule: o for o in run.outcomes}
    assert outcomes["risk:outage"].outcome == "skipped"
    assert "exempt: the share never goes away" in outcomes["risk:outage"].message
    assert outcomes["risk:new-only"].outcome == "failed"
    assert "passes, but" in outcomes["risk:new-only"].message
    assert "marks it todo: mark it done" in outcomes["risk:new-only"].message
    assert {
        outcomes[r].outcome for r in RISK_RULES if r not in ("risk:outage", "risk:new-only")
    } == {"passed"}


def test_a_harness_without_a_control_is_told_to_add_it_or_exempt_the_rule(
    tmp_path: Path,
) -> None:
    toy = toy_copy(tmp_path)
    conftest = toy / "conftest.py"
    source = conftest.read_text()
    assert "    async def outage(" in source
    conftest.write_text(source.replace("    async def outage(", "    async def _outage("))
    run = run_kit(["risk"], [toy], tmp_path)
    outage = next(o for o in run.outcomes if o.rule == "risk:outage")
    assert outage.outcome == "failed"
    assert "risk:outage needs the harness to provide OutageControls" in outage.message
    assert "PipeFeedHarness lacks outage" in outage.message
    assert "or mark the rule exempt" in outage.message
    todo = all_done("risk", outage='{ status = "todo", reason = "no way to unmount yet" }')
    write_checklist(toy / "risk-pipe.conformance.toml", "risk", todo)
    run = run_kit(["risk"], [toy], tmp_path)
    outage = next(o for o in run.outcomes if o.rule == "risk:outage")
    assert outage.outcome == "xfailed"
    assert "todo: no way to unmount yet" in outage.message
    assert run.returncode == 0, run.tail()


def test_a_broken_checklist_fails_every_rule_with_its_problems(tmp_path: Path) -> None:
    body = all_done("risk").replace('outage = "done"\n', "")
    run = run_kit(["risk"], [toy_copy(tmp_path, body)], tmp_path)
    assert {o.outcome for o in run.outcomes} == {"failed"}
    assert all("rule 'outage' is not listed" in o.message for o in run.outcomes)


def test_a_feed_that_parses_on_the_event_loop_fails_no_blocking(tmp_path: Path) -> None:
    toy = toy_copy(tmp_path)
    feed = toy / "pipe_feed.py"
    threaded = "return await asyncio.to_thread(self._fetch)"
    assert threaded in feed.read_text()
    # Parsing on the loop, and slow at it: a quiet machine parses the kit's 50,000 records
    # in less than the lag the rule allows, so the sleep stands for a larger manifest.
    on_loop = "time.sleep(0.6)\n        return self._fetch()"
    text = feed.read_text().replace(threaded, on_loop)
    feed.write_text(text.replace("import asyncio\n", "import asyncio\nimport time\n", 1))
    run = run_kit(["risk"], [toy], tmp_path)
    outcomes = {o.rule: o for o in run.outcomes}
    assert outcomes["risk:no-blocking"].outcome == "failed"
    assert "the event loop was blocked for" in outcomes["risk:no-blocking"].message
    assert {o.outcome for r, o in outcomes.items() if r != "risk:no-blocking"} == {"passed"}


CARELESS_XRAY = '''
import asyncio
import time
import zlib
from contextlib import asynccontextmanager

import pytest

from controller.conformance.harness import Parcel, XrayCase
from controller.core.domain import XrayResult, XrayStatus


class CarelessXray:
    """Scores by HAWB, but swallows its cancellation, raises on an unreadable image, calls a
    missing image ok and sleeps on the event loop for a heavy one."""

    async def analyse(self, line, tracking_id, hawb):
        if hawb.startswith("slow"):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return XrayResult.fault(XrayStatus.LATE, "gave up")
        if hawb.startswith("unreadable"):
            raise ValueError("cannot read the image")
        if hawb.startswith("no_image"):
            return XrayResult(XrayStatus.OK, {"firearm": 0.0}, "careless-1")
        if hawb.startswith("heavy"):
            time.sleep(0.4)
        return XrayResult(XrayStatus.OK, {"firearm": zlib.crc32(hawb.encode()) % 97 / 96}, "c-1")


class Harness:
    xray = CarelessXray()

    async def parcel(self, case, index=0):
        return Parcel("L1", index, f"{case.value}-{index}")


class Kit:
    checklist = None

    @asynccontextmanager
    async def open(self, ctx):
        yield Harness()


@pytest.fixture
def cargogate_xray():
    return Kit()
'''


def test_the_xray_suite_catches_a_careless_detector(tmp_path: Path) -> None:
    folder = tmp_path / "careless"
    folder.mkdir()
    (folder / "conftest.py").write_text(CARELESS_XRAY)
    run = run_kit(["xray"], [folder], tmp_path)
    outcomes = {o.rule: o for o in run.outcomes}
    assert {r: o.outcome for r, o in outcomes.items()} == {
        "xray:scores": "passed",
        "xray:bad-image": "failed",
        "xray:missing-image": "failed",
        "xray:cancel-at-deadline": "failed",
        "xray:concurrent-answers": "passed",
        "xray:no-blocking": "failed",
    }
    assert "ValueError: cannot read the image" in outcomes["xray:bad-image"].message
    assert "a parcel without an image gave" in outcomes["xray:missing-image"].message
    assert "swallowed its cancellation" in outcomes["xray:cancel-at-deadline"].message
    assert "the event loop was blocked for" in outcomes["xray:no-blocking"].message
