"""JSON shapes of stored records (docs/rest.md), built from db rows, and the response models that declare them.

Response models are TypedDicts: they document the answers in ``/openapi.json``, and FastAPI checks each
answer against its model about as fast as a plain dict (a BaseModel per record cost 5x on 100,000 accuracy
records). The check drops undeclared keys, so a model lists every key its builder returns; ``NotRequired``
keys are absent, not null, when there is nothing to say.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import Field
from sqlalchemy.orm import Session
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.core.jsonlimits import shown_json
from budgetnas.db import repo
from budgetnas.db.models import Device, Job, Lut


class StatsOut(TypedDict):
    """``budgetnas.luts.lut.LatencyStats.to_dict()``."""

    count: int
    mean_ms: float
    std_ms: float
    median_ms: NotRequired[float]
    min_ms: NotRequired[float]
    p90_ms: NotRequired[float]
    p99_ms: NotRequired[float]
    cv: NotRequired[float]
    warmup_runs: NotRequired[int]
    seconds: NotRequired[float]
    overhead_ms: NotRequired[float]
    noisy: NotRequired[bool]
    reference_ms: NotRequired[float]
    disturbed: NotRequired[bool]
    samples_ms: NotRequired[list[float]]


class ProgressOut(TypedDict):
    queued: int
    leased: int
    done: int
    failed: int


class LutFileMetaOut(TypedDict):
    """A LUT's ``meta``: the fields of ``budgetnas.luts.lut.LUTMeta``."""

    space: Annotated[dict[str, Any], Field(description="the space description, e.g. {\"space\": \"nb201\", ...}")]
    device: str | None
    backend: str
    batch: int
    threads: int
    runtime_version: str
    statistic: str
    environment: dict[str, Any]
    protocol: dict[str, Any]
    created: str


class LutMetaOut(LutFileMetaOut):
    source: Annotated[str | None, Field(description="campaign, transfer, json, ofa-yaml or arch-csv")]


class LutOut(TypedDict):
    id: int
    status: Annotated[str, Field(description="building or complete")]
    meta: LutMetaOut
    n_keys: int
    n_measured: int
    coverage: Annotated[float, Field(description="n_measured / n_keys")]
    progress: ProgressOut
    calibration: Annotated[dict[str, Any] | None, Field(description="Calibration.to_dict() of budgetnas.luts.lut")]
    revision: int
    created: str | None


def lut_objects(s: Session, luts: list[Lut]) -> list[dict[str, Any]]:
    ids = [lut.id for lut in luts]
    measured, progress = repo.measured_counts(s, ids), repo.job_progress(s, ids)
    out = []
    for lut in luts:
        n = measured.get(lut.id, 0)
        meta = repo.lut_meta(s, lut)
        for free in ("environment", "protocol"):  # a bad stored value must not fail the listing
            meta[free] = shown_json(meta[free])
        out.append({
            "id": lut.id, "status": lut.status, "meta": {**meta, "source": lut.meta.get("source")},
            "n_keys": lut.n_keys, "n_measured": n, "coverage": n / lut.n_keys if lut.n_keys else 0.0,
            "progress": progress[lut.id], "calibration": lut.calibration, "revision": lut.revision,
            "created": repo.iso(lut.created),
        })
    return out


def lut_object(s: Session, lut: Lut) -> dict[str, Any]:
    return lut_objects(s, [lut])[0]


class DeviceOut(TypedDict):
    id: int
    name: str
    facts: dict[str, Any]
    last_heartbeat: str | None
    created: str | None


def device_object(dev: Device) -> dict[str, Any]:
    return {"id": dev.id, "name": dev.name, "facts": shown_json(dev.facts),
            "last_heartbeat": repo.iso(dev.last_heartbeat), "created": repo.iso(dev.created)}


class JobOut(TypedDict):
    id: int
    kind: Annotated[str, Field(description="block or model")]
    lut_id: int
    key: Annotated[str | None, Field(description="the block key of a block job")]
    arch: Annotated[str | None, Field(description="the architecture of a model job")]
    space: dict[str, Any]
    backend: str
    batch: int
    threads: int
    runtime_version: str
    lease_expires: str | None
    lease_id: str | None
    attempts: int


def job_object(job: Job, lut: Lut) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "lut_id": job.lut_id, "key": job.key, "arch": job.arch,
            "space": lut.space, "backend": lut.backend, "batch": lut.batch, "threads": lut.threads,
            "runtime_version": lut.runtime_version, "lease_expires": repo.iso(job.lease_expires),
            "lease_id": job.lease_owner,
            "attempts": job.attempts}
