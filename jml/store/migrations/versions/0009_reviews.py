"""access review campaigns (issue 18)

Reserved for issue 18's work: filled in by whoever builds it.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
