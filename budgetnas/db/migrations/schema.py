"""What the migrations' tables share: the surrogate key, the timestamps, the LUT foreign key, indexes.

Migrations are history: a revision that calls a helper here must keep emitting the same DDL, so
change nothing a revision already uses (add a new helper instead). Each call builds fresh schema
objects, as ``op.create_table`` attaches them to its table (one process may migrate many databases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

from budgetnas.db.types import UTCDateTime


@dataclass(frozen=True)
class Index:
    """A non-unique index; ``convention``: named ``ix_<table>_<column>`` as the models' ``index=True``."""

    name: str
    columns: tuple[str, ...]
    convention: bool = False

    @classmethod
    def on(cls, table: str, column: str) -> Index:
        """The index a model column with ``index=True`` gets."""
        return cls(f"ix_{table}_{column}", (column,), convention=True)


def id_key(*items: SchemaItem) -> list[SchemaItem]:
    """An integer ``id`` column, ``items``, then the primary key on ``id`` (the DDL names a table's
    primary key first of its constraints wherever it stands among them)."""
    return [sa.Column('id', sa.Integer(), nullable=False), *items, sa.PrimaryKeyConstraint('id')]


def timestamp(name: str = 'created') -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=False)


def lut_foreign_key() -> sa.ForeignKeyConstraint:
    """``lut_id`` to ``luts.id``: a LUT's rows go with it."""
    return sa.ForeignKeyConstraint(['lut_id'], ['luts.id'], ondelete='CASCADE')


def create_table(name: str, items: list[SchemaItem], indexes: tuple[Index, ...] = ()) -> None:
    """The table, then its indexes in order (batch mode, as SQLite needs for later changes)."""
    op.create_table(name, *items)
    if not indexes:
        return
    with op.batch_alter_table(name, schema=None) as batch_op:
        for ix in indexes:
            batch_op.create_index(batch_op.f(ix.name) if ix.convention else ix.name, list(ix.columns), unique=False)


def drop_table(name: str, indexes: tuple[Index, ...] = ()) -> None:
    """The undoing of :func:`create_table`: its indexes in reverse order, then the table."""
    if indexes:
        with op.batch_alter_table(name, schema=None) as batch_op:
            for ix in reversed(indexes):
                batch_op.drop_index(batch_op.f(ix.name) if ix.convention else ix.name)
    op.drop_table(name)
