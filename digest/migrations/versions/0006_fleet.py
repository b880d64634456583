"""fleet: leases on deliveries, a shared send pace, an index of the open deliveries

Several workers (processes, hosts) on one PostgreSQL database claim deliveries with FOR UPDATE SKIP LOCKED and hold
them under a lease: delivery.worker names the holder, delivery.lease_expires_at (the database's clock) says until
when; a heartbeat moves it on while the worker sends, and another worker takes the row over once it has passed.
send_pace keeps send_rate across every worker (digest.store.pace). ix_delivery_open indexes only the rows still to
send, so a claim never walks the finished ones.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:00:00
"""
import sqlalchemy as sa
from alembic import op

import digest.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = "state IN ('pending', 'sending', 'deferred')"


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", digest.models.UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_delivery_open", "delivery", ["edition", "id"], unique=False, postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    op.create_table(
        "send_pace",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_at", digest.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("send_pace")
    op.drop_index("ix_delivery_open", table_name="delivery")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("worker")
