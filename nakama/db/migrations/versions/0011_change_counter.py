"""change_counter: one row that grows with every change to what lists and sign-ins read

Its triggers are not made here but at every start (:func:`nakama.db.changes.ensure_triggers`):
SQLite's batch migrations copy a table to alter it, which drops the table's triggers, so a later
migration would silently stop the counting.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nakama.db.changes import drop_triggers

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "n": 0}])


def downgrade() -> None:
    drop_triggers(op.get_bind())
    op.drop_table("change_counter")
