"""access requests, time-bound grants (issue 18)

Reserved for issue 18's work: filled in by whoever builds it.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
