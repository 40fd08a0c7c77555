"""PostgreSQL: NOTIFY budgetnas_lut_revision with the LUT's id when its revision moves or it is deleted

The LUT server keeps LUTs in memory for prediction; a trigger (not the application) sends the
notification so that every writer, in any process or replica, is heard (budgetnas/db/changes.py listens).
SQLite needs nothing: its connections see any commit through ``PRAGMA data_version``.

Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'

CHANNEL = "budgetnas_lut_revision"  # budgetnas.db.changes.CHANNEL (a migration keeps its own copy)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text(f"""
        CREATE OR REPLACE FUNCTION budgetnas_lut_revision_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', COALESCE(NEW.id, OLD.id)::text);
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql"""))
    op.execute(sa.text(
        "CREATE TRIGGER luts_revision_notify AFTER UPDATE OF revision ON luts FOR EACH ROW "
        "WHEN (OLD.revision IS DISTINCT FROM NEW.revision) EXECUTE FUNCTION budgetnas_lut_revision_notify()"))
    op.execute(sa.text(
        "CREATE TRIGGER luts_delete_notify AFTER DELETE ON luts FOR EACH ROW "
        "EXECUTE FUNCTION budgetnas_lut_revision_notify()"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text("DROP TRIGGER IF EXISTS luts_delete_notify ON luts"))
    op.execute(sa.text("DROP TRIGGER IF EXISTS luts_revision_notify ON luts"))
    op.execute(sa.text("DROP FUNCTION IF EXISTS budgetnas_lut_revision_notify()"))
