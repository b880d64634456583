"""front page: a full-text index over paper titles and abstracts; delivery.contents

Search (the web front's /search) goes through one store function, digest.store.search.search_papers:
- PostgreSQL: a GIN index on the weighted tsvector of title (A) and abstract (B), kept up to date by PostgreSQL.
- SQLite: an FTS5 table paper_search (rowid = paper.id) that digest.store.search.update_search_index catches up
  outside the bulk upsert (indexing every abstract inside it would make an import several times slower): papers with
  an id above the index's highest rowid are new; the upsert notes papers whose title or abstract changed in
  paper_search_stale (an UPDATE trigger would do it too, but its mere presence made every insert of a bulk import
  60% slower), and a trigger drops a deleted paper's entry. An existing database starts with an empty index,
  filled by the first searches.
  A later migration that rebuilds the paper table (batch mode copies it) drops its trigger: it must create
  PAPER_TRIGGERS again (tests/test_migrations.py checks it exists at the newest revision).

delivery.contents (JSON, NULL for rows sent before) records how an edition showed its papers: the picks with their
reasons, then the trending ones, so /edition/<token> shows what the email showed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As in digest.store.search; copied so this revision never changes with the code.
PG_VECTOR = "(setweight(to_tsvector('english'::regconfig, title), 'A') || setweight(to_tsvector('english'::regconfig, abstract), 'B'))"
PAPER_TRIGGERS = (
    "CREATE TRIGGER paper_search_removed AFTER DELETE ON paper "
    "BEGIN DELETE FROM paper_search WHERE rowid = old.id; DELETE FROM paper_search_stale WHERE paper_id = old.id; END",
)


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contents", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_paper_search ON paper USING gin ({PG_VECTOR})")
        return
    # Porter stems English words ("autoencoders" finds "autoencoder"), as PostgreSQL's english configuration does.
    op.execute("CREATE VIRTUAL TABLE paper_search USING fts5 (title, abstract, tokenize = 'porter unicode61 remove_diacritics 2')")
    op.execute("CREATE TABLE paper_search_stale (paper_id INTEGER NOT NULL PRIMARY KEY)")
    for trigger in PAPER_TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_paper_search")
    else:
        op.execute("DROP TRIGGER paper_search_removed")
        op.execute("DROP TABLE paper_search_stale")
        op.execute("DROP TABLE paper_search")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("contents")
