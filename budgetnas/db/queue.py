"""The job queue: enqueue, lease, heartbeat, result, fail, release.

Rules (docs/rest.md): a lease counts an attempt; a lease that expires goes back to the queue
(or to ``failed`` once ``max_attempts`` leases were used); a result is accepted while the job is
not done, even after its lease expired; a repeated result returns the stored one and stores
nothing; ``release`` gives a job back without counting the attempt. PostgreSQL leases with
``FOR UPDATE SKIP LOCKED`` so concurrent lessees never block on or share a job; SQLite writes are
serialised by ``BEGIN IMMEDIATE`` (see budgetnas.db.session).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from budgetnas.core.errors import (
    ConflictError,
    DataFileError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from budgetnas.db import repo
from budgetnas.db.models import Device, Job, Lut
from budgetnas.db.types import utcnow


def enqueue(s: Session, lut_id: int, kind: str, items: Iterable[str]) -> int:
    """One queued job per block key (``kind='block'``) or per architecture (``kind='model'``)."""
    now = utcnow()
    rows = [{"lut_id": lut_id, "kind": kind, "key": it if kind == "block" else None,
             "arch": it if kind == "model" else None, "state": "queued", "attempts": 0,
             "created": now, "updated": now} for it in items]
    if rows:
        s.execute(insert(Job), rows)
    return len(rows)


def pending_block_keys(s: Session, lut_id: int) -> set[str]:
    """Keys with a block job still queued or leased (not to be enqueued twice)."""
    q = select(Job.key).where(Job.lut_id == lut_id, Job.kind == "block", Job.state.in_(("queued", "leased")))
    return {k for k in s.scalars(q) if k is not None}


def pending_model_archs(s: Session, lut_id: int) -> set[str]:
    """Archs with a whole-model job still queued or leased (not to be enqueued twice)."""
    q = select(Job.arch).where(Job.lut_id == lut_id, Job.kind == "model", Job.state.in_(("queued", "leased")))
    return {a for a in s.scalars(q) if a is not None}


def reclaim_expired(s: Session, max_attempts: int, now: datetime | None = None) -> int:
    """Expired leases back to the queue, or to ``failed`` when they used every attempt."""
    now = now or utcnow()
    q = select(Job.id).where(Job.state == "leased", Job.lease_expires < now)
    if s.get_bind().dialect.name == "postgresql":  # rows another request holds are its business
        q = q.with_for_update(skip_locked=True)
    ids = list(s.scalars(q))
    if not ids:
        return 0
    for cond, values in (
        (Job.attempts < max_attempts, {"state": "queued"}),
        (Job.attempts >= max_attempts, {"state": "failed", "error": "lease expired on the last attempt"}),
    ):
        s.execute(update(Job).where(Job.id.in_(ids), cond)
                  .values(lease_owner=None, lease_expires=None, updated=now, **values)
                  .execution_options(synchronize_session=False))
    return len(ids)


def lease(s: Session, device: Device, backend: str, max_jobs: int, lease_seconds: float, max_attempts: int,
          owner: str | None = None) -> list[tuple[Job, Lut]]:
    """Lease up to ``max_jobs`` queued jobs of LUTs on ``device`` with ``backend``, oldest first.

    The jobs' ``lease_owner`` is a fresh random lease id (or ``owner``): the agents of one device
    share its token, so this id is what tells the holder of a lease from its other agents.
    """
    reclaim_expired(s, max_attempts)
    now = utcnow()
    q = (select(Job.id).join(Lut, Lut.id == Job.lut_id)
         .where(Job.state == "queued", Lut.device_id == device.id, Lut.backend == backend)
         .order_by(Job.id).limit(max_jobs))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=Job, skip_locked=True)
    ids = list(s.scalars(q))
    if not ids:
        return []
    expires = now + timedelta(seconds=lease_seconds)
    s.execute(update(Job).where(Job.id.in_(ids))
              .values(state="leased", lease_owner=owner or secrets.token_urlsafe(16), lease_expires=expires,
                      attempts=Job.attempts + 1, updated=now)
              .execution_options(synchronize_session=False))
    rows = s.execute(select(Job, Lut).join(Lut, Lut.id == Job.lut_id).where(Job.id.in_(ids))
                     .order_by(Job.id).execution_options(populate_existing=True))
    return [(j, lut) for j, lut in rows]


def _job_for(s: Session, job_id: int, device: Device | None, lock: bool = True) -> Job:
    """The job, row-locked on PostgreSQL; an agent (``device``) may only touch jobs of its device."""
    q = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    if lock:
        q = q.with_for_update()
    job = s.scalar(q)
    if job is None:
        raise NotFoundError(f"job: no job with id {job_id}")
    if device is not None:
        dev_id = s.scalar(select(Lut.device_id).where(Lut.id == job.lut_id))
        if dev_id != device.id:
            raise PermissionDeniedError(f"job: job {job_id} belongs to another device than {device.name!r}")
    return job


def _check_holder(job: Job, device: Device | None, lease_id: str | None) -> None:
    """Only the lease's holder (its lease id) may extend, release or fail a lease; the admin may act without."""
    if lease_id is None and device is None:
        return
    if lease_id is None:
        raise InvalidArgumentError("lease_id: an agent must send the lease_id its lease returned")
    if job.lease_owner is None or not secrets.compare_digest(lease_id.encode(), job.lease_owner.encode()):
        raise ConflictError(f"job: job {job.id} is not leased with this lease_id (another agent holds it, "
                            f"or the lease was lost)")


def heartbeat(s: Session, job_id: int, device: Device | None, lease_seconds: float,
              lease_id: str | None = None) -> Job:
    job = _job_for(s, job_id, device)
    now = utcnow()
    if job.state != "leased" or job.lease_expires is None or job.lease_expires < now:
        raise ConflictError(f"job: the lease of job {job_id} was lost (state {job.state})")
    _check_holder(job, device, lease_id)
    job.lease_expires, job.updated = now + timedelta(seconds=lease_seconds), now
    s.flush()
    return job


# store(job, lut) -> the result dict to keep on the job; raises to refuse the result
ResultStore = Callable[[Job, Lut], dict[str, Any]]


def submit_result(s: Session, job_id: int, device: Device | None, idempotency_key: str,
                  store: ResultStore) -> tuple[Job, bool]:
    """Mark the job done with what ``store`` keeps; (job, False) when it was already done."""
    job = _job_for(s, job_id, device)
    if job.state == "done":
        return job, False
    if job.state == "failed":
        raise ConflictError(f"job: job {job_id} failed after {job.attempts} attempt(s); it takes no result")
    repo.bump_revision(s, job.lut_id)  # locks the LUT row: results of one LUT commit one at a time
    lut = repo.get_lut(s, job.lut_id)
    result = store(job, lut)
    now = utcnow()
    job.state, job.result, job.idempotency_key = "done", result, idempotency_key
    job.lease_owner, job.lease_expires, job.updated = None, None, now
    s.flush()
    if job.kind == "block" and lut.status == "building" and repo.n_measured(s, lut.id) >= lut.n_keys:
        lut.status = "complete"
    s.flush()
    return job, True


MAX_BATCH = 100  # jobs per batched heartbeat or result call


def _jobs_for(s: Session, ids: Sequence[int], device: Device | None, field: str) -> dict[int, Job]:
    """Several jobs, row-locked in id order (no deadlock between batches); a missing job, one of another
    device or one named twice is a caller's error naming the item (``field[i].job``)."""
    seen: dict[int, int] = {}
    for i, job_id in enumerate(ids):
        if job_id in seen:
            raise InvalidArgumentError(f"{field}[{i}].job: job {job_id} is also {field}[{seen[job_id]}]")
        seen[job_id] = i
    q = (select(Job).where(Job.id.in_(ids)).order_by(Job.id).with_for_update()
         .execution_options(populate_existing=True))
    jobs = {j.id: j for j in s.scalars(q)}
    devices = dict(s.execute(select(Lut.id, Lut.device_id).where(Lut.id.in_({j.lut_id for j in jobs.values()}))).all())
    for i, job_id in enumerate(ids):
        job = jobs.get(job_id)
        if job is None:
            raise InvalidArgumentError(f"{field}[{i}].job: no job with id {job_id}")
        if device is not None and devices[job.lut_id] != device.id:
            raise InvalidArgumentError(f"{field}[{i}].job: job {job_id} belongs to another device than {device.name!r}")
    return jobs


def heartbeats(s: Session, leases: Sequence[tuple[int, str]], device: Device | None, lease_seconds: float
               ) -> list[tuple[Job, str | None]]:
    """Extend several leases (job id, lease id) at once: (job, None) when extended, (job, why) when the lease
    was lost or is not this lease id's (the others are extended all the same)."""
    jobs = _jobs_for(s, [j for j, _ in leases], device, "leases")
    now = utcnow()
    out: list[tuple[Job, str | None]] = []
    for job_id, lease_id in leases:
        job = jobs[job_id]
        if job.state != "leased" or job.lease_expires is None or job.lease_expires < now:
            out.append((job, f"the lease of job {job_id} was lost (state {job.state})"))
        elif job.lease_owner is None or not secrets.compare_digest(lease_id.encode(), job.lease_owner.encode()):
            out.append((job, f"job {job_id} is not leased with this lease_id (another agent holds it)"))
        else:
            job.lease_expires, job.updated = now + timedelta(seconds=lease_seconds), now
            out.append((job, None))
    s.flush()
    return out


def submit_results(s: Session, device: Device | None, results: Sequence[tuple[int, str, ResultStore]]
                   ) -> list[tuple[Job, bool]]:
    """``submit_result`` for several jobs in one transaction: all stored, or nothing when one is refused
    (its error names ``results[i]``). A job already done answers (job, False) and stores nothing."""
    jobs = _jobs_for(s, [j for j, _, _ in results], device, "results")
    for i, (job_id, _, _) in enumerate(results):
        if jobs[job_id].state == "failed":
            raise ConflictError(f"results[{i}].job: job {job_id} failed after {jobs[job_id].attempts} attempt(s); "
                                "it takes no result")
    lut_ids = sorted({jobs[j].lut_id for j, _, _ in results if jobs[j].state != "done"})
    for lut_id in lut_ids:  # locks the LUT rows, in id order: the results of one LUT commit one batch at a time
        repo.bump_revision(s, lut_id)
    luts = {lut_id: repo.get_lut(s, lut_id) for lut_id in lut_ids}
    now = utcnow()
    out: list[tuple[Job, bool]] = []
    for i, (job_id, key, store) in enumerate(results):
        job = jobs[job_id]
        if job.state == "done":
            out.append((job, False))
            continue
        try:
            result = store(job, luts[job.lut_id])
        except (ConflictError, InvalidArgumentError, DataFileError) as exc:
            raise type(exc)(f"results[{i}].{exc}") from None
        job.state, job.result, job.idempotency_key = "done", result, key
        job.lease_owner, job.lease_expires, job.updated = None, None, now
        out.append((job, True))
    s.flush()
    blocks = {jobs[j].lut_id for j, _, _ in results if jobs[j].kind == "block"}
    for lut_id in lut_ids:
        lut = luts[lut_id]
        if lut_id in blocks and lut.status == "building" and repo.n_measured(s, lut_id) >= lut.n_keys:
            lut.status = "complete"
    s.flush()
    return out


def fail(s: Session, job_id: int, device: Device | None, error: str, max_attempts: int,
         lease_id: str | None = None) -> Job:
    """Give back a leased job as failed (queued again until ``max_attempts``); only its lease's holder
    may (``lease_id``), so one agent of a device cannot fail the job another agent is measuring."""
    job = _job_for(s, job_id, device)
    if job.state == "done":
        raise ConflictError(f"job: job {job_id} is done; it cannot fail")
    if job.state == "failed":
        return job
    if job.state != "leased":
        raise ConflictError(f"job: job {job_id} is not leased (state {job.state}); its lease was lost")
    _check_holder(job, device, lease_id)
    job.state = "failed" if job.attempts >= max_attempts else "queued"
    job.error, job.lease_owner, job.lease_expires, job.updated = error, None, None, utcnow()
    s.flush()
    return job


def release(s: Session, job_id: int, device: Device | None, lease_id: str | None = None) -> Job:
    job = _job_for(s, job_id, device)
    if job.state != "leased":
        raise ConflictError(f"job: job {job_id} is not leased (state {job.state})")
    _check_holder(job, device, lease_id)
    job.state, job.attempts = "queued", max(0, job.attempts - 1)
    job.lease_owner, job.lease_expires, job.updated = None, None, utcnow()
    s.flush()
    return job


def get_job(s: Session, job_id: int) -> Job:
    return _job_for(s, job_id, None, lock=False)
