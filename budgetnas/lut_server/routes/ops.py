"""Operations: health and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import Field
from sqlalchemy import func, select, text
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.db.models import Job
from budgetnas.lut_server.state import check_read, state_of

router = APIRouter(tags=["operations"])


class HealthOut(TypedDict):
    status: Annotated[str, Field(description="ok, or degraded (HTTP 503)")]
    db: Annotated[str, Field(description="ok, or error: <its type>")]


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut, "description": "degraded"}})
def healthz(request: Request) -> Response:
    st = state_of(request)
    try:
        with st.db.session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure is reported, not raised: this is the probe
        return JSONResponse({"status": "degraded", "db": f"error: {type(exc).__name__}"}, status_code=503)
    return JSONResponse({"status": "ok", "db": "ok"})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    st = state_of(request)
    check_read(st, request)  # a read like any other: closed under BUDGETNAS_READS_REQUIRE_TOKEN
    with st.db.session() as s:
        jobs: dict[tuple[tuple[str, str], ...], float] = {(("state", str(state)),): float(n)
                                                          for state, n in s.execute(
                                                              select(Job.state, func.count()).group_by(Job.state))}
    return PlainTextResponse(st.metrics.render({"budgetnas_jobs": jobs}),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
