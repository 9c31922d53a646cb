"""secret variables encrypted at rest (no schema change: the value gets the "fernet:" mark)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-15 10:00:00.000000

The keys come from Database.migrate (the app's own); a migration run on its own reads them as
the app does: NAKAMA_SECRETS_KEY, else the key file in NAKAMA_DATA_DIR (made if missing).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

from nakama.db.session import BOX_ATTRIBUTE
from nakama.secretbox import SecretBox, is_encrypted

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_variables = sa.table(
    "project_variables",
    sa.column("id", sa.Integer),
    sa.column("project", sa.String),
    sa.column("key", sa.String),
    sa.column("value", sa.Text),
    sa.column("secret", sa.Boolean),
)


def upgrade() -> None:
    # Every secret is plain before this revision, whatever it looks like: encrypt them all.
    _convert(lambda box, value, what: box.encrypt(value))


def downgrade() -> None:
    _convert(
        lambda box, value, what: box.decrypt(value, what=what) if is_encrypted(value) else value
    )


def _convert(change: Callable[[SecretBox, str, str], str]) -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_variables.c.id, _variables.c.project, _variables.c.key, _variables.c.value)
        .where(_variables.c.secret == sa.true())
        .order_by(_variables.c.id)
    ).all()
    if not rows:
        return  # no key needed (and none made) for a database without secrets
    box = _box()
    for row_id, project, key, value in rows:
        what = f"the secret variable {key!r} of project {project!r}"
        bind.execute(
            sa.update(_variables)
            .where(_variables.c.id == row_id)
            .values(value=change(box, value, what))
        )


def _box() -> SecretBox:
    given = context.config.attributes.get(BOX_ATTRIBUTE)
    if isinstance(given, SecretBox):
        return given
    from nakama.secret_keys import load_keys
    from nakama.settings import Settings

    return load_keys(Settings()).box()
