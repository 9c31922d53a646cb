"""app_databases: a PostgreSQL database per app on the operator's server (issue 14)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 22:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_databases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project", sa.String(length=40), nullable=False, unique=True),
        sa.Column("database", sa.String(length=63), nullable=False),
        sa.Column("owner_role", sa.String(length=63), nullable=False),
        sa.Column("login_role", sa.String(length=63), nullable=False),
        sa.Column("old_login_role", sa.String(length=63), nullable=True),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("app_databases")
