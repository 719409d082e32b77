"""The checklist file an adapter carries: each rule of its port's suite, done, todo or exempt.

A checklist is a TOML file named ``<port>-<type>.conformance.toml`` beside the adapter's code
(``<type>`` is the adapter's ``type`` key in the site file)::

    # The conformance checklist of the OPC UA sorter adapter (docs/integrators.md).
    port = "sorter"
    adapter = "opcua"

    [rules]
    burst = "done"
    mailbox-full = { status = "todo", reason = "the PLC program has no mailbox flag yet" }
    controller-heartbeat = { status = "exempt", reason = "no wire, so no heartbeat to lose" }

Every rule of the port (:data:`controller.conformance.rules.RULES`) is listed exactly once:

* ``done``: the adapter meets it; the rule must pass.
* ``todo``: not met yet; the rule runs and is expected to fail (reported as xfail), and
  passing is an error until the checklist says ``done``, so the list never lags the code.
* ``exempt``: does not apply to this adapter; the rule is skipped with the reason.

``todo`` and ``exempt`` need a ``reason``. A kit without a checklist has every rule done.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from controller.conformance.rules import RULES, Rule

SUFFIX = ".conformance.toml"


class Status(StrEnum):
    DONE = "done"
    TODO = "todo"
    EXEMPT = "exempt"


@dataclass(frozen=True, slots=True)
class Mark:
    """What a checklist says of one rule."""

    status: Status
    reason: str = ""


DONE = Mark(Status.DONE)


class ChecklistError(ValueError):
    """A checklist file the kit cannot use; the message names the file and every fix."""


@dataclass(frozen=True)
class Checklist:
    path: Path
    port: str
    adapter: str
    marks: Mapping[str, Mark]

    def mark(self, rule: Rule) -> Mark:
        return self.marks[rule.name]


def load(path: Path, port: str) -> Checklist:
    """The checklist at ``path`` for a ``port`` adapter; raises :class:`ChecklistError` listing
    every problem (a rule missing or unknown, a status without a reason, another port)."""
    path = Path(path).resolve()
    try:
        changed = path.stat().st_mtime_ns
    except OSError:
        changed = 0  # reported by the load
    return _load(path, port, changed)


@functools.cache
def _load(path: Path, port: str, changed: int) -> Checklist:
    """The checklist as of its modification time ``changed`` (loaded once per version)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChecklistError(f"checklist {path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ChecklistError(f"checklist {path}: not TOML: {exc}") from None
    problems: list[str] = []
    if data.get("port") != port:
        problems.append(
            f'port = {data.get("port")!r}, but this is the {port} suite: port = "{port}"'
        )
    adapter = data.get("adapter")
    if not isinstance(adapter, str) or not adapter:
        problems.append('no adapter = "<type>" (the adapter\'s type key in the site file)')
    problems += [f"unknown key {key!r}" for key in data if key not in ("port", "adapter", "rules")]
    listed = data.get("rules")
    if not isinstance(listed, dict):
        problems.append("no [rules] table")
        listed = {}
    rules = RULES.get(port, ())
    known = {rule.name for rule in rules}
    marks: dict[str, Mark] = {}
    for rule in rules:
        if rule.name not in listed:
            problems.append(
                f'rule {rule.name!r} is not listed: {rule.name} = "done", or '
                f'{{ status = "todo" or "exempt", reason = "..." }} ({rule.title})'
            )
            continue
        mark = _mark(listed[rule.name])
        if isinstance(mark, str):
            problems.append(f"rule {rule.name!r}: {mark}")
        else:
            marks[rule.name] = mark
    for name in listed:
        if name not in known:
            problems.append(f"unknown rule {name!r}; the {port} rules: {', '.join(sorted(known))}")
    if problems:
        raise ChecklistError(f"checklist {path}:\n  " + "\n  ".join(problems))
    return Checklist(path, port, str(adapter), marks)


def _mark(value: object) -> Mark | str:
    """The mark ``value`` gives, or what is wrong with it."""
    if value == Status.DONE:
        return DONE
    if not isinstance(value, dict):
        return f'{value!r} is neither "done" nor a table {{ status = ..., reason = ... }}'
    unknown = sorted(set(value) - {"status", "reason"})
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))}; expected status and reason"
    try:
        status = Status(str(value.get("status")))
    except ValueError:
        return f"status = {value.get('status')!r}, expected done, todo or exempt"
    reason = value.get("reason", "")
    if not isinstance(reason, str):
        return f"reason = {reason!r} is not text"
    if status is not Status.DONE and not reason.strip():
        return f"status = {status.value!r} needs a reason (why it is {status.value})"
    return Mark(status, reason.strip())
