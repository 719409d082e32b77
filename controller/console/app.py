"""The console's FastAPI application, built from its collaborators by :func:`create_app`.

One app serves the API (``/api/v1``, OpenAPI at ``/api/v1/openapi.json``), the pages and
their assets (all shipped in ``static/``: the hub's network reaches no CDN), and
``/metrics`` for Prometheus. Every error is JSON ``{"error": ..., "field": ...}``; a bad
request is a 4xx, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.console import api
from controller.console.context import ConsoleContext
from controller.console.metrics import metrics_registry

log = logging.getLogger(__name__)

STATIC = Path(str(files("controller.console") / "static"))
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
"""Styles may be inline (the pages set widths and colours on elements); scripts may not."""
PAGES = ("overview", "review", "inspection", "alarms", "trace", "holds", "audit", "login")


def create_app(ctx: ConsoleContext) -> FastAPI:
    """The console for ``ctx``; serve it with uvicorn (see :mod:`controller.console.server`)."""
    app = FastAPI(
        title="CargoGate console API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN, which a hub network cannot reach
        redoc_url=None,
    )
    app.state.ctx = ctx

    @app.middleware("http")
    async def protect(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Every answer: only this site's own scripts, styles and frames (what the pages
        need, and nothing an injected string could pull in), no MIME sniffing, no referrer."""
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    app.include_router(api.router(ctx))
    _errors(app)
    registry = metrics_registry(ctx.read)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:  # on the loop: the collector reads live objects
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/overview")

    for page in PAGES:
        app.add_api_route(f"/{page}", _page(page), include_in_schema=False, methods=["GET"])
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


def _page(name: str) -> Callable[[], FileResponse]:
    path = STATIC / f"{name}.html"

    def page() -> FileResponse:
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    page.__name__ = f"page_{name}"
    return page


def _errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [
            str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")
        ]
        field = ".".join(where) or None
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            message, field = "the request body is not valid JSON", None  # loc is a position
        elif "input" in first and field:
            message = f"{field}: {message} (got {str(first['input'])[:80]!r})"
        return JSONResponse({"error": message, "field": field}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers 400 for a JSON body that is not UTF-8; any other bad JSON is 422
            return JSONResponse(
                {"error": "the request body is not valid JSON", "field": None}, status_code=422
            )
        return JSONResponse(
            {"error": str(exc.detail), "field": None},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("console: %s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the log has details", "field": None},
            status_code=500,
        )
