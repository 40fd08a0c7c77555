"""initial schema

Create Date: 2026-11-24 04:45:16.757889
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.schema import SchemaItem

from budgetnas.db.migrations.schema import Index, create_table, drop_table, id_key, lut_foreign_key, timestamp
from budgetnas.db.types import UTCDateTime

revision: str = '0001'
down_revision: str | None = None

# Each table's indexes, in the order they are created (downgrade drops them in reverse).
INDEXES: dict[str, tuple[Index, ...]] = {
    'accuracy_records': (Index('ix_accuracy_space_dataset', ('space', 'dataset')),),
    'devices': (Index.on('devices', 'token_hash'),),
    'luts': (Index.on('luts', 'device_id'),),
    'jobs': (Index.on('jobs', 'lut_id'), Index('ix_jobs_state_lut', ('state', 'lut_id'))),
    'model_measurements': (Index.on('model_measurements', 'lut_id'),),
}


def _tables() -> dict[str, list[SchemaItem]]:
    """Every table's columns and constraints (fresh objects), in creation order: a table after those
    its foreign keys name."""
    return {
        'accuracy_records': id_key(
            sa.Column('space', sa.String(length=50), nullable=False),
            sa.Column('arch', sa.String(length=400), nullable=False),
            sa.Column('dataset', sa.String(length=100), nullable=False),
            sa.Column('metric', sa.String(length=50), nullable=False),
            sa.Column('value', sa.Float(), nullable=False),
            sa.Column('source', sa.String(length=200), nullable=False),
            timestamp(), timestamp('updated'),
            sa.UniqueConstraint('space', 'arch', 'dataset', 'metric', 'source', name='uq_accuracy_record')),
        'artifacts': [
            sa.Column('sha256', sa.String(length=64), nullable=False),
            sa.Column('size', sa.Integer(), nullable=False),
            sa.Column('content', sa.LargeBinary(), nullable=False),
            timestamp(),
            sa.PrimaryKeyConstraint('sha256')],
        'checkpoints': id_key(
            sa.Column('name', sa.String(length=200), nullable=False),
            sa.Column('meta', sa.JSON(), nullable=False),
            sa.Column('sha256', sa.String(length=64), nullable=False),
            sa.Column('bundle', sa.LargeBinary(), nullable=False),
            timestamp(),
            sa.UniqueConstraint('name')),
        'devices': id_key(
            sa.Column('name', sa.String(length=200), nullable=False),
            sa.Column('token_hash', sa.String(length=64), nullable=False),
            sa.Column('facts', sa.JSON(), nullable=False),
            sa.Column('last_heartbeat', UTCDateTime(), nullable=True),
            timestamp(),
            sa.UniqueConstraint('name')),
        'luts': id_key(
            sa.Column('identity', sa.String(length=64), nullable=False),
            sa.Column('device_id', sa.Integer(), nullable=False),
            sa.Column('backend', sa.String(length=100), nullable=False),
            sa.Column('batch', sa.Integer(), nullable=False),
            sa.Column('threads', sa.Integer(), nullable=False),
            sa.Column('runtime_version', sa.String(length=200), nullable=False),
            sa.Column('space_name', sa.String(length=50), nullable=False),
            sa.Column('width', sa.Float(), nullable=True),
            sa.Column('resolution', sa.Integer(), nullable=True),
            sa.Column('space', sa.JSON(), nullable=False),
            sa.Column('statistic', sa.String(length=20), nullable=False),
            sa.Column('status', sa.String(length=20), nullable=False),
            sa.Column('meta', sa.JSON(), nullable=False),
            sa.Column('calibration', sa.JSON(), nullable=True),
            sa.Column('n_keys', sa.Integer(), nullable=False),
            sa.Column('revision', sa.Integer(), nullable=False),
            timestamp(),
            sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
            sa.UniqueConstraint('identity')),
        'jobs': id_key(
            sa.Column('lut_id', sa.Integer(), nullable=False),
            sa.Column('kind', sa.String(length=10), nullable=False),
            sa.Column('key', sa.String(length=400), nullable=True),
            sa.Column('arch', sa.Text(), nullable=True),
            sa.Column('state', sa.String(length=10), nullable=False),
            sa.Column('lease_owner', sa.String(length=200), nullable=True),
            sa.Column('lease_expires', UTCDateTime(), nullable=True),
            sa.Column('attempts', sa.Integer(), nullable=False),
            sa.Column('idempotency_key', sa.String(length=200), nullable=True),
            sa.Column('result', sa.JSON(), nullable=True),
            sa.Column('error', sa.Text(), nullable=True),
            timestamp(), timestamp('updated'),
            lut_foreign_key()),
        'lut_entries': id_key(
            sa.Column('lut_id', sa.Integer(), nullable=False),
            sa.Column('key', sa.String(length=400), nullable=False),
            sa.Column('stats', sa.JSON(), nullable=False),
            sa.Column('samples_ms', sa.JSON(), nullable=True),
            sa.Column('median_ms', sa.Float(), nullable=True),
            sa.Column('mean_ms', sa.Float(), nullable=False),
            sa.Column('cv', sa.Float(), nullable=True),
            sa.Column('job_id', sa.Integer(), nullable=True),
            timestamp(),
            lut_foreign_key(),
            sa.UniqueConstraint('lut_id', 'key', name='uq_lut_entries_lut_key')),
        'model_measurements': id_key(
            sa.Column('lut_id', sa.Integer(), nullable=False),
            sa.Column('arch', sa.Text(), nullable=False),
            sa.Column('stats', sa.JSON(), nullable=False),
            sa.Column('latency_ms', sa.Float(), nullable=False),
            sa.Column('job_id', sa.Integer(), nullable=True),
            sa.Column('source', sa.String(length=200), nullable=False),
            timestamp(),
            lut_foreign_key(),
            sa.UniqueConstraint('job_id')),
    }


def upgrade() -> None:
    for name, items in _tables().items():
        create_table(name, items, INDEXES.get(name, ()))


def downgrade() -> None:
    for name in reversed(_tables()):
        drop_table(name, INDEXES.get(name, ()))
