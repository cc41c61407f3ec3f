"""Roles and the rights they carry: one table, read by every route.

| role     | rights                                                        |
|----------|---------------------------------------------------------------|
| viewer   | view (status page, status API, progress)                      |
| hr       | view, people (find a person, their access), offboard now      |
| operator | view, operate (pause, resume, retry, discard)                 |
| approver | view, approve (held plans, pre-approvals)                     |
| auditor  | view, audit (audit export, access report)                     |
| admin    | everything                                                    |
"""

from __future__ import annotations

from jml.config import ROLE_NAMES

ROLES = ROLE_NAMES

VIEW, PEOPLE, OFFBOARD, OPERATE, APPROVE, AUDIT = "view", "people", "offboard", "operate", "approve", "audit"

RIGHTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({VIEW}),
    "hr": frozenset({VIEW, PEOPLE, OFFBOARD}),
    "operator": frozenset({VIEW, OPERATE}),
    "approver": frozenset({VIEW, APPROVE}),
    "auditor": frozenset({VIEW, AUDIT}),
    "admin": frozenset({VIEW, PEOPLE, OFFBOARD, OPERATE, APPROVE, AUDIT}),
}


def rights(roles: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    out: set[str] = set()
    for r in roles:
        out |= RIGHTS.get(r, frozenset())
    return frozenset(out)
