"""sla_clock.breach_cause: why a deprovision missed its deadline (issue 17)

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sla_clock', schema=None) as batch_op:
        batch_op.add_column(sa.Column('breach_cause', sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sla_clock', schema=None) as batch_op:
        batch_op.drop_column('breach_cause')
