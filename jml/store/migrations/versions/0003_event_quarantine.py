"""webhook_event quarantine: an event that failed while processed is set aside, with its error

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jml.store.tables import UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quarantined_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('error', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhook_event', schema=None) as batch_op:
        batch_op.drop_column('error')
        batch_op.drop_column('quarantined_at')
