"""The local command channel: operators and officers act on a running controller.

A Unix-domain stream socket; one JSON object per line in, one JSON object per line out::

    > {"command": "hold", "hawb": "123-45678901", "reason": "intel tip"}
    < {"accepted": true, "message": "HAWB 123-45678901 held"}
    > {"command": "inspect", "hawb": "123-45678901", "outcome": "lost"}
    < {"error": "Input should be 'cleared', 'seized' or 'referred'", "field": "outcome",
       "value": "lost"}

An answer has either ``accepted``/``message`` (the controller's :class:`CommandResult`) or
``error``/``field``/``value`` (nothing was carried out: bad JSON, an invalid field, a line
over 64 KiB, or the controller failed; ``field`` and ``value`` are null when no one field is
to blame). ``user`` is left out: the channel fills it in. A client may send several lines on
one connection; each non-blank line gets exactly one answer, in order. A connection that
sends nothing for ``idle_timeout_s`` (300 s) is closed.

Who may act, and as whom:

* **Who may connect** is decided by the socket file's mode, ``0o660`` by default: owner and
  group may connect, others get "permission denied" from the kernel (modes that give
  "other" any access are refused). The owner is the service user; the group is the service's
  group (or the folder's, where the folder is setgid). With the shipped systemd unit
  (``User=cargogate``, ``Group=cargogate``) that group is ``cargogate``: make it the operators
  group by adding operators and officers to it (``usermod -aG cargogate NAME``), or run the
  unit with ``Group=`` set to an existing operators group. The folder holding the socket must
  let that group in (search permission).
* **As whom** is decided by the kernel, not by the client: the channel reads the peer's uid
  with ``SO_PEERCRED`` and sets each command's ``user`` to that uid's login name (``uid:N``
  for a uid without one), so the journal names the account that acted. A line naming another
  ``user`` is refused. There is no "on behalf of" field: every operator and officer uses their
  own account, and a name typed by a client would be an unverified claim in an audit trail
  that is meant to be evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Final, Self

from pydantic import BeforeValidator, ValidationError, field_validator

from controller.core.commands import COMMAND, Command
from controller.core.ports import OperatorCommands
from controller.core.settings import WRITTEN, Strict

log = logging.getLogger(__name__)

DEFAULT_SOCKET: Final = Path("var/cargogate.sock")
DEFAULT_MODE: Final = 0o660
MAX_LINE: Final = 64 * 1024
"""Longest line accepted, in bytes, without its newline; a command needs well under 2 KiB."""
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path holds 108 bytes including the final NUL
_TAGS: Final = ("hold", "lift", "inspect", "verdict", "ack", "close")


class ChannelError(RuntimeError):
    """The channel cannot start: the socket path is taken, unusable or too long."""


def check_mode(mode: int) -> int:
    """A socket mode that keeps the channel to the service user and the operators group."""
    if not 0 <= mode <= 0o777:
        raise ValueError(
            f"mode {mode} is not a permission mode; write it in octal, e.g. 0o660 (YAML: 0660)"
        )
    if mode & 0o007:
        raise ValueError(
            f"mode {mode:#o} lets every local user give commands; use 0o660 (service user and "
            "operators group) or stricter"
        )
    return mode


def _octal(value: object) -> object:
    """``"0o660"`` / ``"660"`` from a site file mean octal; an int is taken as it is."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            return int(text, 8)
        except ValueError:
            raise ValueError(f"mode {value!r} is not an octal number such as 0o660") from None
    return value


class CommandChannelSettings(Strict):
    """The site file's ``commands`` section."""

    socket: Annotated[Path, WRITTEN] = DEFAULT_SOCKET
    """Where the socket file is made; its directory is created if missing."""
    mode: Annotated[int, BeforeValidator(_octal)] = DEFAULT_MODE
    """The socket file's permissions: owner (service user) and group (operators) only."""
    enabled: bool = True

    @field_validator("mode")
    @classmethod
    def _mode_private(cls, mode: int) -> int:
        return check_mode(mode)


class _Oversize:
    """A line longer than :data:`MAX_LINE`, already skipped up to its newline."""


OVERSIZE: Final = _Oversize()


class _Lines:
    """Newline-framed reading with a hard cap: an oversize line is dropped as it streams in,
    so it costs at most ``MAX_LINE`` bytes of memory and its tail is never read as a line."""

    def __init__(self, reader: asyncio.StreamReader, limit: int = MAX_LINE) -> None:
        self._reader = reader
        self._limit = limit
        self._buffer = bytearray()

    async def next(self) -> bytes | _Oversize | None:
        """The next line without its newline, :data:`OVERSIZE`, or None at end of stream."""
        skipping = False
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return OVERSIZE if skipping or len(line) > self._limit else line
            if len(self._buffer) > self._limit:
                skipping = True
                self._buffer.clear()
            chunk = await self._reader.read(64 * 1024)
            if not chunk:  # end of stream: a last line without its newline still counts
                if skipping:
                    return OVERSIZE
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None
            self._buffer += chunk


def _error(message: str, field: str | None = None, value: object = None) -> dict[str, Any]:
    return {"error": message, "field": field, "value": value}


def _invalid(exc: ValidationError, data: dict[str, Any]) -> dict[str, Any]:
    """The first problem of a command, named by its field and the value sent."""
    problem = exc.errors(include_url=False)[0]
    kind, loc = problem["type"], problem["loc"]
    if kind == "union_tag_not_found":
        return _error(f"missing 'command'; it is one of {', '.join(_TAGS)}", "command", None)
    if kind == "union_tag_invalid":
        sent = data.get("command")
        return _error(f"unknown command {sent!r}; it is one of {', '.join(_TAGS)}", "command", sent)
    field = ".".join(str(part) for part in loc[1:]) or None  # loc[0] is the command's tag
    value = None if kind == "missing" else problem.get("input")
    return _error(problem["msg"], field, value)


def _peer(sock: Any) -> tuple[str, int]:
    """The connecting process's login name (``uid:N`` where it has none) and its pid, from
    the kernel (``SO_PEERCRED``): what a client cannot forge."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    try:
        return pwd.getpwuid(uid).pw_name, pid
    except KeyError:  # a uid with no passwd entry (containers): the uid still names it
        return f"uid:{uid}", pid


class CommandChannel:
    """Serves :class:`OperatorCommands` on a Unix socket; use as ``async with``.

    Each connection is its own task, so a slow or silent client delays only itself: a line
    must arrive within ``idle_timeout_s`` and an answer be taken within ``write_timeout_s``.
    At most ``max_clients`` connections are served at once. Stopping lets commands being
    executed finish for up to ``stop_timeout_s``, then cancels them.
    """

    def __init__(
        self,
        path: Path,
        commands: OperatorCommands,
        mode: int = DEFAULT_MODE,
        *,
        max_clients: int = 16,
        idle_timeout_s: float = 300.0,
        write_timeout_s: float = 5.0,
        stop_timeout_s: float = 2.0,
    ) -> None:
        self.path = Path(path)
        self.mode = check_mode(mode)
        self._commands = commands
        self._max_clients = max_clients
        self._idle_timeout_s = idle_timeout_s
        self._write_timeout_s = write_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._server: asyncio.Server | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._clients: set[asyncio.Task[Any]] = set()
        self._busy: set[asyncio.Task[Any]] = set()  # clients whose command is executing
        self._closing = False

    @classmethod
    def from_settings(cls, settings: CommandChannelSettings, commands: OperatorCommands) -> Self:
        return cls(settings.socket, commands, settings.mode)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on :attr:`path`; replace a stale socket file, refuse a live one.

        The socket is bound under a temporary name, given its mode, and only then renamed into
        place, so there is no moment when it is reachable with the umask's permissions.
        """
        if self._server is not None:
            raise ChannelError(f"the command channel on {self.path} is already started")
        if not hasattr(socket, "SO_PEERCRED"):
            raise ChannelError("the command channel needs Linux (SO_PEERCRED) to know who acts")
        path = self.path
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        for name in (path, staging):
            if len(os.fsencode(name)) > _SUN_PATH_MAX:
                raise ChannelError(
                    f"command socket path {str(name)!r} is {len(os.fsencode(name))} bytes; "
                    f"Unix sockets allow {_SUN_PATH_MAX}: choose a shorter commands.socket"
                )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelError(
                f"cannot create {path.parent} for the command socket: {exc}"
            ) from exc
        await self._refuse_if_taken()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            sock.bind(str(staging))
            os.chmod(staging, self.mode)
            sock.listen(64)
            os.replace(staging, path)  # atomically replaces a stale socket file
            st = os.stat(path)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except OSError as exc:
            sock.close()
            with contextlib.suppress(OSError):
                staging.unlink()
            raise ChannelError(f"cannot create the command socket {path}: {exc}") from exc
        self._identity = (st.st_dev, st.st_ino)
        self._closing = False
        log.info("command channel listening on %s (mode %#o)", path, self.mode)

    async def _refuse_if_taken(self) -> None:
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ChannelError(
                f"{path} exists and is not a socket; refusing to replace it: remove it or "
                "choose another commands.socket"
            )
        try:
            async with asyncio.timeout(2.0):
                _, writer = await asyncio.open_unix_connection(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("replacing stale command socket %s (nothing listens on it)", path)
            return
        except PermissionError:
            raise ChannelError(
                f"{path} is a socket this user may not connect to, so whether another "
                "controller uses it cannot be checked: remove it or choose another "
                "commands.socket"
            ) from None
        except TimeoutError:
            pass  # a server too busy to accept is still a live server
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        raise ChannelError(
            f"another controller is already listening on {path}: stop it first, or give this "
            "one another commands.socket"
        )

    async def stop(self) -> None:
        """Stop listening, end every connection within ``stop_timeout_s`` (plus one second
        for cancelled ones to unwind), and remove the socket file if it is still ours."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        self._remove_socket_file()
        for task in self._clients - self._busy:
            task.cancel()  # idle: waiting for a line
        clients = set(self._clients)
        if clients:
            _, pending = await asyncio.wait(clients, timeout=self._stop_timeout_s)
            for task in pending:
                log.warning("command channel: cancelling a command still running at stop")
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        log.info("command channel on %s stopped", self.path)

    def _remove_socket_file(self) -> None:
        """Unlink the path only if it is still the file we made (another server may have
        replaced it after this one's start)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self._max_clients or self._closing:
            reason = "the controller is stopping" if self._closing else "too many connections"
            writer.write(_line(_error(f"{reason}; try again shortly")))
            writer.close()
            return
        self._clients.add(task)
        try:
            user, pid = _peer(writer.get_extra_info("socket"))
            await self._converse(_Lines(reader), writer, user, pid)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("command channel client gone: %r", exc)
        except OSError as exc:  # SO_PEERCRED failed: nobody to act as
            log.warning("command channel: cannot identify a client: %s", exc)
        finally:
            self._clients.discard(task)
            self._busy.discard(task)
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                writer.transport.abort()

    async def _converse(
        self, lines: _Lines, writer: asyncio.StreamWriter, user: str, pid: int
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._closing:
            try:
                async with asyncio.timeout(self._idle_timeout_s):
                    line = await lines.next()
            except TimeoutError:
                return  # silent client: free its slot
            if line is None:
                return
            if isinstance(line, bytes) and not line.strip():
                continue
            self._busy.add(task)
            try:
                answer = await self._answer(line, user, pid)
            finally:
                self._busy.discard(task)
            writer.write(_line(answer))
            async with asyncio.timeout(self._write_timeout_s):
                await writer.drain()

    async def _answer(self, line: bytes | _Oversize, user: str, pid: int) -> dict[str, Any]:
        """One line's answer; never raises for anything a client sends."""
        if isinstance(line, _Oversize):
            return _error(f"line longer than {MAX_LINE} bytes; ignored")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            return _error(f"not valid JSON: {exc.msg} at column {exc.colno}")
        except RecursionError:
            return _error("not a command: JSON nested too deeply")
        except ValueError as exc:  # not UTF-8, an integer of thousands of digits
            return _error(f"not valid JSON: {exc}")
        if not isinstance(data, dict):
            return _error('expected one JSON object per line, e.g. {"command": "ack", ...}')
        claimed = data.get("user")
        if claimed is not None and claimed != user:
            return _error(
                f"you are connected as {user!r}; a command cannot name another user "
                "(leave 'user' out: the channel fills it in)",
                "user",
                claimed,
            )
        try:
            command: Command = COMMAND.validate_python({**data, "user": user})
        except ValidationError as exc:
            return _invalid(exc, data)
        try:
            result = await self._commands.execute(command)
        except Exception:
            log.exception("command %s from %s (pid %d) failed", command.command, user, pid)
            return _error("the controller failed to carry out the command; see its log")
        log.info(
            "%s (pid %d) %s: %s: %s",
            user,
            pid,
            command.command,
            "accepted" if result.accepted else "refused",
            result.message,
        )
        return result.model_dump(mode="json")


def _line(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False, default=str).encode() + b"\n"
