"""The HTTP API under ``/api/v1``: read the floor, act on it, search the audit.

Reads come from the site's snapshot (taken on the loop in one go, never blocking it) or
from the audit log (searched in a thread). Every action is an operator command executed by
the controller, which journals it with the logged-in user before it takes effect; a refused
command is a 409 with the controller's reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from controller.console.auth import COOKIE, Session, requires
from controller.console.context import ConsoleContext
from controller.console.export import records_csv
from controller.console.images import Energy
from controller.console.live import TooManyClientsError
from controller.console.schemas import (
    AckIn,
    AlarmOut,
    AuditPageOut,
    CloseIn,
    CommandOut,
    ErrorOut,
    HealthOut,
    HoldIn,
    HoldOut,
    InspectionIn,
    InspectionOut,
    KpisOut,
    LiftIn,
    LineOut,
    LoginIn,
    OverviewOut,
    ParcelOut,
    ReasonListOut,
    ReasonOut,
    RecordOut,
    ReviewOut,
    SessionOut,
    VerdictIn,
    severity,
)
from controller.core.audit import MAX_LIMIT, AuditQuery, AuditRecord
from controller.core.commands import (
    AcknowledgeAlarm,
    Command,
    ForceClose,
    LiftHold,
    PlaceHold,
    RecordInspection,
    RecordVerdict,
)
from controller.core.domain import EntryKind
from controller.core.lifecycle import TERMINAL_STATES
from controller.core.reasons import Reason
from controller.core.users import Permission

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "not allowed"},
    422: {"model": ErrorOut, "description": "a request field is wrong; `field` names it"},
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "refused by the controller; the message says why"}
}
_LinePath = Annotated[str, Path(min_length=1, max_length=16)]
_TrackingPath = Annotated[int, Path(ge=0, le=0xFFFFFFFF)]
_Line = Annotated[str | None, Query(max_length=16)]
_Since = Annotated[datetime | None, Query(description="ISO-8601; naive times are UTC")]
_Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
_Offset = Annotated[int, Query(ge=0, le=10_000_000)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no journal entry"}
}
_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}
log = logging.getLogger(__name__)

MAX_EXPORT = 1_000_000
"""The most rows one CSV download carries."""
_CLOSED_STATES = frozenset(str(state) for state in TERMINAL_STATES)

Viewer = Annotated[Session, Depends(requires(Permission.VIEW))]
Acknowledger = Annotated[Session, Depends(requires(Permission.ACKNOWLEDGE))]
Holder = Annotated[Session, Depends(requires(Permission.HOLD))]
Closer = Annotated[Session, Depends(requires(Permission.CLOSE))]
Reviewer = Annotated[Session, Depends(requires(Permission.REVIEW))]
Inspector = Annotated[Session, Depends(requires(Permission.INSPECT))]
Auditor = Annotated[Session, Depends(requires(Permission.AUDIT))]


def router(ctx: ConsoleContext) -> APIRouter:
    """Every ``/api/v1`` route, bound to ``ctx``."""
    api = APIRouter(prefix="/api/v1", responses=_ERRORS)

    # --- health and sessions ------------------------------------------------------------

    @api.get("/health", tags=["health"], responses={503: {"model": HealthOut}})
    async def health(response: Response) -> HealthOut:
        """Liveness and readiness: ``ok`` when every link is up, ``degraded`` when one is
        not (503), ``starting`` before the site has recovered its state (503)."""
        if not ctx.ready():
            response.status_code = 503
            return HealthOut(status="starting")
        links = ctx.current()[0].links
        ok = all(state == "up" for state in links.values())
        if not ok:
            response.status_code = 503
        return HealthOut(status="ok" if ok else "degraded", links=links)

    @api.post("/session", tags=["session"], responses={429: {"description": "too many tries"}})
    async def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
        """Log in: sets the session cookie; send ``csrf`` back in ``X-CSRF-Token``. A session
        the browser still held is closed (a shared station changes hands)."""
        client = request.client.host if request.client else "unknown"
        session = await ctx.sessions.login(body.user, body.password, client)
        ctx.sessions.logout(request.cookies.get(COOKIE))
        response.set_cookie(
            COOKIE,
            session.token,
            max_age=int(ctx.sessions.lifetime.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=ctx.settings.tls,
            path="/",
        )
        response.headers["Cache-Control"] = "no-store"
        return _session_out(session, ctx.current()[0].site)

    @api.get("/session", tags=["session"])
    async def whoami(session: Viewer, response: Response) -> SessionOut:
        response.headers["Cache-Control"] = "no-store"  # it carries the CSRF token
        return _session_out(session, ctx.current()[0].site)

    @api.delete("/session", tags=["session"], status_code=204)
    async def logout(request: Request, response: Response, _: Viewer) -> None:
        ctx.sessions.logout(request.cookies.get(COOKIE))
        response.delete_cookie(COOKIE, path="/")

    # --- the floor ----------------------------------------------------------------------

    @api.get("/overview", tags=["floor"], response_model=OverviewOut)
    async def overview(_: Viewer) -> Response:
        """The whole floor at this moment (what the live stream sends every tick)."""
        return Response(ctx.current()[1], media_type="application/json")

    @api.get(
        "/live",
        tags=["floor"],
        response_class=StreamingResponse,
        responses={503: {"description": "too many live clients"}},
    )
    async def live(request: Request, _: Viewer) -> StreamingResponse:
        """Server-Sent Events: the overview now and at every tick. A browser that falls
        behind is dropped (its EventSource reconnects)."""
        try:
            token = request.cookies.get(COOKIE)
            events = ctx.broadcaster.events(lambda: ctx.sessions.peek(token) is not None)
        except TooManyClientsError as exc:
            raise HTTPException(503, str(exc)) from None
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    @api.get("/lines", tags=["floor"])
    async def lines(_: Viewer) -> list[LineOut]:
        return ctx.current()[0].lines

    @api.get("/kpis", tags=["floor"])
    async def kpis(_: Viewer) -> KpisOut:
        return ctx.current()[0].kpis

    # --- alarms -------------------------------------------------------------------------

    @api.get("/alarms", tags=["alarms"])
    async def alarms(_: Viewer) -> list[AlarmOut]:
        """Active alarms, oldest first."""
        return ctx.current()[0].alarms

    @api.get("/alarms/history", tags=["alarms"], response_model=AuditPageOut, responses=_CSV)
    async def alarm_history(
        _: Viewer,
        line: _Line = None,
        severity_is: Annotated[
            str | None, Query(alias="severity", pattern="^(critical|warning|info)$")
        ] = None,
        since: _Since = None,
        until: _Since = None,
        text: Annotated[str | None, Query(max_length=200)] = None,
        limit: _Limit = 200,
        offset: _Offset = 0,
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ) -> Response | AuditPageOut:
        """Alarms raised and cleared, newest first; ``format=csv`` downloads them all."""
        query = AuditQuery(
            since=_utc(since),
            until=_utc(until),
            kinds=(EntryKind.ALARM,),
            line=line,
            text=text,
            limit=limit,
            offset=offset,
        )

        def keep(record: AuditRecord) -> bool:
            return severity_is is None or _severity_of(record) == severity_is

        if format == "csv":
            return _csv(ctx, query, "alarms", keep)
        if severity_is is None:
            page = await ctx.audit.search(query)
            return AuditPageOut(total=page.total, records=[RecordOut.of(r) for r in page.records])
        # severity is derived from the alarm's source: filter the latest alarms, then page
        latest = await ctx.audit.search(replace(query, limit=MAX_LIMIT, offset=0))
        kept = [r for r in latest.records if keep(r)]
        return AuditPageOut(
            total=len(kept), records=[RecordOut.of(r) for r in kept[offset : offset + limit]]
        )

    @api.post("/alarms/ack", tags=["alarms"], responses=_REFUSED)
    async def acknowledge(body: AckIn, session: Acknowledger) -> CommandOut:
        return await _execute(
            AcknowledgeAlarm(user=session.user, source=body.source, comment=body.comment)
        )

    # --- parcels --------------------------------------------------------------------------

    @api.get("/parcels/open", tags=["parcels"])
    async def open_parcels(
        _: Viewer,
        line: _Line = None,
        state: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[ParcelOut]:
        """Open parcels, oldest first, on ``line`` and in ``state`` (e.g. ``in_inspection``)
        when given."""
        at = ctx.moment()
        return [ParcelOut.of(p, at) for p in ctx.parcels(line or None, state, limit)]

    @api.get("/reasons", tags=["parcels"])
    async def reasons(_: Viewer) -> ReasonListOut:
        """Every reason code a decision or closure may carry, with its name."""
        return ReasonListOut(reasons=[ReasonOut(code=r.value, name=r.name) for r in Reason])

    @api.get("/parcels/{hawb}", tags=["parcels"], responses=_NOT_FOUND)
    async def trace(hawb: str, _: Viewer) -> list[RecordOut]:
        """Track and trace: every journal entry of the HAWB, oldest first."""
        _check_hawb(hawb)
        page = await ctx.audit.search(AuditQuery(hawb=hawb, limit=MAX_LIMIT))
        if not page.records:
            raise HTTPException(404, f"no journal entry for HAWB {hawb!r}")
        return [RecordOut.of(r) for r in reversed(page.records)]

    @api.get("/lines/{line}/parcels/{tracking_id}", tags=["parcels"], responses=_NOT_FOUND)
    async def trace_tracking(
        line: _LinePath, tracking_id: _TrackingPath, _: Viewer
    ) -> list[RecordOut]:
        """Track and trace by the PLC's tracking id on a line, oldest first."""
        query = AuditQuery(line=line, tracking_id=tracking_id, limit=MAX_LIMIT)
        page = await ctx.audit.search(query)
        if not page.records:
            raise HTTPException(404, f"no journal entry for tracking id {tracking_id} on {line!r}")
        return [RecordOut.of(r) for r in reversed(page.records)]

    @api.post("/lines/{line}/parcels/{tracking_id}/close", tags=["parcels"], responses=_REFUSED)
    async def close(
        line: _LinePath,
        tracking_id: _TrackingPath,
        body: CloseIn,
        session: Closer,
    ) -> CommandOut:
        """Close a parcel found off the belt as exception."""
        return await _execute(
            ForceClose(user=session.user, line=line, tracking_id=tracking_id, reason=body.reason)
        )

    # --- holds ----------------------------------------------------------------------------

    @api.get("/holds", tags=["holds"])
    async def holds(_: Viewer) -> list[HoldOut]:
        at = ctx.moment()
        return [HoldOut.of(hold, at) for hold in ctx.read().holds]

    @api.post("/holds", tags=["holds"], responses=_REFUSED)
    async def place_hold(body: HoldIn, session: Holder) -> CommandOut:
        return await _execute(PlaceHold(user=session.user, hawb=body.hawb, reason=body.reason))

    @api.post("/holds/{hawb}/lift", tags=["holds"], responses=_REFUSED)
    async def lift_hold(hawb: str, body: LiftIn, session: Holder) -> CommandOut:
        _check_hawb(hawb)
        return await _execute(LiftHold(user=session.user, hawb=hawb, reason=body.reason))

    # --- officers -------------------------------------------------------------------------

    @api.get("/reviews", tags=["officers"])
    async def reviews(_: Viewer) -> list[ReviewOut]:
        """Parcels waiting for an officer's verdict, least time left first (as of the
        overview's ``taken_at``, at most one live tick ago)."""
        return ctx.current()[0].reviews

    @api.post("/lines/{line}/parcels/{tracking_id}/verdict", tags=["officers"], responses=_REFUSED)
    async def verdict(
        line: _LinePath,
        tracking_id: _TrackingPath,
        body: VerdictIn,
        session: Reviewer,
    ) -> CommandOut:
        """An officer's on-screen verdict, while the parcel is still on its way."""
        command = RecordVerdict(
            user=session.user,
            line=line,
            tracking_id=tracking_id,
            outcome=body.outcome,
            note=body.note,
            hawb=body.hawb,
        )
        return await _execute(command)

    @api.get(
        "/images/{hawb}",
        tags=["officers"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {"description": "no image kept"}},
    )
    async def image(
        hawb: str,
        _: Viewer,
        tracking_id: Annotated[int, Query(ge=0, le=0xFFFFFFFF)],
        energy: Annotated[Energy, Query()] = "high",
    ) -> Response:
        """The scanner's image of one parcel (its HAWB and tracking id: a HAWB may cover
        several pieces) as an 8-bit PNG of one energy."""
        _check_hawb(hawb)
        shelf = ctx.images
        png = (
            None if shelf is None else await asyncio.to_thread(shelf.png, hawb, tracking_id, energy)
        )
        if png is None:
            raise HTTPException(404, f"no image kept for HAWB {hawb!r}, tracking id {tracking_id}")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @api.post("/inspections", tags=["officers"], responses=_REFUSED)
    async def inspection(body: InspectionIn, session: Inspector) -> InspectionOut:
        """An inspection outcome: closes the oldest parcel of the HAWB waiting there."""
        command = RecordInspection(
            user=session.user, hawb=body.hawb, outcome=body.outcome, note=body.note
        )
        result = await _execute(command)
        try:
            page = await ctx.audit.search(AuditQuery(hawb=body.hawb, limit=MAX_LIMIT))
            clearance = _clearance_s(page.records) if page.records else None
        except Exception:  # the outcome is recorded: a failed look-up only loses the figure
            log.exception("clearance time of HAWB %s not found", body.hawb)
            clearance = None
        return InspectionOut(
            accepted=result.accepted, message=result.message, clearance_s=clearance
        )

    # --- the audit ------------------------------------------------------------------------

    @api.get("/audit", tags=["audit"], response_model=AuditPageOut, responses=_CSV)
    async def audit(
        _: Auditor,
        since: _Since = None,
        until: _Since = None,
        kind: Annotated[list[EntryKind] | None, Query()] = None,
        line: _Line = None,
        hawb: Annotated[str | None, Query(max_length=32)] = None,
        tracking_id: Annotated[int | None, Query(ge=0, le=0xFFFFFFFF)] = None,
        reason: Annotated[int | None, Query(ge=0, le=9999)] = None,
        user: Annotated[str | None, Query(max_length=64)] = None,
        text: Annotated[str | None, Query(max_length=200)] = None,
        limit: _Limit = 200,
        offset: _Offset = 0,
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ) -> Response | AuditPageOut:
        """Search decisions, operator actions and alarms, newest first; ``format=csv``
        downloads the page."""
        query = AuditQuery(
            since=_utc(since),
            until=_utc(until),
            kinds=tuple(kind or ()),
            line=line or None,
            hawb=hawb or None,
            tracking_id=tracking_id,
            reason=reason,
            user=user or None,
            text=text or None,
            limit=limit,
            offset=offset,
        )
        if format == "csv":
            return _csv(ctx, query, "audit")
        page = await ctx.audit.search(query)
        return AuditPageOut(total=page.total, records=[RecordOut.of(r) for r in page.records])

    async def _execute(command: Command) -> CommandOut:
        # shielded: a browser that goes away (or a console that stops) mid-command must not
        # leave a command journalled as accepted with its effect never applied
        result = await asyncio.shield(ctx.commands.execute(command))
        if not result.accepted:
            raise HTTPException(409, result.message)
        return CommandOut(accepted=True, message=result.message)

    return api


def _session_out(session: Session, site: str) -> SessionOut:
    return SessionOut(
        site=site,
        user=session.user,
        role=session.role,
        permissions=session.permissions,
        csrf=session.csrf,
        expires_at=session.expires_at,
    )


def _check_hawb(hawb: str) -> None:
    if not 1 <= len(hawb) <= 32 or not all("\x21" <= c <= "\x7e" for c in hawb):
        raise HTTPException(422, f"HAWB {hawb[:40]!r} is not 1–32 printable ASCII characters")


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _severity_of(record: AuditRecord) -> str:
    source = record.data.get("source", "")
    return severity(source if isinstance(source, str) else "")


def _clearance_s(records: tuple[AuditRecord, ...]) -> float:
    """Controller seconds from the closed parcel's first entry to its closing entry."""
    ordered = sorted(records, key=lambda r: r.seq)
    closing = next(
        (r for r in reversed(ordered) if r.state_to in _CLOSED_STATES),
        ordered[-1],
    )
    first = next(
        r for r in ordered if (r.line, r.tracking_id) == (closing.line, closing.tracking_id)
    )
    return closing.ts - first.ts


def _csv(
    ctx: ConsoleContext,
    query: AuditQuery,
    name: str,
    keep: Callable[[AuditRecord], bool] | None = None,
) -> Response:
    """Every record the query matches from its offset on (not one page), as a CSV download
    streamed page by page; at most :data:`MAX_EXPORT` rows."""

    async def chunks() -> AsyncIterator[str]:
        page_query, sent, first = replace(query, limit=MAX_LIMIT), 0, True
        while sent < MAX_EXPORT:
            page = await ctx.audit.search(page_query)
            records = [r for r in page.records if keep is None or keep(r)]
            for n, chunk in enumerate(records_csv(records[: MAX_EXPORT - sent])):
                if n > 0 or first:  # the header once
                    yield chunk
            sent, first = sent + len(records), False
            if len(page.records) < MAX_LIMIT:
                return
            # keyset paging: rows written meanwhile never shift the pages still to come
            page_query = replace(page_query, offset=0, before_seq=page.records[-1].seq)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cargogate-{name}-{stamp}.csv"'},
    )
