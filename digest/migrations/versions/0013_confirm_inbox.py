"""confirm inbox: the caps on confirmation emails counted per inbox, in the database

The caps (confirm_interval, confirm_daily_limit) were counted twice: per address as typed on the subscriber row, and
per inbox (ada+1@ and Ada@ are ada@) in the web's rate-limit storage, which is each process's memory unless Redis is
set: `digest web --processes 4` without Redis, or two hosts, sent a victim four or two times the cap through
plus-addresses. One row per inbox here, claimed with a compare-and-set as the subscriber row was. The counts start
empty: at most one more day of emails under the old caps.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 00:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "confirm_inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inbox", sa.String(length=320), nullable=False),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("inbox"),
    )
    op.create_index("ix_confirm_inbox_updated_at", "confirm_inbox", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_confirm_inbox_updated_at", table_name="confirm_inbox")
    op.drop_table("confirm_inbox")
