"""revert of an applied plan (issue 18)

Reserved for issue 18's work: filled in by whoever builds it.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
