"""Roles and the rights they carry: one table, read by every route.

| role     | rights                                                        |
|----------|---------------------------------------------------------------|
| viewer   | view (status page, status API, progress)                      |
| hr       | view, people (find a person, their access), offboard now, request |
| operator | view, operate (pause, resume, retry, discard)                 |
| approver | view, approve (held plans, pre-approvals, access requests), request |
| auditor  | view, audit (audit export, access report)                     |
| admin    | everything                                                    |

`request`: ask for access for anyone (jml/access.py); without it a signed-in person may ask for
themselves and their reports, and approve what the approval policy names them for.

Every role also carries `review`: a signed-in person sees and decides only the access review
items assigned to them (by their e-mail); an admin may decide any item, `audit` sees them all;
nobody decides on their own access (jml/review_items.refusal).
"""

from __future__ import annotations

from jml.config import ROLE_NAMES

ROLES = ROLE_NAMES

VIEW, PEOPLE, OFFBOARD, OPERATE, APPROVE, AUDIT = "view", "people", "offboard", "operate", "approve", "audit"
REVIEW = "review"
REQUEST = "request"  # access requests for anyone (jml/access.py)

RIGHTS: dict[str, frozenset[str]] = {
    "viewer": frozenset({VIEW, REVIEW}),
    "hr": frozenset({VIEW, PEOPLE, OFFBOARD, REVIEW, REQUEST}),
    "operator": frozenset({VIEW, OPERATE, REVIEW}),
    "approver": frozenset({VIEW, APPROVE, REVIEW, REQUEST}),
    "auditor": frozenset({VIEW, AUDIT, REVIEW}),
    "admin": frozenset({VIEW, PEOPLE, OFFBOARD, OPERATE, APPROVE, AUDIT, REVIEW, REQUEST}),
}


def rights(roles: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    out: set[str] = set()
    for r in roles:
        out |= RIGHTS.get(r, frozenset())
    return frozenset(out)
