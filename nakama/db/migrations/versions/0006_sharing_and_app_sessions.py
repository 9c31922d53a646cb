"""projects.visibility and idle_timeout_s; project_members; app sessions, sign-in codes, viewers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("visibility", sa.String(length=20), nullable=False, server_default="private")
        )
        batch_op.add_column(sa.Column("idle_timeout_s", sa.Integer(), nullable=True))
    op.create_table(
        "project_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_project_members_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "user_id"),
    )
    with op.batch_alter_table("project_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_project_members_project"), ["project"], unique=False)
        batch_op.create_index(batch_op.f("ix_project_members_user_id"), ["user_id"], unique=False)
    # Every project's owner so far becomes its member with the owner role.
    op.execute(
        "INSERT INTO project_members (project, user_id, role, created_at) "
        "SELECT name, owner_id, 'owner', created_at FROM projects WHERE owner_id IS NOT NULL"
    )
    op.create_table(
        "app_sign_in_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    with op.batch_alter_table("app_sign_in_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_app_sign_in_codes_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "app_viewers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "user_id", "day"),
    )
    with op.batch_alter_table("app_viewers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_app_viewers_project"), ["project"], unique=False)
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("app", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("parent_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_web_sessions_parent_hash"), ["parent_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_parent_hash"))
        batch_op.drop_column("parent_hash")
        batch_op.drop_column("app")
    op.drop_table("app_viewers")
    op.drop_table("app_sign_in_codes")
    op.drop_table("project_members")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("idle_timeout_s")
        batch_op.drop_column("visibility")
