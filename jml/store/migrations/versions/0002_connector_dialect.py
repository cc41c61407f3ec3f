"""connector dialect: what each SCIM server turned out to support, shared by replicas

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jml.store.tables import UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'connector_dialect',
        sa.Column('connector', sa.String(), nullable=False),
        sa.Column('facts', sa.JSON(), nullable=True),
        sa.Column('updated_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('connector'),
    )


def downgrade() -> None:
    op.drop_table('connector_dialect')
