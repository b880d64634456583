"""confirmation caps: per-address record of confirmation emails sent

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 18:00:00

Two columns on subscriber: confirm_emails (JSON list of the times of confirmation emails sent in the last
24 hours) and confirm_version (bumped with each change; the compare-and-set guard). Existing rows get an
empty list and 0: nobody has been capped yet.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirm_emails', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('confirm_version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_column('confirm_version')
        batch_op.drop_column('confirm_emails')
