"""Accuracy records: bulk upsert and query."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.core.errors import InvalidArchitectureError
from budgetnas.db import repo
from budgetnas.lut_server.params import Line
from budgetnas.lut_server.state import check_read, require_admin, state_of
from budgetnas.spaces import get_space

router = APIRouter(prefix="/v1/accuracy", tags=["accuracy"])


class RecordIn(BaseModel):
    arch: Line = Field(min_length=1, max_length=2000)
    dataset: Line = Field(min_length=1, max_length=100)
    metric: Line = Field(default="top1", min_length=1, max_length=50)
    value: float = Field(allow_inf_nan=False)
    source: Line = Field(default="", max_length=200)


class AccuracyIn(BaseModel):
    space: Line = Field(min_length=1, max_length=50)
    records: list[RecordIn] = Field(min_length=1, max_length=100_000)


class UpsertOut(TypedDict):
    inserted: int
    updated: int


class RecordOut(TypedDict):
    space: str
    arch: str
    dataset: str
    metric: str
    value: float
    source: str


class RecordsOut(TypedDict):
    records: list[RecordOut]
    total: Annotated[int, Field(description="records matching the filters, before limit and offset")]


@router.post("", response_model=UpsertOut)
def upsert(body: AccuracyIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    require_admin(st, request)
    sp = get_space(body.space)
    rows = []
    for i, r in enumerate(body.records):
        try:
            arch = sp.canonical(r.arch)
        except InvalidArchitectureError as exc:
            raise InvalidArchitectureError(f"records[{i}].arch: {exc}") from None
        rows.append({"arch": arch, "dataset": r.dataset, "metric": r.metric, "value": r.value, "source": r.source})
    with st.db.session(write=True) as s:
        inserted, updated = repo.upsert_accuracy(s, body.space, rows)
    return {"inserted": inserted, "updated": updated}


@router.get("", response_model=RecordsOut)
def query(request: Request, space: Line | None = None, dataset: Line | None = None, metric: Line | None = None,
          source: Line | None = None, limit: int = Query(1000, ge=1, le=100_000),
          offset: int = Query(0, ge=0, le=2**31 - 1)) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        records, total = repo.accuracy_records(s, space, dataset, metric, source, limit, offset)
    return {"records": records, "total": total}
