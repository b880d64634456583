"""heartbeat: the last sign of life of each daemon and one-shot run

`digest status --check` said "ok" for an hour while the mail server was down (a failed tick or run was only logged),
and could not tell a dead daemon at all until an edition was an hour late. One row per host and kind (daemon, run,
send, worker), upserted by each tick, by the daemon's own heartbeat and by each command's end: the last job's outcome
and error, when the host was last seen, a daemon's tick and its clean stop. Keyed on the host, not the pid, so the
table grows only with the hosts; `digest prune` deletes a host not seen for 30 days.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 01:30:00
"""
import sqlalchemy as sa
from alembic import op

import digest.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("tick_seconds", sa.Integer(), nullable=True),
        sa.Column("seen_at", digest.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", digest.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", digest.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stopped_at", digest.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "host", name="uq_heartbeat"),
    )
    op.create_index("ix_heartbeat_seen_at", "heartbeat", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_heartbeat_seen_at", table_name="heartbeat")
    op.drop_table("heartbeat")
