"""users.gitlab_id (GitLab's immutable user id links an account); api_tokens.last_used_at

Existing links by username keep their gitlab_username and get no id here: the migration cannot
ask GitLab, and the account holding a name today may not be the one that linked. The first
sign-in of such a user whose GitLab account is older than the local user claims the link
(nakama.auth.TokenStore.gitlab_user); from then on only the id counts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gitlab_id", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint("uq_users_gitlab_id", ["gitlab_id"])
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_gitlab_id", type_="unique")
        batch_op.drop_column("gitlab_id")
