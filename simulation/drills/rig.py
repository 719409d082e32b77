"""One drill's world: the emulated PLCs, their belts, the site file and the controller(s).

:class:`Rig` starts one :class:`plc_adapters.emulator.EmulatedPlc` per line of the drill's site
behind a real OPC UA or Modbus TCP server on loopback (port chosen by the OS), writes the risk
manifest of every HAWB the belts will carry (seeded: mostly GREEN, some YELLOW and RED, a few
missing), and writes site files pointing the controller at those PLCs. The drill then plays
bursts on the :class:`simulation.drills.load.LinePlant` of each line, injects its fault, lets
the journal settle and checks the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.app.site import SiteConfig
from controller.core.clock import MonotonicClock
from controller.core.lifecycle import ParcelState
from controller.store.openset import parcel_change
from controller.store.read import read_entries
from plc_adapters.emulator import EmulatedPlc, PlcTiming
from plc_adapters.layout import Layout, header
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage
from simulation.drills.controllers import ControllerProcess, InProcessController
from simulation.drills.hosts import OpcUaHosts
from simulation.drills.load import LinePlant
from simulation.drills.outcome import (
    OPEN_REASONS,
    AlarmSpec,
    Findings,
    Ledger,
    check,
    read_journals,
)
from simulation.drills.site import NAMESPACE, DrillLine, drill_lines, site_document, write_site
from simulation.drills.xray import DrillXray

PLAN_PER_LINE = 400
"""HAWBs in each line's risk manifest (more than any drill inducts)."""
SETTLE_LIMIT_S = 15.0
"""How long the journal may take to show every parcel at rest once the belts are empty."""
QUIET_S = 2.0
"""A journal that has not grown for this long, with parcels still moving, has settled too."""

_RESTING = frozenset(OPEN_REASONS)
_RISK = (("GREEN", 0.1, 0.80), ("YELLOW", 0.45, 0.08), ("RED", 0.9, 0.07))
"""(channel, score, share) of the manifest; the remaining 5 % of HAWBs have no result."""


def _raised(entries: list[dict[str, Any]], open_ok: Sequence[str]) -> list[str]:
    """The alarm sources raised at the end of ``entries``, but those matching ``open_ok``."""
    active: dict[str, bool] = {}
    for row in entries:
        source = (row["data"] or {}).get("source") if row["kind"] == "alarm" else None
        if source:
            active[source] = row["state_to"] == "active"
    return [
        source
        for source, on in active.items()
        if on and not any(fnmatch.fnmatchcase(source, pattern) for pattern in open_ok)
    ]


class Rig:
    """Use as ``async with Rig(...) as rig``: the PLCs serve until the block ends.

    ``base`` is the site file's configuration (None: the built-in two-line site);
    ``hosts`` shares OPC UA servers with the other drills of the run (None: the rig's own);
    ``first_counter`` presets the PLCs' ring counters before anything connects.
    """

    def __init__(
        self,
        workdir: Path,
        seed: int,
        base: SiteConfig | None = None,
        *,
        hosts: OpcUaHosts | None = None,
        first_counter: int = 0,
    ) -> None:
        self.workdir = workdir
        self.seed = seed
        self.base = base
        self.site_id = base.site.id if base is not None else "DRILL"
        self.policy: Mapping[str, Any] = (
            base.policy.model_dump(mode="json") if base is not None else {}
        )
        self.lines: list[DrillLine] = drill_lines(base)
        self.clock = MonotonicClock()
        self.ledger = Ledger()
        self.plcs: dict[str, EmulatedPlc] = {}
        self.plants: dict[str, LinePlant] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.first_counter = first_counter
        self.hawbs = {
            drill.id: [f"DR{i + 1}{n:06d}" for n in range(PLAN_PER_LINE)]
            for i, drill in enumerate(self.lines)
        }
        self.feeds = workdir / "feeds"
        self.shared = hosts
        self.manifest: dict[str, str] = {}
        """The manifest's CSV row of each HAWB that has a risk result."""
        self._hosts: list[OpcUaHost] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Rig:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        try:
            for i, drill in enumerate(self.lines):
                await self._start_plc(drill, random.Random(f"{self.seed}/{drill.id}/{i}"))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for plant in self.plants.values():
            plant.cancel()
        for plc in self.plcs.values():
            with contextlib.suppress(Exception):
                await plc.aclose(stop_server=self.shared is None)
        for host in self._hosts:
            with contextlib.suppress(Exception):
                await host.stop()

    async def _start_plc(self, drill: DrillLine, rng: random.Random) -> None:
        link = drill.sorter.get("link", {})
        layout = Layout(int(link.get("ring_size", 64)), int(link.get("lane_slots", 32)))
        image: OpcUaServerImage | ModbusServerImage
        endpoint: dict[str, Any]
        if drill.protocol == "opcua":
            namespace = str(drill.sorter.get("namespace_uri", NAMESPACE))
            if self.shared is not None:  # the lines of every drill of the run side by side
                host = self.shared.host(namespace)
                name = f"{drill.id}-{self.workdir.name}-{secrets.token_hex(3)}"
            else:
                host = OpcUaHost("127.0.0.1", 0, namespace)
                self._hosts.append(host)
                name = str(drill.sorter.get("object_name") or drill.id)
            image = OpcUaServerImage(host, name, layout)
            endpoint = {"type": "opcua", "namespace_uri": namespace, "object_name": name}
        else:
            unit = int(drill.sorter.get("unit_id", 1))
            first = int(drill.sorter.get("register_base", 0))
            image = ModbusServerImage("127.0.0.1", 0, unit, layout, first)
            endpoint = {"type": "modbus", "host": "127.0.0.1"}
        timing = PlcTiming(
            heartbeat_period_s=float(link.get("heartbeat_period_s", 0.25)),
            heartbeat_timeout_s=float(link.get("heartbeat_timeout_s", 2.0)),
        )
        plc = EmulatedPlc(drill.line, layout, image, self.clock, timing)
        if self.first_counter:
            plc.preset_counters(self.first_counter)
        await plc.start()
        self.plcs[drill.id] = plc
        self.plants[drill.id] = LinePlant(drill.line, plc, self.ledger, self.hawbs[drill.id], rng)
        if isinstance(image, ModbusServerImage):  # the port the OS chose, known once serving
            endpoint["port"] = image.port
        else:
            endpoint["endpoint"] = image.endpoint
        self.endpoints[drill.id] = endpoint

    def _write_manifest(self) -> None:
        """The risk results of every planned HAWB (seeded), as the file feed reads them."""
        self.feeds.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{self.seed}/risk")
        for hawbs in self.hawbs.values():
            for hawb in hawbs:
                draw = rng.random()
                for channel, score, share in _RISK:
                    if draw < share:
                        self.manifest[hawb] = f"{hawb},{channel},{score},apparel,DR001"
                        break
                    draw -= share
        rows = ["hawb,channel,score,declared_goods,flight", *self.manifest.values()]
        (self.feeds / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    # --- the site and its controllers --------------------------------------------------------

    def site_file(self, name: str = "controller", **extra: Any) -> Path:
        """Write the drill's site file for a controller called ``name`` (its journal is
        ``<name>.sqlite``); ``extra`` adds or replaces top-level sections."""
        sections: dict[str, Any] = {
            "risk_feeds": [{"type": "file", "path": str(self.feeds), "poll_s": 1.0}],
            "xray": DrillXray(type="drill", seed=self.seed).model_dump(mode="json"),
            **extra,
        }
        document = site_document(
            self.site_id,
            self.lines,
            self.endpoints,
            self.workdir / f"{name}.sqlite",
            self.policy,
            sections,
        )
        return write_site(self.workdir / f"{name}.yaml", document)

    def in_process(self, name: str = "controller", **extra: Any) -> InProcessController:
        return InProcessController(self.site_file(name, **extra))

    def process(self, name: str = "controller", **extra: Any) -> ControllerProcess:
        return ControllerProcess(self.site_file(name, **extra), self.workdir / f"{name}.log")

    # --- playing -------------------------------------------------------------------------

    async def burst(self, count: int, per_s: float) -> None:
        """``count`` parcels on every line at ``per_s`` each; return once the belts are empty."""
        await asyncio.gather(*(plant.burst(count, per_s) for plant in self.plants.values()))

    async def controller_beats(self, limit_s: float = 10.0) -> None:
        """Return once every PLC has seen the controller's heartbeat change twice."""
        seen = {line: self._beat(plc) for line, plc in self.plcs.items()}
        changes = dict.fromkeys(self.plcs, 0)
        deadline = time.monotonic() + limit_s
        while min(changes.values()) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("no controller heartbeat at the PLCs")
            await asyncio.sleep(0.02)
            for line, plc in self.plcs.items():
                beat = self._beat(plc)
                if beat != seen[line]:
                    seen[line], changes[line] = beat, changes[line] + 1

    @staticmethod
    def _beat(plc: EmulatedPlc) -> object:
        return plc.mem[header("ctl_heartbeat")]

    async def settle(
        self,
        journal: Path,
        *,
        open_ok: Sequence[str] = (),
        quiet_s: float | None = QUIET_S,
        limit_s: float = SETTLE_LIMIT_S,
    ) -> None:
        """Wait until the journal shows every parcel of the ledger at rest (closed, or waiting
        at inspection) and every alarm cleared but those matching ``open_ok``; or until it has
        not grown for ``quiet_s`` (None: no such shortcut); or until ``limit_s`` has passed."""
        deadline = time.monotonic() + limit_s
        rows, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            entries = await asyncio.to_thread(read_entries, journal, self.site_id)
            if len(entries) != rows:
                rows, quiet_since = len(entries), time.monotonic()
            elif quiet_s is not None and time.monotonic() - quiet_since > quiet_s:
                return
            if self._all_rest(entries) and not _raised(entries, open_ok):
                return
            await asyncio.sleep(0.2)

    def _all_rest(self, entries: list[dict[str, Any]]) -> bool:
        last: dict[tuple[str, int, str], ParcelState] = {}
        for row in entries:
            state = parcel_change(row["kind"], row["state_to"], row["data"])
            if state is not None:
                last[(row["line"], row["tracking_id"], row["hawb"])] = state
        for parcel in self.ledger.parcels:
            state = last.get((parcel.line, parcel.tracking_id, parcel.barcode))
            if state is None or not (state in _RESTING or state.terminal):
                return False
        return True

    def findings(
        self, journals: Mapping[str, Path], alarms: AlarmSpec | Mapping[str, AlarmSpec]
    ) -> Findings:
        """The outcome of the drill so far, from ``journals`` (name → file)."""
        return check(self.ledger, read_journals(journals, self.site_id), alarms)
