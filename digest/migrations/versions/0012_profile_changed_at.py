"""profile changed at: when a subscriber's profile was last set, so a prune reads the seed lists once

`digest prune` must never delete a paper someone names as a seed, also while it runs, so each batch's write
transaction read every subscriber's seed list again: 100,000 rows (125 ms on SQLite, 270 ms on PostgreSQL) per batch
of 500 papers, under SQLite's write lock. With subscriber.profile_changed_at (set by every change of a profile,
indexed) a prune reads them all once and each batch only the few changed since (digest.store.retention). Existing rows
keep NULL: their lists are in the prune's one full read.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: SQLite adds it in place (ALTER TABLE ADD COLUMN), without copying the table.
    op.add_column("subscriber", sa.Column("profile_changed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_subscriber_profile_changed_at", "subscriber", ["profile_changed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_subscriber_profile_changed_at", table_name="subscriber")
    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.drop_column("profile_changed_at")
