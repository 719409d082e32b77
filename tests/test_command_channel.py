"""The command channel over a real Unix socket, and the floor verbs of the CLI against it.

The controller's own ``OperatorCommands`` is being written alongside this channel, so a small
stand-in (:class:`Recorder`) answers here: it records what reached it and refuses what the
controller would refuse (lifting a hold nobody placed). What is tested is the channel: who the
command is attributed to, what a client gets back for every kind of line, and that the socket
is made, guarded and removed as documented.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from controller.app.command_channel import (
    MAX_LINE,
    ChannelError,
    CommandChannel,
    CommandChannelSettings,
)
from controller.app.command_cli import VERBS, register
from controller.core.commands import (
    AcknowledgeAlarm,
    Command,
    CommandResult,
    ForceClose,
    LiftHold,
    PlaceHold,
    RecordInspection,
    RecordVerdict,
)
from controller.core.domain import InspectionOutcome, ReviewOutcome

ME = pwd.getpwuid(os.getuid()).pw_name


class Recorder:
    """Stands in for the controller: records commands, refuses lifting an absent hold, fails
    on the alarm source ``bug``, and blocks on the HAWB ``STUCK`` until ``release`` is set."""

    def __init__(self) -> None:
        self.received: list[Command] = []
        self.holds: set[str] = set()
        self.release = asyncio.Event()
        self.executing = asyncio.Event()  # set once a STUCK hold is being executed

    async def execute(self, command: Command) -> CommandResult:
        self.received.append(command)
        if isinstance(command, PlaceHold):
            if command.hawb == "STUCK":
                self.executing.set()
                await self.release.wait()
            self.holds.add(command.hawb)
            return CommandResult(accepted=True, message=f"hold placed on {command.hawb}")
        if isinstance(command, LiftHold):
            if command.hawb not in self.holds:
                return CommandResult(accepted=False, message=f"no hold on {command.hawb}")
            self.holds.discard(command.hawb)
            return CommandResult(accepted=True, message=f"hold lifted on {command.hawb}")
        if isinstance(command, AcknowledgeAlarm) and command.source == "bug":
            raise RuntimeError("internal failure with secret detail")
        return CommandResult(accepted=True, message=f"{command.command} recorded")


class Client:
    """A raw line client: what any tool on the socket would do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path: Path) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def answer(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n"), f"no answer line, got {line!r}"
        answer = json.loads(line)
        assert isinstance(answer, dict)
        return answer

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        await self.send(json.dumps(command).encode() + b"\n")
        return await self.answer()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def ask(path: Path, command: dict[str, Any]) -> dict[str, Any]:
    client = await Client.connect(path)
    try:
        return await client.ask(command)
    finally:
        await client.close()


HOLD = {"command": "hold", "hawb": "123-45678901", "reason": "intel tip"}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def channel(tmp_path: Path, recorder: Recorder) -> AsyncIterator[CommandChannel]:
    async with CommandChannel(tmp_path / "cg.sock", recorder, stop_timeout_s=0.5) as served:
        yield served


# --- who acts ---------------------------------------------------------------------------


async def test_the_user_is_the_login_name_of_the_connecting_process(
    channel: CommandChannel, recorder: Recorder
) -> None:
    answer = await ask(channel.path, HOLD)
    assert answer == {"accepted": True, "message": "hold placed on 123-45678901"}
    assert recorder.received == [
        PlaceHold(user=ME, hawb="123-45678901", reason="intel tip"),
    ]


async def test_a_command_naming_another_user_is_refused_unexecuted(
    channel: CommandChannel, recorder: Recorder
) -> None:
    assert ME != "mallory"
    answer = await ask(channel.path, {**HOLD, "user": "mallory"})
    assert answer["field"] == "user"
    assert answer["value"] == "mallory"
    assert ME in answer["error"]
    assert recorder.received == []
    # naming oneself is harmless
    assert (await ask(channel.path, {**HOLD, "user": ME}))["accepted"] is True


# --- answers ------------------------------------------------------------------------------


async def test_a_refused_command_gets_the_controller_s_reason(
    channel: CommandChannel, recorder: Recorder
) -> None:
    lift = {"command": "lift", "hawb": "999-1", "reason": "cleared by phone"}
    assert await ask(channel.path, lift) == {"accepted": False, "message": "no hold on 999-1"}
    assert isinstance(recorder.received[0], LiftHold)


@pytest.mark.parametrize(
    ("command", "field", "value", "says"),
    [
        ({**HOLD, "reason": ""}, "reason", "", "at least 1 character"),
        (
            {"command": "inspect", "hawb": "H1", "outcome": "lost"},
            "outcome",
            "lost",
            "'cleared', 'seized' or 'referred'",
        ),
        (
            {"command": "verdict", "line": "L1", "tracking_id": -1, "outcome": "clear"},
            "tracking_id",
            -1,
            "greater than or equal to 0",
        ),
        ({"command": "hold", "reason": "r"}, "hawb", None, "required"),
        ({**HOLD, "colour": "red"}, "colour", "red", "not permitted"),
        ({**HOLD, "command": "hlod"}, "command", "hlod", "unknown command 'hlod'"),
        ({"hawb": "H1"}, "command", None, "missing 'command'"),
    ],
)
async def test_invalid_input_is_answered_with_the_field_and_value(
    channel: CommandChannel,
    recorder: Recorder,
    command: dict[str, Any],
    field: str,
    value: object,
    says: str,
) -> None:
    answer = await ask(channel.path, command)
    assert set(answer) == {"error", "field", "value"}
    assert (answer["field"], answer["value"]) == (field, value)
    assert says in answer["error"]
    assert recorder.received == []


async def test_bad_lines_are_answered_in_order_and_the_server_keeps_serving(
    channel: CommandChannel, recorder: Recorder
) -> None:
    client = await Client.connect(channel.path)
    await client.send(b"this is not json\n")
    assert "not valid JSON" in (await client.answer())["error"]
    await client.send(b'["hold"]\n')
    assert "one JSON object per line" in (await client.answer())["error"]
    await client.send(b'{"command": "hold", "hawb": "\xff\xfe"}\n')
    assert "not valid JSON" in (await client.answer())["error"]
    await client.send(b"[" * 60_000 + b"\n")
    assert (await client.answer())["field"] is None
    await client.send(b"\n   \n")  # blank lines get no answer; the next line's answer is next
    # an oversize line that is valid JSON: refused whole, its tail never read as a line
    huge = json.dumps({**HOLD, "reason": "x" * (MAX_LINE + 10)}).encode()
    await client.send(huge[: len(huge) // 2])
    await asyncio.sleep(0.05)  # arrives in pieces
    await client.send(huge[len(huge) // 2 :] + b"\n")
    assert (await client.answer()) == {
        "error": f"line longer than {MAX_LINE} bytes; ignored",
        "field": None,
        "value": None,
    }
    # the same connection still works, and so does a new one
    assert (await client.ask(HOLD))["accepted"] is True
    await client.close()
    assert (await ask(channel.path, {**HOLD, "hawb": "H2"}))["accepted"] is True
    assert [c.hawb for c in recorder.received if isinstance(c, PlaceHold)] == [
        "123-45678901",
        "H2",
    ]


async def test_a_line_of_exactly_the_limit_is_read(channel: CommandChannel) -> None:
    line = json.dumps({**HOLD, "reason": "r"}).encode()
    line = line[:-1] + b" " * (MAX_LINE - len(line)) + b"}"  # padding is legal JSON space
    assert len(line) == MAX_LINE
    client = await Client.connect(channel.path)
    await client.send(line + b"\n")
    assert (await client.answer())["accepted"] is True
    await client.close()


async def test_a_failing_controller_is_answered_without_a_traceback(
    channel: CommandChannel,
) -> None:
    answer = await ask(channel.path, {"command": "ack", "source": "bug"})
    assert answer["field"] is None
    assert "see its log" in answer["error"]
    assert "secret detail" not in json.dumps(answer)
    assert "Traceback" not in json.dumps(answer)
    assert (await ask(channel.path, HOLD))["accepted"] is True


async def test_a_slow_or_dead_client_does_not_block_others(channel: CommandChannel) -> None:
    slow = await Client.connect(channel.path)
    await slow.send(b'{"command": "hold", "ha')  # ... and then nothing, for as long as it likes
    stuck = await Client.connect(channel.path)
    await stuck.send(json.dumps({**HOLD, "hawb": "STUCK"}).encode() + b"\n")  # executing
    dead = await Client.connect(channel.path)
    await dead.send(json.dumps(HOLD).encode()[:10])
    dead.writer.transport.abort()  # gone mid-line
    started = time.monotonic()
    assert (await ask(channel.path, {**HOLD, "hawb": "FAST"}))["accepted"] is True
    assert time.monotonic() - started < 1.0
    await slow.close()
    stuck.writer.transport.abort()


async def test_a_client_that_stops_writing_is_disconnected_after_the_idle_timeout(
    tmp_path: Path, recorder: Recorder
) -> None:
    async with CommandChannel(tmp_path / "cg.sock", recorder, idle_timeout_s=0.2) as served:
        client = await Client.connect(served.path)
        await client.send(b'{"command": ')
        assert await asyncio.wait_for(client.reader.read(), 2) == b""  # closed by the server
        await client.close()


# --- the socket file ----------------------------------------------------------------------


async def test_the_socket_is_owner_and_group_only_and_removed_at_stop(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "var" / "cg.sock"  # the folder is made
    async with CommandChannel(path, recorder):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert [p.name for p in path.parent.iterdir()] == ["cg.sock"]  # no staging left
    assert not path.exists()


async def test_a_second_server_on_a_live_socket_is_refused(
    channel: CommandChannel, recorder: Recorder
) -> None:
    second = CommandChannel(channel.path, Recorder())
    with pytest.raises(ChannelError, match="another controller is already listening on"):
        await second.start()
    await second.stop()  # a no-op: it never started, and must not remove the first's socket
    assert (await ask(channel.path, HOLD))["accepted"] is True
    assert len(recorder.received) == 1


async def test_a_stale_socket_file_is_replaced(tmp_path: Path, recorder: Recorder) -> None:
    path = tmp_path / "cg.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))  # a controller that died without removing its socket
    crashed.close()
    old_inode = os.lstat(path).st_ino
    async with CommandChannel(path, recorder):
        assert os.lstat(path).st_ino != old_inode
        assert (await ask(path, HOLD))["accepted"] is True
    assert not path.exists()


async def test_a_file_that_is_not_a_socket_is_never_replaced(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "cg.sock"
    path.write_text("someone's notes")
    with pytest.raises(ChannelError, match="exists and is not a socket"):
        await CommandChannel(path, recorder).start()
    assert path.read_text() == "someone's notes"


async def test_a_socket_path_too_long_for_unix_sockets_is_a_clear_error(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / ("d" * 120) / "cg.sock"
    with pytest.raises(ChannelError, match="Unix sockets allow 107"):
        await CommandChannel(path, recorder).start()


async def test_stop_is_bounded_with_a_command_stuck_and_idle_clients(
    channel: CommandChannel, recorder: Recorder
) -> None:
    idle = await Client.connect(channel.path)
    stuck = await Client.connect(channel.path)
    await stuck.send(json.dumps({**HOLD, "hawb": "STUCK"}).encode() + b"\n")
    await asyncio.wait_for(recorder.executing.wait(), 2)
    started = time.monotonic()
    await channel.stop()  # stop_timeout_s=0.5 in the fixture
    assert time.monotonic() - started < 2.0
    assert not channel.path.exists()
    for client in (idle, stuck):
        assert await asyncio.wait_for(client.reader.read(), 2) == b""
        await client.close()


async def test_idle_clients_do_not_delay_stop(tmp_path: Path, recorder: Recorder) -> None:
    served = CommandChannel(tmp_path / "cg.sock", recorder, stop_timeout_s=5.0)
    await served.start()
    idle = [await Client.connect(served.path) for _ in range(3)]
    assert (await idle[0].ask(HOLD))["accepted"] is True  # served, then waits for more
    started = time.monotonic()
    await served.stop()
    assert time.monotonic() - started < 1.0  # the 5 s grace is for commands being executed
    for client in idle:
        assert await asyncio.wait_for(client.reader.read(), 2) == b""
        await client.close()


async def test_stop_leaves_a_socket_file_it_did_not_make(
    tmp_path: Path, recorder: Recorder
) -> None:
    path = tmp_path / "cg.sock"
    first = CommandChannel(path, recorder)
    await first.start()
    path.unlink()  # someone removed it by hand and started another controller
    async with CommandChannel(path, Recorder()):
        await first.stop()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert (await ask(path, HOLD))["accepted"] is True
    assert recorder.received == []


async def test_a_command_in_flight_at_stop_is_finished_and_answered(
    tmp_path: Path, recorder: Recorder
) -> None:
    served = CommandChannel(tmp_path / "cg.sock", recorder, stop_timeout_s=5.0)
    await served.start()
    client = await Client.connect(served.path)
    await client.send(json.dumps({**HOLD, "hawb": "STUCK"}).encode() + b"\n")
    await asyncio.wait_for(recorder.executing.wait(), 2)
    stopping = asyncio.create_task(served.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # waiting for the command, within its grace
    recorder.release.set()
    assert (await client.answer())["accepted"] is True
    # answered, then let go at once rather than kept until the grace runs out
    assert await asyncio.wait_for(client.reader.read(), 1) == b""
    await asyncio.wait_for(stopping, 1)
    await client.close()


# --- settings -----------------------------------------------------------------------------


def test_settings_defaults_and_octal_modes() -> None:
    settings = CommandChannelSettings()
    assert (settings.socket, settings.mode, settings.enabled) == (
        Path("var/cargogate.sock"),
        0o660,
        True,
    )
    assert CommandChannelSettings.model_validate({"mode": "0o640"}).mode == 0o640
    assert CommandChannelSettings.model_validate({"mode": "600"}).mode == 0o600
    assert CommandChannelSettings.model_validate({"mode": 0o600}).mode == 0o600


@pytest.mark.parametrize(
    ("raw", "loc", "says"),
    [
        ({"mode": 0o666}, "mode", "every local user"),
        ({"mode": 660}, "mode", "write it in octal"),  # decimal 660 by mistake
        ({"mode": "rw-rw----"}, "mode", "not an octal number"),
        ({"sockett": "x.sock"}, "sockett", "Extra inputs"),
    ],
)
def test_settings_mistakes_name_the_field(raw: dict[str, Any], loc: str, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        CommandChannelSettings.model_validate(raw)
    (problem,) = info.value.errors()
    assert problem["loc"] == (loc,)
    assert says in problem["msg"]


def test_a_world_accessible_mode_is_refused_by_the_channel(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every local user"):
        CommandChannel(tmp_path / "cg.sock", Recorder(), mode=0o662)


# --- the CLI verbs ------------------------------------------------------------------------

runner = CliRunner()


def _cli() -> typer.Typer:
    app = typer.Typer(rich_markup_mode="markdown")  # as the cargogate CLI is made
    register(app)
    return app


def _flat(text: str) -> str:
    """Output without whitespace: rich wraps (and folds long paths) to its own width."""
    return "".join(text.split())


@contextlib.contextmanager
def serving(path: Path) -> Iterator[Recorder]:
    """A channel served from its own thread and event loop, as the CLI is synchronous."""
    recorder = Recorder()
    ready = threading.Event()
    started: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        started["loop"], started["stop"] = asyncio.get_running_loop(), stop
        try:
            async with CommandChannel(path, recorder):
                ready.set()
                await stop.wait()
        except BaseException as exc:
            started["error"] = exc
            ready.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(5), "the channel did not start"
    assert "error" not in started, started.get("error")
    try:
        yield recorder
    finally:
        started["loop"].call_soon_threadsafe(started["stop"].set)
        thread.join(5)
    assert not thread.is_alive()
    assert not path.exists()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, Recorder]]:
    path = tmp_path / "cg.sock"
    with serving(path) as recorder:
        yield path, recorder


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["hold", "123-45678901", "--reason", "intel tip"],
            PlaceHold(user=ME, hawb="123-45678901", reason="intel tip"),
        ),
        (
            ["inspect", "H1", "--outcome", "seized", "--note", "lithium cells"],
            RecordInspection(
                user=ME, hawb="H1", outcome=InspectionOutcome.SEIZED, note="lithium cells"
            ),
        ),
        (
            ["inspect", "H1", "--outcome", "referred"],
            RecordInspection(user=ME, hawb="H1", outcome=InspectionOutcome.REFERRED),
        ),
        (
            ["verdict", "L1", "4294967295", "inspect", "--note", "dense mass"],
            RecordVerdict(
                user=ME,
                line="L1",
                tracking_id=4294967295,
                outcome=ReviewOutcome.INSPECT,
                note="dense mass",
            ),
        ),
        (
            ["ack", "plc:L1", "--comment", "belt restarted"],
            AcknowledgeAlarm(user=ME, source="plc:L1", comment="belt restarted"),
        ),
        (
            ["close", "L2", "17", "--reason", "found off the belt"],
            ForceClose(user=ME, line="L2", tracking_id=17, reason="found off the belt"),
        ),
    ],
)
def test_each_verb_sends_its_command_as_the_user(
    live: tuple[Path, Recorder], args: list[str], expected: Command
) -> None:
    path, recorder = live
    result = runner.invoke(_cli(), [*args, "--socket", str(path)])
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output
    assert recorder.received == [expected]


def test_hold_then_lift_and_a_refused_lift_exits_1(live: tuple[Path, Recorder]) -> None:
    path, recorder = live
    sock = ["--socket", str(path)]
    assert runner.invoke(_cli(), ["hold", "H9", "--reason", "tip", *sock]).exit_code == 0
    lifted = runner.invoke(_cli(), ["lift", "H9", "--reason", "checked", *sock])
    assert lifted.exit_code == 0, lifted.output
    assert "hold lifted on H9" in lifted.output
    refused = runner.invoke(_cli(), ["lift", "H9", "--reason", "again", *sock])
    assert refused.exit_code == 1
    assert "refused" in refused.output
    assert "no hold on H9" in refused.output
    assert len(recorder.received) == 3


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["hold", "H1", "--reason", ""], 'reason"":Stringshouldhaveatleast1character'),
        (["hold", "H 1", "--reason", "tip"], 'hawb"H1":Stringshouldmatchpattern'),
        (["close", "--reason", "x", "L1", "--", "-5"], "tracking_id-5:"),
    ],
)
def test_an_invalid_field_exits_2_naming_it(
    live: tuple[Path, Recorder], args: list[str], shown: str
) -> None:
    path, recorder = live
    result = runner.invoke(_cli(), [args[0], "--socket", str(path), *args[1:]])
    assert result.exit_code == 2, result.output
    assert shown in _flat(result.output)
    assert "Traceback" not in result.output
    assert recorder.received == []


def test_a_bad_outcome_is_a_usage_error(live: tuple[Path, Recorder]) -> None:
    path, recorder = live
    result = runner.invoke(_cli(), ["inspect", "H1", "--outcome", "lost", "--socket", str(path)])
    assert result.exit_code == 2
    assert "cleared" in result.output
    assert "seized" in result.output
    assert recorder.received == []


@pytest.mark.parametrize("stale", [False, True])
def test_nobody_listening_is_a_clear_message_and_exit_2(tmp_path: Path, stale: bool) -> None:
    path = tmp_path / "cg.sock"
    if stale:  # a socket file left by a controller that is no longer running
        leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        leftover.bind(str(path))
        leftover.close()
    result = runner.invoke(_cli(), ["hold", "H1", "--reason", "tip", "--socket", str(path)])
    assert result.exit_code == 2
    expected = f"no controller is listening on {path} — is `cargogate run` running?"
    assert _flat(expected) in _flat(result.output)
    assert "Traceback" not in result.output


def test_the_socket_can_come_from_the_environment(live: tuple[Path, Recorder]) -> None:
    path, recorder = live
    result = runner.invoke(_cli(), ["ack", "xray:S1"], env={"CARGOGATE_SOCKET": str(path)})
    assert result.exit_code == 0, result.output
    assert recorder.received == [AcknowledgeAlarm(user=ME, source="xray:S1")]


_AS_OTHER_USER = """
import json, os, sys
import typer
from typer.testing import CliRunner
from controller.app.command_cli import register
app = typer.Typer()
register(app)
runner = CliRunner()
runner.invoke(app, ["hold", "H0", "--reason", "warm-up", "--socket", "/nonexistent/cg.sock"])
uid, gid, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.setgroups([])
os.setegid(gid)
os.seteuid(uid)  # from here on the kernel sees another user
result = runner.invoke(app, ["hold", "H1", "--reason", "tip", "--socket", path])
print(json.dumps({"exit_code": result.exit_code, "output": result.output}))
"""


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


@pytest.mark.skipif(
    os.geteuid() != 0 or _nobody() is None, reason="needs root to act as the user nobody"
)
@pytest.mark.parametrize("in_group", [False, True])
def test_the_socket_mode_decides_who_may_connect_and_the_kernel_who_acts(
    in_group: bool,
) -> None:
    """``nobody`` outside the socket's group is turned away by the kernel; inside it, its
    command is recorded as ``nobody``'s, whatever the client might claim."""
    nobody = _nobody()
    assert nobody is not None
    with tempfile.TemporaryDirectory(prefix="cg", dir="/tmp") as folder:
        os.chmod(folder, 0o711)  # others may reach the socket; its own mode decides
        path = Path(folder) / "cg.sock"
        with serving(path) as recorder:
            group = os.stat(path).st_gid if in_group else nobody.pw_gid
            ran = subprocess.run(
                [sys.executable, "-c", _AS_OTHER_USER, str(nobody.pw_uid), str(group), str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            result = json.loads(ran.stdout.strip().splitlines()[-1])
            received = list(recorder.received)
    if in_group:
        assert result["exit_code"] == 0, result["output"]
        assert received == [PlaceHold(user="nobody", hawb="H1", reason="tip")]
    else:
        assert result["exit_code"] == 2, result["output"]
        assert "operatorsgroup" in _flat(result["output"])
        assert received == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may connect to any socket")
def test_someone_outside_the_group_is_told_so(tmp_path: Path) -> None:
    path = tmp_path / "cg.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    os.chmod(path, 0o000)
    try:
        result = runner.invoke(_cli(), ["hold", "H1", "--reason", "tip", "--socket", str(path)])
    finally:
        listener.close()
    assert result.exit_code == 2
    assert "operatorsgroup" in _flat(result.output)


@pytest.mark.parametrize(
    ("verb", "words"),
    [
        ("hold", "no parcel of this HAWB is released"),
        ("lift", "may be released again"),
        ("inspect", "opened a parcel at the inspection station"),
        ("verdict", "on-screen review"),
        ("ack", "Acknowledge an alarm"),
        ("close", "found off the belt"),
    ],
)
def test_each_verb_explains_itself(verb: str, words: str) -> None:
    result = runner.invoke(_cli(), [verb, "--help"])
    assert result.exit_code == 0
    assert _flat(words) in _flat(result.output)
    assert "--socket" in result.output
    assert _flat("1: refused") in _flat(result.output)


def test_every_command_of_the_model_has_a_verb() -> None:
    tags = {model.model_fields["command"].default for model in get_args(Command)}
    assert set(VERBS) == tags
