"""one queued or leased block job per (LUT, key)

Two concurrent campaigns of one LUT could enqueue a key twice on PostgreSQL (issue 16): the
duplicate job took no result (409) and ended ``failed``. Duplicates already stored are failed here,
keeping per key the leased job (it may be measuring) or else the oldest, before the unique partial
index makes a second active job impossible.

Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'

ACTIVE = "kind = 'block' AND state IN ('queued', 'leased')"


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_expires = NULL, "
        "error = 'duplicate of another queued or leased job of this key (migration 0002)' "
        f"WHERE {ACTIVE} AND EXISTS (SELECT 1 FROM jobs AS k WHERE k.lut_id = jobs.lut_id AND k.key = jobs.key "
        "AND k.kind = 'block' AND k.id <> jobs.id AND ("
        "(k.state = 'leased' AND jobs.state = 'queued') OR (k.state = jobs.state AND k.id < jobs.id)))"))
    op.create_index('uq_jobs_active_block_key', 'jobs', ['lut_id', 'key'], unique=True,
                    postgresql_where=sa.text(ACTIVE), sqlite_where=sa.text(ACTIVE))


def downgrade() -> None:
    op.drop_index('uq_jobs_active_block_key', table_name='jobs')
