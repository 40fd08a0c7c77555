"""The FastAPI app factory: one settings object in, an app out (stateless; share one PostgreSQL)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from budgetnas.core.errors import (
    AuthError,
    BudgetNASError,
    ConflictError,
    MissingKeysError,
    NotFoundError,
    PermissionDeniedError,
)
from budgetnas.db.changes import watch_for
from budgetnas.db.session import Database, migrate
from budgetnas.lut_server.metrics import Metrics
from budgetnas.lut_server.predictor import PredictorCache
from budgetnas.lut_server.routes import ROUTERS
from budgetnas.lut_server.settings import Settings
from budgetnas.lut_server.state import AppState

STATIC = Path(__file__).resolve().parent / "static"

# most specific first: the first class an error is an instance of gives its status
ERROR_STATUS: tuple[tuple[type[BudgetNASError], int], ...] = (
    (AuthError, 401), (PermissionDeniedError, 403), (NotFoundError, 404), (ConflictError, 409),
    (MissingKeysError, 422), (BudgetNASError, 422),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app(settings: Settings | None = None, freeze_gc: bool = False) -> FastAPI:
    """The app; ``freeze_gc``: exempt what exists at startup from the garbage collector (a server
    process's choice: objects frozen there are never collected, so not for apps made and dropped)."""
    settings = settings or Settings()
    if settings.migrate_on_start:
        migrate(settings.db_url)
    watch = watch_for(settings.db_url) if settings.predict_change_watch else None
    st = AppState(settings=settings, db=Database(settings.db_url, pool_size=settings.db_pool_size),
                  predictors=PredictorCache(settings.predictor_cache_luts, settings.predict_revision_ttl, watch))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if freeze_gc:  # the framework, routes and models live as long as the process: a full collection
            gc.collect()  # need not walk them again (130k objects, ~100 ms of some request's latency)
            gc.freeze()
        yield
        st.predictors.close()
        st.db.dispose()

    app = FastAPI(title="budgetnas LUT server", version="1", lifespan=lifespan,
                  description="Latency LUTs, measurement campaigns and job leases, predictions, "
                              "accuracy records and architecture generation (docs/rest.md).")
    app.state.budgetnas = st
    # Our routers carry only a prefix and tags, both already in their routes, so the routes are mounted
    # as the app's own (as ``@app.post`` mounts them), first: ``include_router`` would dispatch each
    # request through FastAPI's lazily included router, 20-30% of a warm single-arch predict's CPU.
    app.router.routes[0:0] = [route for router in ROUTERS for route in router.routes]
    if (STATIC / "dashboard.html").is_file():
        @app.get("/dashboard/", include_in_schema=False)
        def dashboard() -> FileResponse:
            return FileResponse(STATIC / "dashboard.html", media_type="text/html")

        app.mount("/dashboard", StaticFiles(directory=STATIC), name="dashboard")
    _error_handlers(app)
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes)
    app.add_middleware(Measure, metrics=st.metrics)
    return app


def serve_app() -> FastAPI:
    """The app of ``budgetnas serve``'s uvicorn workers: settings from the environment, GC frozen at start."""
    return create_app(freeze_gc=True)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BudgetNASError)
    async def _domain(_: Request, exc: BudgetNASError) -> Response:
        status = next(code for cls, code in ERROR_STATUS if isinstance(exc, cls))
        body: dict[str, Any] = {"detail": str(exc)}
        if isinstance(exc, MissingKeysError):
            body["missing_keys"] = exc.keys
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:5]:
            if err.get("type") == "json_invalid":
                parts.append(f"body: malformed JSON at character {err['loc'][-1]}: "
                             f"{(err.get('ctx') or {}).get('error', 'invalid')}")
                continue
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> Response:
        # a concurrent request stored the same thing first (unique constraints are the last guard)
        return JSONResponse({"detail": f"conflict: {str(exc.orig).splitlines()[0]}"}, status_code=409)

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> Response:
        # e.g. a NUL character in a string for PostgreSQL, a number outside a column's range
        return JSONResponse({"detail": f"body: a value cannot be stored: {str(exc.orig).splitlines()[0]}"},
                            status_code=422)

    @app.exception_handler(OperationalError)
    async def _busy(_: Request, exc: OperationalError) -> Response:
        return JSONResponse({"detail": f"database unavailable: {str(exc.orig).splitlines()[0]}"}, status_code=503,
                            headers={"Retry-After": "1"})


class BodyLimit:
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.max_upload if path.startswith(("/v1/artifacts/", "/v1/checkpoints")) else self.max_body
        length, chunked = None, False
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = v
            elif k == b"transfer-encoding":
                chunked = True
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_json(send, 413, {"detail": f"body: larger than the limit of {limit} bytes"})
            return
        if length is not None and not chunked:
            # the server frames such a body by its Content-Length (uvicorn's parsers do): it cannot be
            # longer, so only a streamed body needs counting
            await self.app(scope, receive, send)
            return
        seen, refused = 0, False

        async def limited() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > limit:  # answer now; the app then sees a disconnect and its reply is dropped
                refused = True
                await _send_json(send, 413, {"detail": f"body: larger than the limit of {limit} bytes"})
                return {"type": "http.disconnect"}
            return msg

        async def guarded(msg: Message) -> None:
            if not refused:
                await send(msg)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not refused:
                raise


class Measure:
    """Counts requests and their latency by route template (not raw path: bounded label sets)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def send_status(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/dashboard" if scope["path"].startswith("/dashboard")
                                                        else "unmatched")
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - t0)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
