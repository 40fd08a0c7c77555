"""SQLAlchemy 2 models. The Alembic migrations under ``budgetnas/db/migrations`` create exactly these tables.

Latency stats are stored as the JSON of ``budgetnas.luts.lut.LatencyStats.to_dict(samples=False)`` plus the
raw samples in their own column, with the numbers a query needs (median, mean, cv) as columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from budgetnas.db.types import UTCDateTime, utcnow

JOB_STATES = ("queued", "leased", "done", "failed")
JOB_KINDS = ("block", "model")
LUT_STATUSES = ("building", "complete")
# String column lengths that request schemas repeat (lut_server imports them, so the two agree)
NAME_LEN = 200  # device names, runtime versions
BACKEND_LEN = 100


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), index=True)  # sha256 hex of the agent token
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_heartbeat: Mapped[datetime | None] = mapped_column(nullable=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Lut(Base):
    __tablename__ = "luts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # sha256 of (device, backend, batch, threads, runtime_version, space): one LUT per identity
    identity: Mapped[str] = mapped_column(String(64), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    backend: Mapped[str] = mapped_column(String(BACKEND_LEN))
    batch: Mapped[int] = mapped_column(Integer, default=1)
    threads: Mapped[int] = mapped_column(Integer, default=1)
    runtime_version: Mapped[str] = mapped_column(String(NAME_LEN), default="unknown")
    space_name: Mapped[str] = mapped_column(String(50))
    width: Mapped[float | None] = mapped_column(Float, nullable=True)
    resolution: Mapped[int | None] = mapped_column(Integer, nullable=True)
    space: Mapped[dict[str, Any]] = mapped_column()  # the full space description
    statistic: Mapped[str] = mapped_column(String(20), default="median")
    status: Mapped[str] = mapped_column(String(20), default="building")
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # environment, protocol, source, created
    calibration: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    n_keys: Mapped[int] = mapped_column(Integer, default=0)
    # bumped on every change of entries or calibration, so in-memory copies know they are stale
    revision: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class LutEntry(Base):
    __tablename__ = "lut_entries"
    __table_args__ = (UniqueConstraint("lut_id", "key", name="uq_lut_entries_lut_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lut_id: Mapped[int] = mapped_column(ForeignKey("luts.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(400))
    stats: Mapped[dict[str, Any]] = mapped_column()  # LatencyStats.to_dict(samples=False)
    samples_ms: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    median_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    mean_ms: Mapped[float] = mapped_column(Float)
    cv: Mapped[float | None] = mapped_column(Float, nullable=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)


# one block job per (LUT, key) may be queued or leased: the last guard against two campaigns racing
ACTIVE_BLOCK_JOB = "kind = 'block' AND state IN ('queued', 'leased')"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_lut", "state", "lut_id"),
        Index("uq_jobs_active_block_key", "lut_id", "key", unique=True,
              postgresql_where=text(ACTIVE_BLOCK_JOB), sqlite_where=text(ACTIVE_BLOCK_JOB)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lut_id: Mapped[int] = mapped_column(ForeignKey("luts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # block | model
    key: Mapped[str | None] = mapped_column(String(400), nullable=True)
    arch: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(10), default="queued")
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow)


class ModelMeasurement(Base):
    """A measured whole model on a LUT's device: ground truth for calibration and fidelity."""

    __tablename__ = "model_measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lut_id: Mapped[int] = mapped_column(ForeignKey("luts.id", ondelete="CASCADE"), index=True)
    arch: Mapped[str] = mapped_column(Text)
    stats: Mapped[dict[str, Any]] = mapped_column()
    latency_ms: Mapped[float] = mapped_column(Float)  # the LUT's statistic of the stats
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    source: Mapped[str] = mapped_column(String(200), default="job")
    created: Mapped[datetime] = mapped_column(default=utcnow)


class AccuracyRecord(Base):
    __tablename__ = "accuracy_records"
    __table_args__ = (
        UniqueConstraint("space", "arch", "dataset", "metric", "source", name="uq_accuracy_record"),
        Index("ix_accuracy_space_dataset", "space", "dataset"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space: Mapped[str] = mapped_column(String(50))
    arch: Mapped[str] = mapped_column(String(400))
    dataset: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(50), default="top1")
    value: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(200), default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)
    updated: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sha256: Mapped[str] = mapped_column(String(64))
    bundle: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(default=utcnow)
