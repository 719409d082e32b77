"""Sorter settings, the adapter factory and the ``plc-emulator`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from controller.core.clock import ManualClock, MonotonicClock
from controller.core.domain import DestinationReply, DestinationRequest, LaneStatus
from controller.core.reasons import Reason
from plc_adapters import rulebook
from plc_adapters.cli import Emulator, Protocol, load_emulator_site, plc_emulator
from plc_adapters.factory import build_sorter, build_wire_sorter
from plc_adapters.modbus_server import ModbusServerImage
from plc_adapters.modbus_wire import ModbusTransport
from plc_adapters.opcua_wire import OpcUaTransport
from plc_adapters.settings import ModbusSorter, OpcUaSorter, SettingsError
from plc_adapters.wire_sorter import WireSorter
from tests.plc.rigs import wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "plc" / "site-wire.yaml"


def test_opcua_settings_build_an_opcua_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PLC_PASSWORD", "s3cret")
    settings = OpcUaSorter.model_validate(
        {
            "type": "opcua",
            "endpoint": "opc.tcp://plc-l1.example:4840",
            "username": "sorter",
            "password_env": "TEST_PLC_PASSWORD",
            "object_name": "Sorter1",
            "link": {"ring_size": 32},
        }
    )
    sorter = build_sorter("L1", settings, MonotonicClock())
    assert isinstance(sorter, WireSorter)
    assert isinstance(sorter.transport, OpcUaTransport)
    assert sorter.transport.credentials is not None
    assert sorter.transport.credentials.password == "s3cret"
    assert sorter.transport.line == "Sorter1"
    assert sorter.layout.ring_size == 32


def test_modbus_settings_build_a_modbus_adapter() -> None:
    settings = ModbusSorter(type="modbus", host="10.0.0.7", port=502, unit_id=3, timeout_s=0.1)
    sorter = build_wire_sorter("L2", settings, MonotonicClock())
    assert isinstance(sorter.transport, ModbusTransport)
    assert (sorter.transport.unit, sorter.transport.timeout_s) == (3, 0.1)
    assert sorter.timing.poll_s == settings.poll_s


def test_missing_password_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    settings = OpcUaSorter(
        type="opcua",
        endpoint="opc.tcp://h:4840",
        username="u",
        password_env="NOT_SET_ANYWHERE",
    )
    with pytest.raises(SettingsError, match="'NOT_SET_ANYWHERE' is not set"):
        build_sorter("L1", settings, MonotonicClock())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "opcua", "endpoint": "http://h:4840"}, "should match pattern"),
        ({"type": "opcua", "endpoint": "opc.tcp://h:1", "username": "u"}, "needs password_env"),
        ({"type": "opcua", "endpoint": "opc.tcp://h:1", "colour": "red"}, "Extra inputs"),
        (
            {"type": "modbus", "host": "h", "register_base": 65000},
            "register map ends at 67065, beyond 65535",
        ),
        (
            {"type": "modbus", "host": "h", "link": {"heartbeat_timeout_s": 0.3}},
            "must be at least twice heartbeat_period_s",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_reason(raw: dict[str, object], message: str) -> None:
    model = OpcUaSorter if raw["type"] == "opcua" else ModbusSorter
    with pytest.raises(ValidationError, match=message):
        model.model_validate(raw)


def test_example_site_file_has_one_line_per_protocol() -> None:
    site, sorters = load_emulator_site(EXAMPLE)
    assert [line.id for line in site.lines] == ["L1", "L2"]
    assert isinstance(sorters["L1"], OpcUaSorter)
    assert isinstance(sorters["L2"], ModbusSorter)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(plc_emulator)
    return app


def test_emulator_command_reports_bad_sorter_blocks_without_a_traceback(tmp_path: Path) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["lines"][1]["sorter"]["unit_id"] = 999
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(_app(), ["--protocol", "modbus", str(site)])
    assert result.exit_code == 2
    assert "lines.1.sorter.unit_id" in result.output
    assert "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_emulator_command_serves_a_controller(tmp_path: Path) -> None:
    """The command in its own process, moving parcels; the real adapter connects and replies."""
    port = _free_port()
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["lines"][1]["sorter"]["port"] = port
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(raw))
    code = (
        "import typer, sys; from plc_adapters.cli import plc_emulator; "
        "app = typer.Typer(); app.command()(plc_emulator); app()"
    )
    log = (tmp_path / "emulator.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--protocol", "modbus", str(site),
        "--parcels-per-h", "36000", "--duration", "40",
        stdout=asyncio.subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    _, sorters = load_emulator_site(site)
    adapter = build_wire_sorter("L2", sorters["L2"], MonotonicClock())
    got: list[DestinationRequest] = []

    async def serve() -> None:
        async for telegram in adapter.telegrams():
            if isinstance(telegram, DestinationRequest):
                got.append(telegram)
                reply = DestinationReply("L2", telegram.tracking_id, 2, Reason.RISK_RED)
                await adapter.reply(reply)

    task = asyncio.create_task(serve())
    try:
        await wait_for(
            lambda: len(got) >= 5 or process.returncode is not None,
            "five destination requests from the emulator",
        )
        assert process.returncode is None, (tmp_path / "emulator.log").read_text()
        assert all(t.barcode.startswith("CG") and t.fault == "" for t in got)
        assert adapter.connected
    finally:
        task.cancel()
        await adapter.aclose()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()
        log.close()


def test_building_a_wire_sorter_loads_no_emulator_code() -> None:
    """The controller's side of each protocol stands alone: building both wire sorters loads
    neither the emulated PLC nor the protocol servers in front of it."""
    probe = (
        "import json, sys\n"
        "from controller.core.clock import MonotonicClock\n"
        "from plc_adapters.factory import build_wire_sorter\n"
        "from plc_adapters.settings import ModbusSorter, OpcUaSorter\n"
        "opcua = OpcUaSorter(type='opcua', endpoint='opc.tcp://plc:4840')\n"
        "build_wire_sorter('L1', opcua, MonotonicClock())\n"
        "build_wire_sorter('L2', ModbusSorter(type='modbus', host='plc'), MonotonicClock())\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('plc_adapters.'))))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert {"plc_adapters.opcua_wire", "plc_adapters.modbus_wire"} <= loaded
    servers = {"plc_adapters.opcua_server", "plc_adapters.modbus_server"}
    assert loaded & {"plc_adapters.emulator", *servers} == set()


def _count_is(items: list[DestinationReply], count: int) -> bool:
    return len(items) == count


async def test_the_emulator_carries_a_parcel_round_until_the_plcs_lap_limit(
    tmp_path: Path,
) -> None:
    """A parcel whose replied lane stays full goes round the loop for as long as the PLC
    recirculates it; the PLC's own lap limit (the rulebook) ends its trip at the default lane.
    The emulated PLC behind its real Modbus server, the real adapter replying; the belt runs on
    a manual clock so every reply is in time."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["lines"][1]["sorter"]["port"] = 0  # the OS chooses
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    site, sorters = load_emulator_site(path)
    line = next(line for line in site.lines if line.id == "L2")
    clock = ManualClock()
    emulator = Emulator(site, sorters, Protocol.MODBUS, clock, host_override="127.0.0.1")
    plc = emulator.plcs["L2"]
    taken: list[DestinationReply] = []
    plc.on_reply_taken = taken.append
    async with plc:
        assert isinstance(plc.image, ModbusServerImage)
        settings = sorters["L2"].model_copy(update={"port": plc.image.port})
        adapter = build_wire_sorter("L2", settings, MonotonicClock())

        async def controller() -> None:
            async for telegram in adapter.telegrams():
                if isinstance(telegram, DestinationRequest):
                    reply = DestinationReply("L2", telegram.tracking_id, 2, Reason.RISK_RED)
                    await adapter.reply(reply)

        replying = asyncio.create_task(controller())
        try:
            plc.set_lane_status(2, LaneStatus.FULL)
            await wait_for(lambda: adapter.connected and not plc.safe_state, "link up")
            carrying = asyncio.create_task(emulator.carry(line, random.Random(1)))
            laps = 0
            while not carrying.done():
                laps += 1
                await wait_for(partial(_count_is, taken, laps), f"the reply of lap {laps}")
                await clock.advance(line.belt.scan_to_divert_m / line.belt.speed_m_s)
                await clock.advance(line.belt.loop_s)
            await carrying
        finally:
            replying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replying
            await adapter.aclose()
    flow = emulator.flows["L2"]
    recirculations = line.lap_limit + rulebook.PLC_SPARE_LAPS + 1  # laps 0 … limit + spare
    assert laps == recirculations + 1
    assert (flow.inducted, flow.lane_full, flow.defaulted, flow.diverted) == (
        1,
        recirculations,
        1,
        0,
    )
