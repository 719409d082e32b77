"""``cargogate hold|lift|inspect|verdict|ack|close``: act on a running controller.

Each verb sends one command over the command channel (:mod:`controller.app.command_channel`)
and prints the controller's answer. Exit codes: 0 accepted, 1 refused by the controller (the
message says why), 2 a mistake in the command or no controller to talk to. The controller
records the command under your login name; nobody can give a command in another's name.
"""

from __future__ import annotations

import grp
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from controller.app.command_channel import DEFAULT_SOCKET
from controller.app.terminal import console, errors
from controller.core.domain import InspectionOutcome, ReviewOutcome

ANSWER_TIMEOUT_S = 10.0
"""A command is journalled before it is answered; that takes milliseconds, not seconds."""
_MAX_ANSWER = 1024 * 1024


class ChannelUnavailableError(Exception):
    """No answer could be had: nobody listening, no permission, no reply in time."""


def _unavailable_because(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return f"no controller is listening on {path} — is `cargogate run` running?"
    if isinstance(exc, PermissionError):
        try:
            group = grp.getgrgid(os.stat(path).st_gid).gr_name
        except (OSError, KeyError):
            group = "the socket's group"
        return (
            f"you may not give commands on {path}: ask for your account to be added to the "
            f"operators group ({group})"
        )
    if isinstance(exc, TimeoutError):
        return f"the controller on {path} did not answer within {ANSWER_TIMEOUT_S:g} s"
    return f"cannot talk to the controller on {path}: {exc.strerror or exc}"


def send(path: Path, command: dict[str, Any], timeout_s: float = ANSWER_TIMEOUT_S) -> Any:
    """Send one command line and return the decoded answer line.

    Blocking on purpose: a CLI run gives one command and waits for its one answer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(json.dumps(command).encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)  # one command: the controller may close after it
            answer = bytearray()
            while b"\n" not in answer and len(answer) < _MAX_ANSWER:
                chunk = sock.recv(64 * 1024)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        raise ChannelUnavailableError(_unavailable_because(path, exc)) from None
    text = bytes(answer).split(b"\n", 1)[0]
    if not text:
        raise ChannelUnavailableError(f"the controller on {path} closed the connection unanswered")
    try:
        return json.loads(text)
    except ValueError:
        raise ChannelUnavailableError(
            f"{path} answered something that is not the command channel: {text[:80]!r}"
        ) from None


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _give(path: Path, command: dict[str, Any]) -> None:
    """Send, print the answer, exit 0 accepted / 1 refused / 2 not given."""
    try:
        answer = send(path, command)
    except ChannelUnavailableError as exc:
        errors.print(f"[red]not sent:[/red] {escape(str(exc))}")
        raise typer.Exit(code=2) from None
    if isinstance(answer, dict) and "accepted" in answer:
        message = escape(str(answer.get("message", "")))
        if answer["accepted"] is True:
            console.print(f"[green]accepted[/green]  {message}")
            return
        console.print(f"[red]refused[/red]  {message}")
        raise typer.Exit(code=1)
    if isinstance(answer, dict) and "error" in answer:
        field = answer.get("field")
        where = f"{field} {_shown(answer.get('value'))}: " if field else ""
        errors.print(f"[red]not accepted:[/red] {escape(where + str(answer['error']))}")
        raise typer.Exit(code=2)
    errors.print(f"[red]not understood:[/red] the controller answered {escape(_shown(answer))}")
    raise typer.Exit(code=2)


SocketOption = Annotated[
    Path,
    typer.Option(
        "--socket",
        help="The controller's command socket (the site file's commands.socket).",
        envvar="CARGOGATE_SOCKET",
    ),
]
Hawb = Annotated[str, typer.Argument(help="The air waybill number (HAWB), e.g. 123-45678901.")]
Line = Annotated[str, typer.Argument(help="The sorter line, as the site file names it, e.g. L1.")]
TrackingId = Annotated[
    int, typer.Argument(help="The sorter's tracking id of the parcel (on the line's screen).")
]
Note = Annotated[str, typer.Option(help="Anything the next person should know.")]


def hold(
    hawb: Hawb,
    reason: Annotated[str, typer.Option(help="Why (required), e.g. 'intel tip'.")],
    socket_path: SocketOption = DEFAULT_SOCKET,
) -> None:
    """Hold a shipment: no parcel of this HAWB is released until the hold is lifted.

    Held parcels go to the inspection lane instead. Your login name and the reason are recorded.
    """
    _give(socket_path, {"command": "hold", "hawb": hawb, "reason": reason})


def lift(
    hawb: Hawb,
    reason: Annotated[str, typer.Option(help="Why the hold can go (required).")],
    socket_path: SocketOption = DEFAULT_SOCKET,
) -> None:
    """Lift the hold on a shipment: its parcels may be released again.

    Refused (exit 1) if this HAWB has no hold. Your login name and the reason are recorded.
    """
    _give(socket_path, {"command": "lift", "hawb": hawb, "reason": reason})


def inspect(
    hawb: Hawb,
    outcome: Annotated[
        InspectionOutcome,
        typer.Option(help="What you found: cleared, seized, or referred for further checks."),
    ],
    note: Note = "",
    socket_path: SocketOption = DEFAULT_SOCKET,
) -> None:
    """Record what you found when you opened a parcel at the inspection station.

    Applies to the oldest parcel of this HAWB waiting at inspection, and closes it.
    """
    command = {"command": "inspect", "hawb": hawb, "outcome": outcome.value, "note": note}
    _give(socket_path, command)


def verdict(
    line: Line,
    tracking_id: TrackingId,
    outcome: Annotated[
        ReviewOutcome,
        typer.Argument(help="clear: let it be released; inspect: send it to inspection."),
    ],
    note: Note = "",
    socket_path: SocketOption = DEFAULT_SOCKET,
) -> None:
    """Give your on-screen review of a parcel still on its way to the divert.

    Counts only if it reaches the controller before the parcel's decision is taken.
    """
    command = {
        "command": "verdict",
        "line": line,
        "tracking_id": tracking_id,
        "outcome": outcome.value,
        "note": note,
    }
    _give(socket_path, command)


def ack(
    source: Annotated[str, typer.Argument(help="The alarm's source, as the alarm list shows it.")],
    comment: Annotated[str, typer.Option(help="What was done about it.")] = "",
    socket_path: SocketOption = DEFAULT_SOCKET,
) -> None:
    """Acknowledge an alarm: you have seen it and are dealing with it."""
    _give(socket_path, {"command": "ack", "source": source, "comment": comment})


def close(
    line: Line,
    tracking_id: TrackingId,
    reason: Annotated[str, typer.Option(help="Why (required), e.g. 'found off the belt'.")],
    socket_path: SocketOption = DEFAULT_SOCKET,
) -> None:
    """Close a parcel as an exception: found off the belt, damaged, label torn off.

    The parcel is taken out of the flow for good; your login name and the reason are recorded.
    """
    command = {"command": "close", "line": line, "tracking_id": tracking_id, "reason": reason}
    _give(socket_path, command)


VERBS: dict[str, Callable[..., None]] = {
    "hold": hold,
    "lift": lift,
    "inspect": inspect,
    "verdict": verdict,
    "ack": ack,
    "close": close,
}


_PANEL = "Floor commands (a running controller)"
_EXITS = "Exit code 0: accepted; 1: refused (the message says why); 2: not sent, see the message."


def register(app: typer.Typer) -> None:
    """Add the floor commands to ``app`` (the ``cargogate`` CLI), grouped in its ``--help``."""
    for name, verb in VERBS.items():
        app.command(name, rich_help_panel=_PANEL, epilog=_EXITS)(verb)
