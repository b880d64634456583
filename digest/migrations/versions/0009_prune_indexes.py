"""prune indexes: the foreign keys into paper and delivery that had no index of their own

Deleting a paper makes the database find the sent_paper and feedback rows that point at it (ON DELETE CASCADE), and
deleting a delivery the sent_paper rows that point at it (ON DELETE SET NULL). Neither column led an index
(uq_sent_paper and uq_feedback lead with subscriber_id), so each deleted row cost a scan of the whole table: on
PostgreSQL, whose foreign-key triggers run one query per deleted row, `digest prune` of a year-old database (5 million
sent_paper rows) would have taken days. digest.store.retention needs them; the daily run's sent_among finds the
candidates already sent through ix_sent_paper_paper_id instead of reading every paper ever sent to each subscriber.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 21:00:00
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sent_paper_paper_id", "sent_paper", ["paper_id"], unique=False)
    op.create_index("ix_sent_paper_delivery_id", "sent_paper", ["delivery_id"], unique=False)
    op.create_index("ix_feedback_paper_id", "feedback", ["paper_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_feedback_paper_id", table_name="feedback")
    op.drop_index("ix_sent_paper_delivery_id", table_name="sent_paper")
    op.drop_index("ix_sent_paper_paper_id", table_name="sent_paper")
