"""The conformance kit's pytest plugin: ``pytest --cargogate-conformance=sorter``.

Installed with CargoGate under the ``pytest11`` entry point ``cargogate-conformance``, so pytest
loads it in any environment where CargoGate is installed; it does nothing until the option
names a port. Without the entry point, load it by hand: ``-p controller.conformance.plugin``.

``--cargogate-conformance=PORT`` (repeat it, or comma-separate: ``sorter,risk``) adds the
port's suite (``controller.conformance.suite_<port>``) to the run, next to every
``conftest.py`` that defines the port's fixture (``cargogate_sorter``, ``cargogate_xray``,
``cargogate_images``, ``cargogate_risk``), so that fixture, parametrized or not, is the one
its tests get. A fixture defined elsewhere (a plugin, a conftest outside the collected
folders) is served by one copy of the suite at the top of the run. Each test plays one rule;
it carries the marker ``cargogate_conformance`` (select the kit alone with
``-m cargogate_conformance``) and the rule's id as the user property ``cargogate_rule``
(junit XML shows it).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from controller.conformance.rules import PORTS, RULES, rule_of

SUITES: dict[str, str] = {port: f"controller.conformance.suite_{port}" for port in PORTS}
FIXTURES: dict[str, str] = {port: f"cargogate_{port}" for port in PORTS}
MARKER = "cargogate_conformance"
OPTION = "--cargogate-conformance"
COLLECTOR = "cargogate-conformance"

# The suites' assertions explain themselves better when pytest rewrites them; this must be
# said before a suite is imported.
pytest.register_assert_rewrite(*SUITES.values())


@dataclass
class _State:
    ports: tuple[str, ...]
    anchored: set[str] = field(default_factory=set)


_STATE = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cargogate", "CargoGate conformance kit")
    group.addoption(
        OPTION,
        action="append",
        default=[],
        metavar="PORT",
        help=(
            f"run the conformance suite of PORT ({', '.join(PORTS)}; repeat or comma-separate) "
            "against the adapter your fixture cargogate_<PORT> builds (docs/integrators.md)"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(port, rule): a rule of the CargoGate conformance kit"
    )
    config.stash[_STATE] = _State(chosen_ports(config.getoption("cargogate_conformance")))


def chosen_ports(values: list[str]) -> tuple[str, ...]:
    """The ports the option names, in the kit's order; an unknown one is a usage error."""
    named = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(named - set(PORTS))
    if unknown:
        raise pytest.UsageError(
            f"{OPTION}: unknown port(s) {', '.join(unknown)}; the ports: {', '.join(PORTS)}"
        )
    return tuple(port for port in PORTS if port in named)


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.ports:
        return None
    rules = sum(len(RULES[port]) for port in state.ports)
    return f"cargogate conformance: {', '.join(state.ports)} ({rules} rules)"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Beside a collected ``conftest.py`` that defines a chosen port's fixture, that port's
    suite (so the conftest's fixture is the one the suite's tests see)."""
    state = parent.config.stash.get(_STATE, None)
    if state is None or not state.ports or file_path.name != "conftest.py":
        return None
    conftest = parent.config.pluginmanager.get_plugin(str(file_path))
    if not isinstance(conftest, ModuleType):
        return None
    ports = tuple(port for port in state.ports if defines_fixture(conftest, FIXTURES[port]))
    if not ports:
        return None
    state.anchored.update(ports)
    here = parent.nodeid.strip(".")
    nodeid = f"{here}/{COLLECTOR}" if here else COLLECTOR  # reads as a file of that folder
    return Suites.from_parent(parent, name=COLLECTOR, ports=ports, nodeid=nodeid)


def defines_fixture(module: ModuleType, name: str) -> bool:
    """Whether ``module`` defines a fixture called ``name`` (by function name or by
    ``@pytest.fixture(name=...)``)."""
    for attribute, value in vars(module).items():
        marker = getattr(value, "_fixture_function_marker", None)  # pytest 8.4+
        if marker is None:
            marker = getattr(value, "_pytestfixturefunction", None)  # earlier pytest 8
        if marker is None:
            continue
        if (getattr(marker, "name", None) or attribute) == name:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Serve the chosen ports no collected conftest defines (their fixture comes from a plugin
    or a conftest above the collected folders) from the top of the run; mark every kit test
    (before ``-m`` and ``-k`` select)."""
    state = config.stash.get(_STATE, None)
    if state is None or not state.ports:
        return
    loose = tuple(port for port in state.ports if port not in state.anchored)
    if loose:
        suites = Suites.from_parent(session, name=COLLECTOR, ports=loose, nodeid=COLLECTOR)
        items.extend(session.genitems(suites))
    for item in items:
        if not isinstance(item, pytest.Function) or not isinstance(item.parent, SuiteModule):
            continue
        rule = rule_of(item.obj)
        if rule is not None:
            item.add_marker(pytest.mark.cargogate_conformance(port=rule.port, rule=rule.name))
            item.user_properties.append(("cargogate_rule", str(rule)))


class Suites(pytest.Collector):
    """The chosen ports' suites at one place of the collection tree."""

    def __init__(self, *, ports: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ports = ports

    def collect(self) -> list[pytest.Collector]:
        return [
            SuiteModule.from_parent(
                self,
                path=suite_path(port),
                name=port,
                nodeid=f"{self.nodeid}::{port}",
                suite=SUITES[port],
            )
            for port in self.ports
        ]


class SuiteModule(pytest.Module):
    """One port's suite: the kit's module, imported by name (never by path, so the installed
    package is the one that runs), its tests collected whatever the project's
    ``python_functions`` say."""

    def __init__(self, *, suite: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def _getobj(self) -> ModuleType:
        return importlib.import_module(self.suite)

    def funcnamefilter(self, name: str) -> bool:
        return name.startswith("test_")

    def classnamefilter(self, name: str) -> bool:
        return False


def suite_path(port: str) -> Path:
    spec = importlib.util.find_spec(SUITES[port])
    if spec is None or spec.origin is None:
        raise pytest.UsageError(f"the {port} suite ({SUITES[port]}) is not installed")
    return Path(spec.origin)
