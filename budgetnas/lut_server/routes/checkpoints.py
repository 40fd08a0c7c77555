"""Generator checkpoints and ``/v1/generate`` (served by budgetnas.generator.bundle, numpy only)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, NotRequired

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.core.errors import DataFileError
from budgetnas.core.jsonlimits import check_json, shown_json
from budgetnas.db import repo
from budgetnas.db.models import NAME_LEN
from budgetnas.generator.bundle import GeneratorBundle
from budgetnas.lut_server.params import Line, Seed
from budgetnas.lut_server.state import AppState, admin_first, check_read, state_of
from budgetnas.lut_server.uploads import json_body, json_body_schema, read_body

router = APIRouter(prefix="/v1", tags=["generation"])
GENERATORS_KEPT = 4  # bundles in memory: /v1/generate is a read, so any client can ask for each checkpoint


class CheckpointIn(BaseModel):
    name: Line = Field(min_length=1, max_length=NAME_LEN)
    bundle: str = Field(min_length=1, description="base64 of the torch-free generator bundle")


class GenerateIn(BaseModel):
    checkpoint: int | Annotated[Line, Field(min_length=1, max_length=NAME_LEN)] = Field(description="id or name")
    budget: float = Field(allow_inf_nan=False)
    samples: int = Field(default=0, ge=0, le=1000)
    seed: Seed | None = None


class CheckpointOut(TypedDict):
    id: int
    name: str
    meta: Annotated[dict[str, Any], Field(description="the bundle's meta (space, budget_range, training, ...)")]


class CheckpointListedOut(CheckpointOut):
    created: str | None


class CheckpointsOut(TypedDict):
    checkpoints: list[CheckpointListedOut]


class SampleOut(TypedDict):
    arch: str
    latency_ms: float | None


class GenerateOut(TypedDict):
    """``GeneratorBundle.generate`` of budgetnas.generator.bundle: ``warning`` and ``samples`` only where given."""

    arch: str
    latency_ms: float
    accuracy: float
    warning: NotRequired[str]
    samples: NotRequired[Annotated[list[SampleOut], Field(description="with samples > 0")]]


def _load(data: bytes) -> GeneratorBundle:
    try:
        return GeneratorBundle.from_bytes(data)
    except (ValueError, KeyError, TypeError, OSError) as exc:  # DataFileError is a ValueError too
        raise DataFileError(f"bundle: {exc}") from None


@router.post("/checkpoints", status_code=201, dependencies=[Depends(admin_first)],
             openapi_extra=json_body_schema(CheckpointIn), response_model=CheckpointOut)
async def create(request: Request) -> dict[str, Any]:
    st = state_of(request)
    raw, _ = await read_body(request)  # only once the admin token was accepted (budgetnas.lut_server.uploads)
    return await run_in_threadpool(_store, st, json_body(raw, CheckpointIn))


def _store(st: AppState, body: CheckpointIn) -> dict[str, Any]:
    try:
        data = base64.b64decode(body.bundle, validate=True)
    except (binascii.Error, ValueError):
        raise DataFileError("bundle: not valid base64") from None
    meta = dict(_load(data).meta)
    check_json(meta, "bundle: meta")
    with st.db.session(write=True) as s:
        ck = repo.create_checkpoint(s, body.name, data, meta)
        return {"id": ck.id, "name": ck.name, "meta": ck.meta}


@router.get("/checkpoints", response_model=CheckpointsOut)
def list_checkpoints(request: Request) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        rows = repo.list_checkpoints(s)
    return {"checkpoints": [{**r, "meta": shown_json(r["meta"]), "created": repo.iso(r["created"])} for r in rows]}


def _bundle(st: AppState, ref: int | str) -> Any:
    with st.db.session() as s:
        ck_id, sha = repo.find_checkpoint(s, ref)
        with st.generator_lock:
            hit = st.generators.get(ck_id)
            if hit is not None and hit[0] == sha:
                st.generators.move_to_end(ck_id)
                return hit[1]
        data = repo.checkpoint_bundle(s, ck_id)
    bundle = _load(data)
    with st.generator_lock:
        st.generators[ck_id] = (sha, bundle)
        st.generators.move_to_end(ck_id)
        while len(st.generators) > GENERATORS_KEPT:
            st.generators.popitem(last=False)
    return bundle


@router.post("/generate", response_model=GenerateOut)
def generate(body: GenerateIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    out: dict[str, Any] = _bundle(st, body.checkpoint).generate(body.budget, samples=body.samples, seed=body.seed)
    return out
