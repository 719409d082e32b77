"""What people on the floor may tell the controller, as validated values.

Operators place and lift holds, acknowledge alarms and close a parcel found off the belt;
officers record review verdicts and inspection outcomes. Each command names who gives it and
why. The controller checks it against the lifecycle, journals it (accepted or refused) before
it takes effect, and answers with a :class:`CommandResult`. Commands arrive as JSON from the
command channel or the console, so they are pydantic models with a ``command`` tag.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from controller.core.domain import InspectionOutcome, ReviewOutcome

_User = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
_Hawb = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[\x21-\x7e]+$")]
_Why = Annotated[str, Field(min_length=1, max_length=500)]
_Note = Annotated[str, Field(max_length=500)]
_LineId = Annotated[str, Field(min_length=1, max_length=16)]
_TrackingId = Annotated[int, Field(ge=0, le=0xFFFFFFFF)]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user: _User
    """Who gives the command (the service account's user as the channel authenticated it)."""


class PlaceHold(_Command):
    """No parcel of ``hawb`` may be released until the hold is lifted."""

    command: Literal["hold"] = "hold"
    hawb: _Hawb
    reason: _Why


class LiftHold(_Command):
    command: Literal["lift"] = "lift"
    hawb: _Hawb
    reason: _Why


class RecordInspection(_Command):
    """An officer opened the oldest parcel of ``hawb`` waiting at inspection."""

    command: Literal["inspect"] = "inspect"
    hawb: _Hawb
    outcome: InspectionOutcome
    note: _Note = ""


class RecordVerdict(_Command):
    """An officer's on-screen review of a parcel still moving towards its divert."""

    command: Literal["verdict"] = "verdict"
    line: _LineId
    tracking_id: _TrackingId
    outcome: ReviewOutcome
    note: _Note = ""
    hawb: Annotated[str, Field(max_length=32, pattern=r"^[\x21-\x7e]*$")] = ""
    """The HAWB the officer saw; when given, a tracking id that now names another parcel
    refuses the verdict."""


class AcknowledgeAlarm(_Command):
    command: Literal["ack"] = "ack"
    source: Annotated[str, Field(min_length=1, max_length=200)]
    comment: _Note = ""


class ForceClose(_Command):
    """Close a parcel as exception (found off the belt, damaged, ...)."""

    command: Literal["close"] = "close"
    line: _LineId
    tracking_id: _TrackingId
    reason: _Why


Command = PlaceHold | LiftHold | RecordInspection | RecordVerdict | AcknowledgeAlarm | ForceClose
_TaggedCommand = Annotated[Command, Field(discriminator="command")]
COMMAND: TypeAdapter[Command] = TypeAdapter(_TaggedCommand)
"""Validates a command received as JSON: ``COMMAND.validate_python(data)``."""


class CommandResult(BaseModel):
    """The controller's answer: accepted (and journalled) or refused with the reason why."""

    model_config = ConfigDict(frozen=True)

    accepted: bool
    message: str
