"""retention and erasure of leavers' personal data (issue 18)

Reserved for issue 18's work: filled in by whoever builds it.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
