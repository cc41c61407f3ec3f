"""access review campaigns (issue 18): campaigns, items, decisions, and access found in apps

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jml.store.tables import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'review_campaign',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(), nullable=False),
        sa.Column('by', sa.String(), nullable=False),
        sa.Column('connector', sa.String(), nullable=True),
        sa.Column('created_by', sa.String(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=True),
        sa.Column('due_at', UTCDateTime(), nullable=True),
        sa.Column('closed_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'review_item',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('employee_id', sa.String(), nullable=False),
        sa.Column('connector', sa.String(), nullable=False),
        sa.Column('username', sa.String(), nullable=False),
        sa.Column('entitlement', sa.String(), nullable=False),
        sa.Column('reviewer', sa.String(), nullable=False),
        sa.Column('why', sa.String(), nullable=False),
        sa.Column('why_detail', sa.JSON(), nullable=True),
        sa.Column('held_by', sa.String(), nullable=False),
        sa.Column('last_change', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_review_item_campaign_id', 'review_item', ['campaign_id'])
    op.create_index('ix_review_item_employee_id', 'review_item', ['employee_id'])
    op.create_index('ix_review_item_campaign_reviewer', 'review_item', ['campaign_id', 'reviewer'])
    op.create_table(
        'review_decision',
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('campaign_id', sa.Integer(), nullable=False),
        sa.Column('decision', sa.String(), nullable=False),
        sa.Column('decided_by', sa.String(), nullable=False),
        sa.Column('reason', sa.String(), nullable=False),
        sa.Column('decided_at', UTCDateTime(), nullable=True),
        sa.Column('audit_seq', sa.Integer(), nullable=True),
        sa.Column('audit_hash', sa.String(), nullable=True),
        sa.Column('plan_id', sa.String(), nullable=True),
        sa.Column('verified_at', UTCDateTime(), nullable=True),
        sa.Column('verify_error', sa.String(), nullable=True),
        sa.PrimaryKeyConstraint('item_id'),
    )
    op.create_index('ix_review_decision_campaign_id', 'review_decision', ['campaign_id'])
    op.create_table(
        'found_access',
        sa.Column('connector', sa.String(), nullable=False),
        sa.Column('username', sa.String(), nullable=False),
        sa.Column('entitlement', sa.String(), nullable=False),
        sa.Column('employee_id', sa.String(), nullable=False),
        sa.Column('remote_id', sa.String(), nullable=True),
        sa.Column('seen_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('connector', 'username', 'entitlement'),
    )


def downgrade() -> None:
    op.drop_table('found_access')
    op.drop_index('ix_review_decision_campaign_id', table_name='review_decision')
    op.drop_table('review_decision')
    op.drop_index('ix_review_item_campaign_reviewer', table_name='review_item')
    op.drop_index('ix_review_item_employee_id', table_name='review_item')
    op.drop_index('ix_review_item_campaign_id', table_name='review_item')
    op.drop_table('review_item')
    op.drop_table('review_campaign')
