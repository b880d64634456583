"""pending profile: a subscribe request's profile waits for its confirmation link

The subscribe page used to write the requested profile onto an unsubscribed, bounced or pending subscriber at once
(and set it pending), so a stranger could rewrite anyone's profile who was not active. Each request now goes to a
pending_profile row named by the link of its confirmation email, applied only when that link is clicked.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 15:00:00
"""
from alembic import op
import sqlalchemy as sa

import digest.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_profile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_at", digest.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pending_profile_subscriber_id", "pending_profile", ["subscriber_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_pending_profile_subscriber_id", table_name="pending_profile")
    op.drop_table("pending_profile")
