"""notification_targets and pipelines.notified_at: deploy notifications (issue 14)

A project's targets (a signed generic webhook or a Slack-compatible one), their URL and signing
secret encrypted. ``notified_at`` marks a finished pipeline whose targets were told; every
pipeline that finished before this revision is marked, so an upgrade sends nothing old.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_targets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("on_deploy", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_notification_targets_project", "notification_targets", ["project"])
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_pipelines_notified_at", ["notified_at"])
    op.execute("UPDATE pipelines SET notified_at = finished_at WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_index("ix_pipelines_notified_at")
        batch_op.drop_column("notified_at")
    op.drop_index("ix_notification_targets_project", table_name="notification_targets")
    op.drop_table("notification_targets")
