"""access requests, time-bound grants (issue 18): access_request, access_vote, access_denial

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jml.store.tables import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'access_request',
        sa.Column('id', sa.String(), nullable=False),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('employee_id', sa.String(), nullable=False),
        sa.Column('connector', sa.String(), nullable=False),
        sa.Column('grant', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=False),
        sa.Column('duration_seconds', sa.Integer(), nullable=False),
        sa.Column('requested_by', sa.String(), nullable=True),
        sa.Column('requester', sa.String(), nullable=True),
        sa.Column('state', sa.String(), nullable=False),
        sa.Column('required', sa.Integer(), nullable=False),
        sa.Column('decided_by', sa.String(), nullable=True),
        sa.Column('end_reason', sa.String(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=True),
        sa.Column('decided_at', UTCDateTime(), nullable=True),
        sa.Column('granted_at', UTCDateTime(), nullable=True),
        sa.Column('expires_at', UTCDateTime(), nullable=True),
        sa.Column('ended_at', UTCDateTime(), nullable=True),
        sa.Column('removal_deadline', UTCDateTime(), nullable=True),
        sa.Column('removal_verified_at', UTCDateTime(), nullable=True),
        sa.Column('removal_breached', sa.Boolean(), nullable=False),
        sa.Column('removal_check', sa.String(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_access_request_employee_id', 'access_request', ['employee_id'])
    op.create_index('ix_access_request_state', 'access_request', ['state'])
    op.create_index('ix_access_request_expires_at', 'access_request', ['expires_at'])
    op.create_table(
        'access_vote',
        sa.Column('request_id', sa.String(), nullable=False),
        sa.Column('approver_key', sa.String(), nullable=False),
        sa.Column('approver', sa.String(), nullable=True),
        sa.Column('basis', sa.String(), nullable=True),
        sa.Column('at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('request_id', 'approver_key'),
    )
    op.create_table(
        'access_denial',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('employee_id', sa.String(), nullable=False),
        sa.Column('connector', sa.String(), nullable=False),
        sa.Column('grant', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=False),
        sa.Column('decided_by', sa.String(), nullable=True),
        sa.Column('source', sa.String(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('employee_id', 'connector', 'grant'),
    )
    op.create_index('ix_access_denial_employee_id', 'access_denial', ['employee_id'])


def downgrade() -> None:
    op.drop_index('ix_access_denial_employee_id', table_name='access_denial')
    op.drop_table('access_denial')
    op.drop_table('access_vote')
    op.drop_index('ix_access_request_expires_at', table_name='access_request')
    op.drop_index('ix_access_request_state', table_name='access_request')
    op.drop_index('ix_access_request_employee_id', table_name='access_request')
    op.drop_table('access_request')
