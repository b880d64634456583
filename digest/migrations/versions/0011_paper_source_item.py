"""paper source item: a source's entry found again by its guid; item ids bounded as keys are

A generic feed entry without a DOI or an arXiv id is keyed by its title, so an entry whose title the publisher
corrected became a second paper, sent again. The store now finds such an entry by (source_id, item_id) first (the
feed's guid, else its link; digest.store.papers), which needs an index on both: ix_paper_source_item replaces
ix_paper_source_source_id, which it leads with, so the table keeps two indexes besides its unique constraint and every
lookup and cascade by source is served as before. An item id longer than 512 characters is rewritten as keys are
(its start, "#" and the SHA-256 of the whole): PostgreSQL refuses a B-tree entry over about 2,700 bytes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 10:00:00
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

MAX_KEY = 512  # as digest.sources.clean.MAX_KEY; copied so this revision never changes with the code
_KEY_HASH = 64


def _bounded_key(key: str) -> str:
    return f"{key[:MAX_KEY - _KEY_HASH - 1]}#{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def upgrade() -> None:
    paper_source = sa.table("paper_source", sa.column("id", sa.Integer), sa.column("item_id", sa.Text))
    conn = op.get_bind()
    long_ids = conn.execute(sa.select(paper_source.c.id, paper_source.c.item_id).where(sa.func.length(paper_source.c.item_id) > MAX_KEY)).all()
    for row_id, item_id in long_ids:
        conn.execute(sa.update(paper_source).where(paper_source.c.id == row_id).values(item_id=_bounded_key(item_id)))
    op.drop_index("ix_paper_source_source_id", table_name="paper_source")
    op.create_index("ix_paper_source_item", "paper_source", ["source_id", "item_id"], unique=False)


def downgrade() -> None:
    # Bounded item ids stay bounded: the whole id is not kept anywhere.
    op.drop_index("ix_paper_source_item", table_name="paper_source")
    op.create_index("ix_paper_source_source_id", "paper_source", ["source_id"], unique=False)
