"""Transfers: a new device's LUT answered from the fleet's LUTs plus N whole models its agent measures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.db.models import BACKEND_LEN, NAME_LEN
from budgetnas.lut_server.params import IdField, Line, Seed
from budgetnas.lut_server.state import require_admin, state_of
from budgetnas.lut_server.transfer import create_transfer
from budgetnas.luts.transfer import MIN_MEASURED

router = APIRouter(prefix="/v1", tags=["transfers"])


class TransferIn(BaseModel):
    device: Line = Field(min_length=1, max_length=NAME_LEN)
    backend: Line = Field(min_length=1, max_length=BACKEND_LEN)
    sources: list[IdField] = Field(min_length=1, max_length=64)
    measure: int = Field(default=10, ge=MIN_MEASURED, le=1000)
    batch: int = Field(default=1, ge=1, le=4096)
    threads: int = Field(default=1, ge=0, le=1024)
    runtime_version: Line = Field(default="unknown", min_length=1, max_length=NAME_LEN)
    statistic: Literal["median", "mean", "min", "p90"] | None = Field(
        default=None, description="what the measured whole models give (default median; a reused LUT keeps "
                                  "its own)")
    selection: Literal["dopt", "random"] = "dopt"  # iopt is offline only (measured level with dopt)
    seed: Seed = 0


class TransferOut(TypedDict):
    lut_id: int
    jobs_created: int
    archs: Annotated[list[str], Field(description="the whole models the device's agent is to measure")]
    sources: list[int]


@router.post("/transfers", status_code=201, response_model=TransferOut)
def transfer(body: TransferIn, request: Request) -> dict[str, Any]:
    """Create (or reuse) the device's LUT as a transfer target and enqueue the N whole models to measure."""
    st = state_of(request)
    require_admin(st, request)
    with st.db.session(write=True) as s:
        return create_transfer(s, device=body.device, backend=body.backend, batch=body.batch, threads=body.threads,
                               runtime_version=body.runtime_version, statistic=body.statistic, sources=body.sources,
                               measure=body.measure, seed=body.seed, selection=body.selection)
