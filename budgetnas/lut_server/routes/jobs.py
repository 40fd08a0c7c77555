"""Job leases for device agents: lease, heartbeat, result (idempotent), fail (capped), release; heartbeats and
results of several jobs per call (``/v1/jobs/heartbeat``, ``/v1/jobs/results``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.core.errors import ConflictError, DataFileError
from budgetnas.db import queue, repo
from budgetnas.db.models import BACKEND_LEN, NAME_LEN, Job, Lut
from budgetnas.lut_server.params import IdField, IdPath, JsonObject, Line, StatsObject, Text
from budgetnas.lut_server.state import require_agent, state_of
from budgetnas.lut_server.views import JobOut, StatsOut, job_object
from budgetnas.luts.lut import LatencyStats

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class LeaseIn(BaseModel):
    device: Line = Field(min_length=1, max_length=NAME_LEN)
    backend: Line = Field(min_length=1, max_length=BACKEND_LEN)
    max_jobs: int = Field(default=1, ge=1, le=1000)
    lease_seconds: float | None = Field(default=None, gt=0)


LeaseId = Field(default=None, min_length=1, max_length=NAME_LEN,
                description="the lease_id the lease returned (required with an agent token)")


class JobHeartbeatIn(BaseModel):
    lease_seconds: float | None = Field(default=None, gt=0)
    lease_id: Line | None = LeaseId


class ReleaseIn(BaseModel):
    lease_id: Line | None = LeaseId


class ResultIn(BaseModel):
    idempotency_key: Line = Field(min_length=1, max_length=200)
    stats: StatsObject
    environment: JsonObject = Field(default_factory=dict)


class FailIn(BaseModel):
    error: Text = Field(min_length=1, max_length=10_000)
    output: Text = Field(default="", max_length=1_000_000)
    lease_id: Line | None = LeaseId


class LeaseOut(TypedDict):
    jobs: Annotated[list[JobOut], Field(description="empty when nothing is queued")]


class LeaseKeptOut(TypedDict):
    id: int
    lease_expires: str | None


class LeaseLostOut(TypedDict):
    id: int
    lost: Annotated[str, Field(description="why the lease is lost")]


class ResultOut(TypedDict):
    id: int
    state: Annotated[str, Field(description="done (a result of a job done before: stored false)")]
    stored: bool
    stats: StatsOut | None


class ResultsOut(TypedDict):
    results: Annotated[list[ResultOut], Field(description="in request order")]


class HeartbeatsOut(TypedDict):
    leases: Annotated[list[LeaseKeptOut | LeaseLostOut], Field(description="in request order")]


class JobStateOut(TypedDict):
    id: int
    state: Annotated[str, Field(description="queued or failed")]
    attempts: int


def _lease_seconds(request: Request, asked: float | None) -> float:
    st = state_of(request).settings
    return min(asked or st.default_lease_seconds, st.max_lease_seconds)


@router.post("/lease", response_model=LeaseOut)
def lease(body: LeaseIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    with st.db.session(write=True) as s:
        require_agent(st, request, s, device_name=body.device)
        dev = repo.get_device(s, body.device)
        got = queue.lease(s, dev, body.backend, body.max_jobs, _lease_seconds(request, body.lease_seconds),
                          st.settings.max_attempts)
        return {"jobs": [job_object(j, lut) for j, lut in got]}


@router.post("/{job_id}/heartbeat", response_model=LeaseKeptOut)
def heartbeat(job_id: IdPath, request: Request, body: JobHeartbeatIn | None = None) -> dict[str, Any]:
    st = state_of(request)
    with st.db.session(write=True) as s:
        dev = require_agent(st, request, s)
        job = queue.heartbeat(s, job_id, dev, _lease_seconds(request, body.lease_seconds if body else None),
                              body.lease_id if body else None)
        return {"id": job.id, "lease_expires": repo.iso(job.lease_expires)}


def _parsed_stats(stats: dict[str, Any], field: str) -> LatencyStats:
    try:
        return LatencyStats.from_dict(stats)
    except DataFileError as exc:
        raise DataFileError(f"{field}: {exc}") from None


def _store(s: Session, stats: LatencyStats, environment: dict[str, Any]) -> queue.ResultStore:
    """What a result keeps: the LUT entry (block) or the whole-model measurement (model)."""

    def store(job: Job, lut: Lut) -> dict[str, Any]:
        kept = stats.to_dict(samples=False)
        try:  # an entry without the LUT's statistic would make the whole LUT unusable
            latency = stats.value(lut.statistic)
        except DataFileError as exc:
            raise DataFileError(f"stats: {exc}") from None
        if job.kind == "block":
            assert job.key is not None
            if repo.entry_exists(s, lut.id, job.key):
                raise ConflictError(f"job: LUT {lut.id} already has an entry for key {job.key}")
            repo.add_entry(s, lut.id, job.key, stats.to_dict(samples=True), job.id)
        else:
            assert job.arch is not None
            repo.add_model_measurement(s, lut.id, job.arch, kept, latency, job_id=job.id)
        if environment and not lut.meta.get("environment"):
            lut.meta = {**lut.meta, "environment": environment}
        return {"stats": kept, "environment": environment}

    return store


def _result_object(job: Job, stored: bool) -> dict[str, Any]:
    return {"id": job.id, "state": job.state, "stored": stored, "stats": (job.result or {}).get("stats")}


@router.post("/{job_id}/result", response_model=ResultOut)
def result(job_id: IdPath, body: ResultIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    stats = _parsed_stats(body.stats, "stats")
    with st.db.session(write=True) as s:
        dev = require_agent(st, request, s)
        job, stored = queue.submit_result(s, job_id, dev, body.idempotency_key, _store(s, stats, body.environment))
        if stored:
            st.predictors.invalidate(job.lut_id)
        return _result_object(job, stored)


class ResultItemIn(ResultIn):
    job: IdField


class ResultsIn(BaseModel):
    results: list[ResultItemIn] = Field(min_length=1, max_length=queue.MAX_BATCH)


@router.post("/results", response_model=ResultsOut)
def results(body: ResultsIn, request: Request) -> dict[str, Any]:
    """Several results in one transaction: all stored or none (an error names ``results[i]``), in request order."""
    st = state_of(request)
    stats = [_parsed_stats(r.stats, f"results[{i}].stats") for i, r in enumerate(body.results)]
    with st.db.session(write=True) as s:
        dev = require_agent(st, request, s)
        done = queue.submit_results(s, dev, [(r.job, r.idempotency_key, _store(s, st_, r.environment))
                                             for r, st_ in zip(body.results, stats, strict=True)])
        for lut_id in {job.lut_id for job, stored in done if stored}:
            st.predictors.invalidate(lut_id)
        return {"results": [_result_object(job, stored) for job, stored in done]}


class LeaseRefIn(BaseModel):
    job: IdField
    lease_id: Line = Field(min_length=1, max_length=NAME_LEN)


class HeartbeatsIn(BaseModel):
    leases: list[LeaseRefIn] = Field(min_length=1, max_length=queue.MAX_BATCH)
    lease_seconds: float | None = Field(default=None, gt=0)


@router.post("/heartbeat", response_model=HeartbeatsOut)
def heartbeats(body: HeartbeatsIn, request: Request) -> dict[str, Any]:
    """Extend several leases of this device; each answers its new expiry, or why its lease is lost."""
    st = state_of(request)
    with st.db.session(write=True) as s:
        dev = require_agent(st, request, s)
        out = queue.heartbeats(s, [(r.job, r.lease_id) for r in body.leases], dev,
                               _lease_seconds(request, body.lease_seconds))
        return {"leases": [{"id": job.id, "lease_expires": repo.iso(job.lease_expires)} if lost is None
                           else {"id": job.id, "lost": lost} for job, lost in out]}


@router.post("/{job_id}/fail", response_model=JobStateOut)
def fail(job_id: IdPath, body: FailIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    with st.db.session(write=True) as s:
        dev = require_agent(st, request, s)
        msg = body.error if not body.output else f"{body.error}\n--- output ---\n{body.output[-20_000:]}"
        job = queue.fail(s, job_id, dev, msg, st.settings.max_attempts, body.lease_id)
        return {"id": job.id, "state": job.state, "attempts": job.attempts}


@router.post("/{job_id}/release", response_model=JobStateOut)
def release(job_id: IdPath, request: Request, body: ReleaseIn | None = None) -> dict[str, Any]:
    st = state_of(request)
    with st.db.session(write=True) as s:
        dev = require_agent(st, request, s)
        job = queue.release(s, job_id, dev, body.lease_id if body else None)
        return {"id": job.id, "state": job.state, "attempts": job.attempts}
