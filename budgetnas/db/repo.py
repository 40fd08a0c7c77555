"""Repository functions: the queries every user of the database shares.

Plain dicts in and out where another package needs the data (``db`` imports nothing of the project
but ``budgetnas.core.errors``); the LUT server and the generator trainer turn them into ``budgetnas.luts.lut``
objects. Read-only users (the trainer) need only:

- :func:`load_lut` ``(session, lut_id) -> dict`` in the LUT JSON format; feed it to
  ``budgetnas.luts.lut.LUT.from_json_dict``;
- :func:`accuracy_records` ``(session, space, dataset=None, ...) -> (list[dict], total)``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from budgetnas.core.errors import ConflictError, NotFoundError
from budgetnas.db.models import AccuracyRecord, Artifact, Checkpoint, Device, Job, Lut, LutEntry, ModelMeasurement
from budgetnas.db.types import utcnow

LUT_FORMAT, LUT_VERSION = "budgetnas-lut", 1  # the file format of budgetnas/luts/lut.py
MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---- devices -------------------------------------------------------------------------------------
def register_device(s: Session, name: str, facts: dict[str, Any], token_sha256: str) -> Device:
    """Create the device, or rotate its token and replace its facts."""
    dev = s.scalar(select(Device).where(Device.name == name))
    if dev is None:
        dev = Device(name=name, facts=facts, token_hash=token_sha256, created=utcnow())
        s.add(dev)
    else:
        dev.token_hash, dev.facts = token_sha256, facts
    s.flush()
    return dev


def ensure_device(s: Session, name: str) -> Device:
    """The device, created without a usable agent token when it does not exist (LUT imports)."""
    dev = s.scalar(select(Device).where(Device.name == name))
    if dev is None:
        dev = register_device(s, name, {}, token_sha256="-" * 64)  # no token hashes to this
    return dev


def get_device(s: Session, name: str) -> Device:
    dev = s.scalar(select(Device).where(Device.name == name))
    if dev is None:
        raise NotFoundError(f"device: no device named {name!r}")
    return dev


def device_for_token(s: Session, token_sha256: str) -> Device | None:
    return s.scalar(select(Device).where(Device.token_hash == token_sha256))


def list_devices(s: Session) -> list[Device]:
    return list(s.scalars(select(Device).order_by(Device.id)))


def device_heartbeat(s: Session, dev: Device, facts: dict[str, Any] | None) -> Device:
    dev.last_heartbeat = utcnow()
    if facts is not None:
        dev.facts = {**dev.facts, **facts}
    s.flush()
    return dev


# ---- LUTs ----------------------------------------------------------------------------------------
def lut_identity(device: str, backend: str, batch: int, threads: int, runtime_version: str,
                 space: dict[str, Any]) -> str:
    blob = json.dumps([device, backend, batch, threads, runtime_version, space], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def find_lut(s: Session, identity: str) -> Lut | None:
    return s.scalar(select(Lut).where(Lut.identity == identity))


def create_lut(s: Session, *, device: Device, backend: str, batch: int, threads: int, runtime_version: str,
               space: dict[str, Any], statistic: str, n_keys: int, meta: dict[str, Any],
               status: str = "building", calibration: dict[str, Any] | None = None) -> Lut:
    """A new LUT; :class:`ConflictError` naming the existing id when its identity is taken."""
    ident = lut_identity(device.name, backend, batch, threads, runtime_version, space)
    old = find_lut(s, ident)
    if old is None:
        lut = Lut(identity=ident, device_id=device.id, backend=backend, batch=batch, threads=threads,
                  runtime_version=runtime_version, space_name=str(space["space"]), width=space.get("width"),
                  resolution=space.get("resolution"), space=space, statistic=statistic, status=status,
                  meta=meta, calibration=calibration, n_keys=n_keys, revision=0, created=utcnow())
        try:
            with s.begin_nested():  # a concurrent create of this identity commits first: we lose on the index
                s.add(lut)
                s.flush()
            return lut
        except IntegrityError:
            old = find_lut(s, ident)
            if old is None:
                raise
    raise ConflictError(f"a LUT with this device, backend, batch, threads, runtime_version and space "
                        f"exists: id {old.id}")


def get_lut(s: Session, lut_id: int, lock: bool = False) -> Lut:
    """The LUT; ``lock``: row-locked until the transaction ends (PostgreSQL) and re-read after the wait."""
    q = select(Lut).where(Lut.id == lut_id)
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    lut = s.scalar(q)
    if lut is None:
        raise NotFoundError(f"lut: no LUT with id {lut_id}")
    return lut


def lut_revision(s: Session, lut_id: int) -> tuple[int, int] | None:
    """(revision, id) of a LUT without loading it: the cheap staleness check of in-memory copies."""
    row = s.execute(select(Lut.revision, Lut.id).where(Lut.id == lut_id)).first()
    return None if row is None else (int(row[0]), int(row[1]))


def list_luts(s: Session) -> list[Lut]:
    return list(s.scalars(select(Lut).order_by(Lut.id)))


def bump_revision(s: Session, lut_id: int) -> None:
    """Mark a LUT changed. On PostgreSQL this also takes its row lock until the transaction ends,
    which serialises concurrent results of one LUT (so the last one sees every entry)."""
    s.execute(update(Lut).where(Lut.id == lut_id).values(revision=Lut.revision + 1))


def n_measured(s: Session, lut_id: int) -> int:
    return int(s.scalar(select(func.count()).select_from(LutEntry).where(LutEntry.lut_id == lut_id)) or 0)


def measured_counts(s: Session, lut_ids: Sequence[int]) -> dict[int, int]:
    rows = s.execute(select(LutEntry.lut_id, func.count()).where(LutEntry.lut_id.in_(lut_ids))
                     .group_by(LutEntry.lut_id))
    return {int(i): int(n) for i, n in rows}


def job_progress(s: Session, lut_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per LUT: number of jobs queued, leased, done and failed."""
    out = {i: {"queued": 0, "leased": 0, "done": 0, "failed": 0} for i in lut_ids}
    rows = s.execute(select(Job.lut_id, Job.state, func.count()).where(Job.lut_id.in_(lut_ids))
                     .group_by(Job.lut_id, Job.state))
    for lut_id, state, n in rows:
        out[int(lut_id)][str(state)] = int(n)
    return out


def entry_row(lut_id: int, key: str, stats: dict[str, Any], job_id: int | None = None) -> dict[str, Any]:
    """Column values of one entry from ``LatencyStats.to_dict()`` (samples go to their own column)."""
    st = {k: v for k, v in stats.items() if k != "samples_ms"}
    return {"lut_id": lut_id, "key": key, "stats": st, "samples_ms": stats.get("samples_ms"),
            "median_ms": st.get("median_ms"), "mean_ms": float(st["mean_ms"]), "cv": st.get("cv"),
            "job_id": job_id, "created": utcnow()}


def add_entries(s: Session, lut_id: int, entries: dict[str, dict[str, Any]]) -> int:
    """Insert many entries at once (imports); the unique (lut, key) constraint rejects duplicates."""
    rows = [entry_row(lut_id, k, v) for k, v in entries.items()]
    if rows:
        s.execute(insert(LutEntry), rows)
    return len(rows)


def add_entry(s: Session, lut_id: int, key: str, stats: dict[str, Any], job_id: int | None = None) -> None:
    s.execute(insert(LutEntry).values(**entry_row(lut_id, key, stats, job_id)))


def entry_exists(s: Session, lut_id: int, key: str) -> bool:
    return s.scalar(select(LutEntry.id).where(LutEntry.lut_id == lut_id, LutEntry.key == key)) is not None


def lut_entries(s: Session, lut_id: int, samples: bool = False) -> dict[str, dict[str, Any]]:
    """{key: LatencyStats.to_dict()} of a LUT, sorted by key."""
    q = select(LutEntry.key, LutEntry.stats, LutEntry.samples_ms if samples else LutEntry.id)
    out: dict[str, dict[str, Any]] = {}
    for key, stats, extra in s.execute(q.where(LutEntry.lut_id == lut_id).order_by(LutEntry.key)):
        st: dict[str, Any] = dict(stats)
        if samples and extra is not None:
            st["samples_ms"] = list(extra)
        out[str(key)] = st
    return out


def lut_meta(s: Session, lut: Lut) -> dict[str, Any]:
    """The LUT file's ``meta`` (the fields of ``budgetnas.luts.lut.LUTMeta``)."""
    dev_name = s.scalar(select(Device.name).where(Device.id == lut.device_id))
    extra = lut.meta or {}
    return {"space": lut.space, "device": dev_name, "backend": lut.backend, "batch": lut.batch,
            "threads": lut.threads, "runtime_version": lut.runtime_version, "statistic": lut.statistic,
            "environment": extra.get("environment", {}), "protocol": extra.get("protocol", {}),
            "created": extra.get("created") or lut.created.isoformat(timespec="seconds")}


def load_lut(s: Session, lut_id: int, samples: bool = False) -> dict[str, Any]:
    """A LUT in the JSON file format of ``budgetnas/luts/lut.py`` (``LUT.from_json_dict`` reads it)."""
    lut = get_lut(s, lut_id)
    return {"format": LUT_FORMAT, "version": LUT_VERSION, "meta": lut_meta(s, lut),
            "entries": lut_entries(s, lut_id, samples), "calibration": lut.calibration}


def model_measurements(s: Session, lut_id: int) -> list[tuple[str, float]]:
    """(arch, measured latency in the LUT's statistic) of a LUT's whole-model measurements."""
    rows = s.execute(select(ModelMeasurement.arch, ModelMeasurement.latency_ms)
                     .where(ModelMeasurement.lut_id == lut_id).order_by(ModelMeasurement.id))
    return [(str(a), float(v)) for a, v in rows]


def model_measurement_rows(s: Session, lut_id: int) -> list[tuple[str, float, float | None]]:
    """(arch, latency, the reference workload's ``reference_ms`` beside it or None) of a LUT's whole-model
    measurements, in one query (so the three line up even while agents write)."""
    rows = s.execute(select(ModelMeasurement.arch, ModelMeasurement.latency_ms, ModelMeasurement.stats)
                     .where(ModelMeasurement.lut_id == lut_id).order_by(ModelMeasurement.id))
    out: list[tuple[str, float, float | None]] = []
    for arch, ms, stats in rows:
        ref = stats.get("reference_ms") if isinstance(stats, dict) else None
        if isinstance(ref, bool) or not isinstance(ref, int | float) or not math.isfinite(ref) or ref <= 0:
            ref = None  # stats are free-form JSON: anything but a positive number means "not timed"
        out.append((str(arch), float(ms), None if ref is None else float(ref)))
    return out


def add_model_measurement(s: Session, lut_id: int, arch: str, stats: dict[str, Any], latency_ms: float,
                          job_id: int | None = None, source: str = "job") -> None:
    s.add(ModelMeasurement(lut_id=lut_id, arch=arch, stats={k: v for k, v in stats.items() if k != "samples_ms"},
                           latency_ms=latency_ms, job_id=job_id, source=source, created=utcnow()))


# ---- accuracy records ----------------------------------------------------------------------------
ACCURACY_FIELDS = ("space", "arch", "dataset", "metric", "value", "source")


def upsert_accuracy(s: Session, space: str, records: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """Insert or update on (space, arch, dataset, metric, source); returns (inserted, updated)."""
    recs: dict[tuple[str, str, str, str], float] = {}
    for r in records:  # a repeated record in one batch: the last value wins
        recs[(r["arch"], r["dataset"], r.get("metric", "top1"), r.get("source", ""))] = float(r["value"])
    existing: dict[tuple[str, str, str, str], AccuracyRecord] = {}
    keys = list(recs)
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        q = select(AccuracyRecord).where(
            AccuracyRecord.space == space,
            tuple_(AccuracyRecord.arch, AccuracyRecord.dataset, AccuracyRecord.metric, AccuracyRecord.source)
            .in_(chunk))
        for rec in s.scalars(q):
            existing[(rec.arch, rec.dataset, rec.metric, rec.source)] = rec
    now, new = utcnow(), list[dict[str, Any]]()
    updated = 0
    for k, value in recs.items():
        old = existing.get(k)
        if old is None:
            new.append({"space": space, "arch": k[0], "dataset": k[1], "metric": k[2], "source": k[3],
                        "value": value, "created": now, "updated": now})
        elif old.value != value:
            old.value, old.updated = value, now
            updated += 1
    if new:
        s.execute(insert(AccuracyRecord), new)
    s.flush()
    return len(new), updated


def _accuracy_filters(space: str | None = None, dataset: str | None = None, metric: str | None = None,
                      source: str | None = None) -> list[Any]:
    return [c for c in (
        AccuracyRecord.space == space if space is not None else None,
        AccuracyRecord.dataset == dataset if dataset is not None else None,
        AccuracyRecord.metric == metric if metric is not None else None,
        AccuracyRecord.source == source if source is not None else None,
    ) if c is not None]


def accuracy_records(s: Session, space: str | None = None, dataset: str | None = None, metric: str | None = None,
                     source: str | None = None, limit: int | None = None, offset: int = 0
                     ) -> tuple[list[dict[str, Any]], int]:
    """Records as ``{"space", "arch", "dataset", "metric", "value", "source"}`` (by id) and the total
    that matches the filters (before ``limit``/``offset``)."""
    conds = _accuracy_filters(space, dataset, metric, source)
    total = int(s.scalar(select(func.count()).select_from(AccuracyRecord).where(*conds)) or 0)
    q = select(*(getattr(AccuracyRecord, f) for f in ACCURACY_FIELDS)).where(*conds).order_by(AccuracyRecord.id)
    q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit)
    return [dict(zip(ACCURACY_FIELDS, row, strict=True)) for row in s.execute(q)], total


ARCHS_PER_QUERY = 500  # bound on one IN (...) list, well under both databases' parameter limits


def accuracy_values(s: Session, space: str, archs: list[str], dataset: str | None = None) -> dict[str, list[float]]:
    """Every record's value of just these archs (several per arch when datasets, metrics or sources differ),
    so a reader sees no record it did not ask for."""
    found: dict[str, list[float]] = {}
    for i in range(0, len(archs), ARCHS_PER_QUERY):
        q = select(AccuracyRecord.arch, AccuracyRecord.value).where(
            *_accuracy_filters(space, dataset), AccuracyRecord.arch.in_(archs[i:i + ARCHS_PER_QUERY]))
        for arch, value in s.execute(q):
            found.setdefault(str(arch), []).append(float(value))
    return found


def accuracy_archs(s: Session, space: str, dataset: str | None = None) -> list[str]:
    """The distinct archs with a record (of ``dataset``, when given)."""
    q = select(AccuracyRecord.arch).where(*_accuracy_filters(space, dataset)).distinct()
    return [str(a) for a in s.scalars(q)]


# ---- artifacts and checkpoints -------------------------------------------------------------------
def put_artifact(s: Session, sha256: str, content: bytes) -> bool:
    """Store content under its hash; False when it was already there (content-addressed: same bytes)."""
    if s.get(Artifact, sha256) is not None:
        return False
    s.add(Artifact(sha256=sha256, size=len(content), content=content, created=utcnow()))
    s.flush()
    return True


def get_artifact(s: Session, sha256: str) -> bytes:
    art = s.get(Artifact, sha256)
    if art is None:
        raise NotFoundError(f"sha256: no artifact {sha256}")
    return bytes(art.content)


def create_checkpoint(s: Session, name: str, bundle: bytes, meta: dict[str, Any]) -> Checkpoint:
    if s.scalar(select(Checkpoint.id).where(Checkpoint.name == name)) is not None:
        raise ConflictError(f"name: a checkpoint named {name!r} exists")
    ck = Checkpoint(name=name, bundle=bundle, meta=meta, sha256=hashlib.sha256(bundle).hexdigest(), created=utcnow())
    s.add(ck)
    s.flush()
    return ck


def list_checkpoints(s: Session) -> list[dict[str, Any]]:
    rows = s.execute(select(Checkpoint.id, Checkpoint.name, Checkpoint.meta, Checkpoint.created)
                     .order_by(Checkpoint.id))
    return [{"id": i, "name": n, "meta": m, "created": c} for i, n, m, c in rows]


def find_checkpoint(s: Session, ref: int | str) -> tuple[int, str]:
    """(id, sha256) of a checkpoint given its id or name."""
    q = select(Checkpoint.id, Checkpoint.sha256)
    # only ASCII digits are an id ('١٢'.isdigit() is true too); more than 10 of them cannot fit an id
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        n = ref if isinstance(ref, int) else (int(ref) if len(ref) <= 10 else MAX_ID + 1)
        row = s.execute(q.where(Checkpoint.id == n)).first() if 0 < n <= MAX_ID else None
    else:
        row = s.execute(q.where(Checkpoint.name == ref)).first()
    if row is None:
        raise NotFoundError(f"checkpoint: no checkpoint {ref!r}")
    return int(row[0]), str(row[1])


def checkpoint_bundle(s: Session, checkpoint_id: int) -> bytes:
    data = s.scalar(select(Checkpoint.bundle).where(Checkpoint.id == checkpoint_id))
    if data is None:
        raise NotFoundError(f"checkpoint: no checkpoint {checkpoint_id}")
    return bytes(data)


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()
