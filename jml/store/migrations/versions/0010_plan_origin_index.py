"""an index on plan (origin, created_at) for the event-leaver bound

Every pass of the event processor counts the people deprovisioned by event and offboard
plans of the last hour (guard.max_event_leavers_per_hour, jml/event_plan.py). Without this
index SQLite read every queued or done plan ever made (one more a pass) to find them.

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_plan_origin_created', 'plan', ['origin', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_plan_origin_created', table_name='plan')
