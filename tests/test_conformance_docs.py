"""docs/integrators.md is tested: its toy adapter's code is the toy the kit plays (block by
block), the empty feed it starts from fails every rule, the finished one passes them all, and
the page names every rule of every port."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from controller.conformance.rules import PORTS, RULES
from tests.conformance.runs import run_kit

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "integrators.md"
TOY = ROOT / "tests" / "conformance" / "toy"
BLOCK = re.compile(r"<!-- (file|skeleton): (\S+) -->\n```[a-z]*\n(.*?)\n```", re.DOTALL)


def blocks(kind: str) -> dict[str, str]:
    """The doc's code blocks marked ``<!-- kind: path -->``, by path."""
    found = {path: code + "\n" for k, path, code in BLOCK.findall(DOC.read_text()) if k == kind}
    assert found, f"no {kind} blocks in {DOC}"
    return found


def test_the_docs_quote_the_toy_exactly() -> None:
    quoted = blocks("file")
    assert set(quoted) == {f"tests/conformance/toy/{p.name}" for p in TOY.iterdir() if p.is_file()}
    for path, code in quoted.items():
        assert code == (ROOT / path).read_text(), f"{DOC.name} quotes {path} out of date"


def test_the_docs_name_every_rule() -> None:
    text = DOC.read_text()
    for port in PORTS:
        for rule in RULES[port]:
            assert f"| `{rule.name}` |" in text, f"{DOC.name} lacks the rule {rule}"


def test_the_empty_feed_fails_every_rule_and_the_finished_one_passes(tmp_path: Path) -> None:
    ((path, skeleton),) = blocks("skeleton").items()
    empty = tmp_path / "empty"
    shutil.copytree(TOY, empty, ignore=shutil.ignore_patterns("__pycache__"))
    (empty / Path(path).name).write_text(skeleton)
    run = run_kit(["risk"], [empty], tmp_path)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.tail()
    assert sorted(o.rule for o in run.outcomes) == sorted(map(str, RULES["risk"]))
    assert {o.outcome for o in run.outcomes} == {"failed"}, run.tail()
    finished = run_kit(["risk"], [TOY], tmp_path)
    assert finished.returncode == 0, finished.tail()
    assert sorted(o.rule for o in finished.outcomes) == sorted(map(str, RULES["risk"]))
    assert {o.outcome for o in finished.outcomes} == {"passed"}, finished.tail()
