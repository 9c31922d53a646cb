"""project_variables; users.gitlab_username

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_variables",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("secret", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "key"),
    )
    with op.batch_alter_table("project_variables", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_project_variables_project"), ["project"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gitlab_username", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint("uq_users_gitlab_username", ["gitlab_username"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_gitlab_username", type_="unique")
        batch_op.drop_column("gitlab_username")
    with op.batch_alter_table("project_variables", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_variables_project"))
    op.drop_table("project_variables")
