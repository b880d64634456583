"""text columns for identifiers; source.last_fetch_skipped

Paper.key, ident, arxiv_id, doi and Source.name become TEXT: PostgreSQL enforced their VARCHAR(n) lengths (SQLite
never did), so one 671-character link or 308-character DOI stopped every fetch there. Lengths are now bounded where
the records are read (digest.sources.check). A key longer than 512 characters (possible on SQLite only) is rewritten
the way paper_key now bounds keys, so the same paper keeps matching. Source.last_fetch_skipped counts the entries the
last fetch refused, for `digest status`.

On SQLite the tables are copied (batch mode) with foreign keys off (see env.py): dropping the old paper table with
them on would cascade to every paper_source, feedback and sent_paper row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MAX_KEY = 512  # as digest.sources.clean.MAX_KEY; copied so this revision never changes with the code
_KEY_HASH = 64

PAPER_COLUMNS = (("key", sa.String(512), False), ("ident", sa.String(512), False), ("arxiv_id", sa.String(64), True),
                 ("doi", sa.String(255), True))


def _bounded_key(key: str) -> str:
    return f"{key[:MAX_KEY - _KEY_HASH - 1]}#{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def upgrade() -> None:
    with op.batch_alter_table("paper", schema=None) as batch_op:
        for name, old_type, nullable in PAPER_COLUMNS:
            batch_op.alter_column(name, existing_type=old_type, type_=sa.Text(), existing_nullable=nullable)
    with op.batch_alter_table("source", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(255), type_=sa.Text(), existing_nullable=False)
        batch_op.add_column(sa.Column("last_fetch_skipped", sa.Integer(), nullable=False, server_default="0"))

    paper = sa.table("paper", sa.column("id", sa.Integer), sa.column("key", sa.Text))
    conn = op.get_bind()
    long_keys = conn.execute(sa.select(paper.c.id, paper.c.key).where(sa.func.length(paper.c.key) > MAX_KEY)).all()
    for paper_id, key in long_keys:
        bounded = _bounded_key(key)
        if conn.execute(sa.select(paper.c.id).where(paper.c.key == bounded)).first() is None:
            conn.execute(sa.update(paper).where(paper.c.id == paper_id).values(key=bounded))


def downgrade() -> None:
    # On PostgreSQL this fails if a longer value was stored since: shorten or delete those rows first.
    with op.batch_alter_table("source", schema=None) as batch_op:
        batch_op.drop_column("last_fetch_skipped")
        batch_op.alter_column("name", existing_type=sa.Text(), type_=sa.String(255), existing_nullable=False)
    with op.batch_alter_table("paper", schema=None) as batch_op:
        for name, old_type, nullable in PAPER_COLUMNS:
            batch_op.alter_column(name, existing_type=sa.Text(), type_=old_type, existing_nullable=nullable)
