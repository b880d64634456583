"""lean ledger indexes: delivery and sent_paper lose their index on subscriber_id alone

Each table's unique constraint (uq_delivery on subscriber_id, edition; uq_sent_paper on subscriber_id, paper_id)
already leads with subscriber_id, so its index answers every lookup and cascade by subscriber; the second index only
cost a B-tree write per row: 14 sent_paper rows and one delivery row per email sent (issue 11, sixth pass: the
ledger's instructions per email 1.076 M -> 1.006 M with both gone, benchmarks/instructions.py ledger).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 06:00:00
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_sent_paper_subscriber_id", table_name="sent_paper")
    op.drop_index("ix_delivery_subscriber_id", table_name="delivery")


def downgrade() -> None:
    op.create_index("ix_delivery_subscriber_id", "delivery", ["subscriber_id"], unique=False)
    op.create_index("ix_sent_paper_subscriber_id", "sent_paper", ["subscriber_id"], unique=False)
