"""``cargogate plc-emulator``: emulated sorter PLCs for every line of a site file.

Each line whose ``sorter`` block has the chosen protocol gets an :class:`EmulatedPlc` behind a
real server at the endpoint of that block, so ``cargogate run`` with the same site file
connects to it as it would to the floor's PLCs. Optionally the emulator also moves parcels
(requests at the scan, divert at the divert point with the lane the PLC logic chooses), which
is what an integrator needs to watch replies, defaults and alarms before touching hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from controller.app.site import SiteConfig, load_config
from controller.app.terminal import console, errors, print_problems, setup_logging
from controller.core.clock import Clock, MonotonicClock
from controller.core.domain import DivertStatus
from controller.core.settings import ConfigError, Line
from plc_adapters import rulebook
from plc_adapters.cert_pins import CertificateFileError, trust_list
from plc_adapters.certs import make_certificate
from plc_adapters.emulator import EmulatedPlc, PlcTiming
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage
from plc_adapters.opcua_wire import Credentials, Security
from plc_adapters.settings import (
    ModbusSorter,
    OpcUaSorter,
    SettingsError,
    host_port,
)

log = logging.getLogger(__name__)

EMULATOR_URI = "urn:cargogate:emulated-plc"


class Protocol(StrEnum):
    OPCUA = "opcua"
    MODBUS = "modbus"


def load_emulator_site(path: Path) -> tuple[SiteConfig, dict[str, OpcUaSorter | ModbusSorter]]:
    """The site file and each wire line's sorter settings; in-process lines are skipped."""
    site = load_config(path)
    sorters = {
        line.id: line.sorter
        for line in site.lines
        if isinstance(line.sorter, OpcUaSorter | ModbusSorter)
    }
    return site, sorters


@dataclass
class LineFlow:
    """Counters of the parcels the emulator moved on one line."""

    inducted: int = 0
    diverted: int = 0
    defaulted: int = 0
    lane_full: int = 0


class Emulator:
    """Every emulated PLC of a site for one protocol; ``run`` serves until cancelled."""

    def __init__(
        self,
        site: SiteConfig,
        sorters: dict[str, OpcUaSorter | ModbusSorter],
        protocol: Protocol,
        clock: Clock,
        pki: Path | None = None,
        host_override: str | None = None,
        trust: tuple[Path, ...] = (),
    ) -> None:
        self.site = site
        self.clock = clock
        self.plcs: dict[str, EmulatedPlc] = {}
        self.flows: dict[str, LineFlow] = {}
        hosts: dict[tuple[str, int], OpcUaHost] = {}
        for line in site.lines:
            settings = sorters.get(line.id)
            if settings is None or settings.type != protocol.value:
                continue
            layout = settings.link.layout()
            image: OpcUaServerImage | ModbusServerImage
            if isinstance(settings, OpcUaSorter):
                host, port = host_port(settings.endpoint)
                host = host_override or host
                shared = hosts.get((host, port))
                if shared is None:
                    shared = hosts[(host, port)] = OpcUaHost(
                        host,
                        port,
                        settings.namespace_uri,
                        security=_server_security(settings, pki, sorters, trust),
                        credentials=_server_credentials(settings),
                    )
                image = OpcUaServerImage(shared, settings.object_name or line.id, layout)
            else:
                image = ModbusServerImage(
                    host_override or settings.host,
                    settings.port,
                    settings.unit_id,
                    layout,
                    settings.register_base,
                )
            timing = PlcTiming(
                heartbeat_period_s=settings.link.heartbeat_period_s,
                heartbeat_timeout_s=settings.link.heartbeat_timeout_s,
            )
            self.plcs[line.id] = EmulatedPlc(line, layout, image, clock, timing)
            self.flows[line.id] = LineFlow()

    async def run(self, parcels_per_h: float, seed: int) -> None:
        """Serve every line; move ``parcels_per_h`` parcels per hour per line (0: serve only)."""
        async with contextlib.AsyncExitStack() as stack:
            for plc in self.plcs.values():
                await stack.enter_async_context(plc)
            async with asyncio.TaskGroup() as group:
                for i, line in enumerate(self.site.lines):
                    if line.id in self.plcs and parcels_per_h > 0:
                        rng = random.Random(seed + i)
                        group.create_task(self._induct(line, parcels_per_h, rng))
                await asyncio.Event().wait()

    async def _induct(self, line: Line, per_h: float, rng: random.Random) -> None:
        parcels: set[asyncio.Task[None]] = set()
        next_at = self.clock.now()
        while True:
            next_at += rng.expovariate(per_h / 3600)
            await self.clock.sleep_until(next_at)
            task = asyncio.create_task(self.carry(line, rng))
            parcels.add(task)
            task.add_done_callback(parcels.discard)

    async def carry(self, line: Line, rng: random.Random) -> None:
        """Move one new parcel from the scan to its divert, and round the loop again for as
        long as the PLC recirculates it (:func:`plc_adapters.rulebook.recirculates`).

        The belt keeps no lap count of its own: the PLC's lap limit
        (:func:`plc_adapters.rulebook.lap_limit_passed`, applied by
        :meth:`EmulatedPlc.lane_for`) ends the trip at the default lane, as on the floor.
        """
        plc, flow = self.plcs[line.id], self.flows[line.id]
        tracking_id = rng.randrange(1, 2**32)
        barcode = f"CG{rng.randrange(10**9):09d}"
        flow.inducted += 1
        while True:
            scanned = self.clock.now()
            plc.request(tracking_id, barcode, scanned)
            await self.clock.sleep_until(scanned + line.belt.scan_to_divert_m / line.belt.speed_m_s)
            lane, status = plc.lane_for(tracking_id)
            plc.confirm(tracking_id, lane, status)
            if not rulebook.recirculates(status):
                break
            flow.lane_full += 1  # the emulator draws no missed diverts: only a full lane
            await self.clock.sleep_until(self.clock.now() + line.belt.loop_s)
        if status is DivertStatus.DIVERTED:
            flow.diverted += 1
        elif status is DivertStatus.DEFAULTED:
            flow.defaulted += 1

    def table(self) -> Table:
        table = Table(title="emulated sorter PLCs", title_justify="left")
        for column in (
            "line", "endpoint", "controller", "requests", "replies", "late", "invalid",
            "diverted", "defaulted", "backlog",
        ):  # fmt: skip
            table.add_column(column)
        for line_id, plc in self.plcs.items():
            flow = self.flows[line_id]
            owner = plc.owner_id
            if not owner:
                controller = "[yellow]none yet: safe state[/yellow]"
            elif plc.safe_state:
                controller = f"[red]{owner} lost: safe state[/red]"
            else:
                controller = f"[green]{owner} alive[/green]"
            if plc.claims_refused:
                controller += f" [red]({plc.claims_refused} claims refused)[/red]"
            table.add_row(
                line_id,
                plc.image.endpoint,
                controller,
                str(flow.inducted),
                str(plc.replies_received),
                str(plc.replies_late),
                str(plc.replies_invalid),
                str(flow.diverted),
                str(flow.defaulted),
                f"{plc.backlog}{' FULL' if plc.mailbox_full else ''}",
            )
        return table


def _server_security(
    settings: OpcUaSorter,
    pki: Path | None,
    sorters: dict[str, OpcUaSorter | ModbusSorter],
    trust: tuple[Path, ...],
) -> Security | None:
    """The emulated PLC's certificate from ``pki`` and its trust list: the controller
    certificates the site file names (``security.certificate`` of its OPC UA lines, the
    emulator's own clients) and the ``--trust`` files or folders."""
    if settings.security is None:
        return None
    if pki is None:
        raise SettingsError(
            "security: the line asks for Basic256Sha256; give --pki DIR so the emulator has a "
            "server certificate (DIR/plc.der, DIR/plc-key.pem; made there if missing)"
        )
    certificate, key = emulator_certificate(pki)
    named = [
        s.security.certificate
        for s in sorters.values()
        if isinstance(s, OpcUaSorter) and s.security is not None
    ]
    trusted = tuple(dict.fromkeys([*named, *trust]))
    try:
        trust_list(trusted)
    except CertificateFileError as exc:
        raise SettingsError(f"trust list (security.certificate, --trust): {exc}") from None
    return Security(certificate, key, None, EMULATOR_URI, trusted=trusted)


def emulator_certificate(pki: Path) -> tuple[Path, Path]:
    """``pki``/plc.der and plc-key.pem, made there if missing (so a site file can name or pin
    the emulator's certificate before the emulator first serves it)."""
    certificate, key = pki / "plc.der", pki / "plc-key.pem"
    if not certificate.exists() or not key.exists():
        make_certificate(pki, "plc", EMULATOR_URI, ("127.0.0.1", "localhost"))
    return certificate, key


def _server_credentials(settings: OpcUaSorter) -> Credentials | None:
    password = settings.password()
    if settings.username is None or password is None:
        return None
    return Credentials(settings.username, password)


def plc_emulator(
    protocol: Annotated[
        Protocol, typer.Option("--protocol", help="Which lines to emulate: opcua or modbus.")
    ],
    config: Annotated[
        Path,
        typer.Argument(
            help="Site file; each line's 'sorter' block gives the endpoint to serve.",
            show_default=False,
        ),
    ],
    parcels_per_h: Annotated[
        float,
        typer.Option(
            help="Parcels per hour per line that the emulator moves itself; 0 = only serve "
            "the PLC interface and let another plant (the twin) drive it."
        ),
    ] = 0.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Listen on this address instead of the host in each endpoint."),
    ] = None,
    pki: Annotated[
        Path | None,
        typer.Option(
            help="Folder with the emulator's OPC UA certificate (plc.der, plc-key.pem); made "
            "there if missing, before the site file is read. Needed when a line sets 'security'."
        ),
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="PATH",
            help="With security: also admit OPC UA clients with this certificate (a file, or a "
            "folder of .der/.pem/.crt/.cer files); repeatable. The controller certificates the "
            "site file names are always admitted; every other client is refused.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the emulator's parcels.")] = 7,
) -> None:
    """Serve emulated sorter PLCs (OPC UA or Modbus TCP) for the lines of a site file.

    Start it, then run the controller with the same site file: it connects to these servers as
    to real PLCs. The table shows per line whether the controller heartbeat is alive (else the
    PLC is in its safe state and defaults every parcel), requests, replies (late or naming a
    lane that does not exist), diverted and defaulted parcels, and the telegram backlog.
    """
    setup_logging("warning")
    try:
        if pki is not None and protocol is Protocol.OPCUA:
            emulator_certificate(pki)
        site, sorters = load_emulator_site(config)
        emulator = Emulator(
            site, sorters, protocol, MonotonicClock(), pki, host, tuple(trust or ())
        )
    except ConfigError as exc:
        print_problems(exc)
        raise typer.Exit(code=2) from None
    except SettingsError as exc:
        errors.print(f"[red]{config}[/red]: {exc}")
        raise typer.Exit(code=2) from None
    if not emulator.plcs:
        errors.print(
            f"[red]{config}[/red]: no line has a sorter block with type '{protocol.value}'; "
            "nothing to emulate"
        )
        raise typer.Exit(code=2)
    try:
        asyncio.run(_serve(emulator, parcels_per_h, duration, seed))
    except OSError as exc:
        errors.print(f"[red]cannot serve[/red]: {exc} (is the port in use?)")
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        pass


async def _serve(
    emulator: Emulator, parcels_per_h: float, duration: float | None, seed: int
) -> None:
    task = asyncio.create_task(emulator.run(parcels_per_h, seed))
    loop = asyncio.get_running_loop()
    end = None if duration is None else loop.time() + duration
    with Live(emulator.table(), console=console, refresh_per_second=2) as live:
        while not task.done() and (end is None or loop.time() < end):
            await asyncio.wait({task}, timeout=0.5)
            live.update(emulator.table())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
