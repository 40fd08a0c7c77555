"""JSON shapes of stored records (docs/rest.md), built from db rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from budgetnas.core.jsonlimits import shown_json
from budgetnas.db import repo
from budgetnas.db.models import Device, Job, Lut


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


def device_object(dev: Device) -> dict[str, Any]:
    return {"id": dev.id, "name": dev.name, "facts": shown_json(dev.facts),
            "last_heartbeat": repo.iso(dev.last_heartbeat), "created": repo.iso(dev.created)}


def job_object(job: Job, lut: Lut) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "lut_id": job.lut_id, "key": job.key, "arch": job.arch,
            "space": lut.space, "backend": lut.backend, "batch": lut.batch, "threads": lut.threads,
            "runtime_version": lut.runtime_version, "lease_expires": repo.iso(job.lease_expires),
            "lease_id": job.lease_owner,
            "attempts": job.attempts}
