"""projects.source_url and projects.main_file: a project imported from an existing repository

``source_url`` says where the code came from (never with credentials: the token of a private
source is used once and kept nowhere). ``main_file`` is the script the app runs when the
repository's own ``nakama.toml`` does not say, recorded in the project rather than written into
the user's repository (a commit there would make their next push a non-fast-forward). Both are
NULL for every existing project: the starter kit's ``app.py``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("main_file", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("main_file")
        batch_op.drop_column("source_url")
