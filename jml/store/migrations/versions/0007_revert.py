"""plan_prior: what each plan replaced, for `jml revert` (issue 18)

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plan_prior',
        sa.Column('plan_id', sa.String(), nullable=False),
        sa.Column('employee_id', sa.String(), nullable=False),
        sa.Column('state', sa.JSON(), nullable=True),
        sa.Column('row_hash', sa.String(), nullable=True),
        sa.Column('accounts', sa.JSON(), nullable=True),
        sa.Column('restore', sa.JSON(), nullable=True),
        sa.Column('restore_row_hash', sa.String(), nullable=True),
        sa.PrimaryKeyConstraint('plan_id', 'employee_id'),
    )


def downgrade() -> None:
    op.drop_table('plan_prior')
