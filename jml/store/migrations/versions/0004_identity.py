"""identity: scoped API tokens (hashed) and four-eyes approvals of held plans and pre-approvals

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jml.store.tables import UTCDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_token',
        sa.Column('name', sa.String(), nullable=False),
        sa.Column('token_hash', sa.String(), nullable=False),
        sa.Column('roles', sa.JSON(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=True),
        sa.Column('created_by', sa.String(), nullable=True),
        sa.Column('expires_at', UTCDateTime(), nullable=True),
        sa.Column('revoked_at', UTCDateTime(), nullable=True),
        sa.Column('last_used_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('name'),
        sa.UniqueConstraint('token_hash'),
    )
    op.create_table(
        'approval_request',
        sa.Column('id', sa.String(), nullable=False),
        sa.Column('kind', sa.String(), nullable=False),
        sa.Column('requested_by', sa.String(), nullable=True),
        sa.Column('requester', sa.String(), nullable=True),
        sa.Column('payload', sa.JSON(), nullable=True),
        sa.Column('state', sa.String(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=True),
        sa.Column('decided_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'approval_vote',
        sa.Column('request_id', sa.String(), nullable=False),
        sa.Column('approver_key', sa.String(), nullable=False),
        sa.Column('approver', sa.String(), nullable=True),
        sa.Column('at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('request_id', 'approver_key'),
    )


def downgrade() -> None:
    op.drop_table('approval_vote')
    op.drop_table('approval_request')
    op.drop_table('api_token')
