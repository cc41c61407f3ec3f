"""Access review campaigns, the pure part: what goes before a reviewer, why the person holds
it, who reviews it, who may decide, and the operation a revocation pushes. No I/O, no clock.

An item is one person's account in one connector, or one entitlement of that account. Why
they hold it is, in this order: a rule grants it (its name), an approved request does (its
id, approver, expiry), or nothing does ("none": unexplained access).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jml.model import Action, ConnectorTraits, Operation, Priority

ACCOUNT = "(account)"  # the entitlement name of an account item
BY = ("app", "manager")
DECISIONS = ("keep", "revoke")
RULE, REQUEST, NONE = "rule", "request", "none"


@dataclass(frozen=True, slots=True)
class Holding:
    """Something a person (or nobody: employee_id "") holds in an app."""

    connector: str
    employee_id: str
    username: str
    entitlement: str  # a grant, or ACCOUNT
    held_by: str = "jml"  # jml: recorded pushing it | app: found there by reconciliation
    last_change: dt.datetime | None = None  # when jml last changed it (None: never did)
    remote_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestGrant:
    """An approved, unexpired access request that grants an entitlement."""

    id: str
    approver: str
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Why:
    kind: str  # rule | request | none
    detail: Mapping[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        if self.kind == RULE:
            return f"rule {self.detail.get('rule')}"
        if self.kind == REQUEST:
            until = self.detail.get("expires_at")
            return f"request {self.detail.get('request')} approved by {self.detail.get('approver')}" + (
                f" until {until}" if until else "")
        return "nothing (unexplained)"


@dataclass(frozen=True, slots=True)
class ItemDraft:
    holding: Holding
    reviewer: str
    why: Why


def classify(entitlement: str, rule_grants: Mapping[str, str] | None,
             requests: Mapping[str, RequestGrant]) -> Why:
    """Why a person holds `entitlement` in one connector. `rule_grants`: grant -> rule name of
    what the rules give them there (None: no rule names the connector for them); `requests`:
    grant -> their approved request there."""
    if entitlement == ACCOUNT:
        if rule_grants is not None:
            rules = sorted(set(rule_grants.values()))
            return Why(RULE, {"rule": ", ".join(rules) if rules else "(a rule names the connector)"})
        req = next(iter(sorted(requests.items())), None)
        if req is not None:
            return _request_why(req[1])
        return Why(NONE)
    if rule_grants is not None and entitlement in rule_grants:
        return Why(RULE, {"rule": rule_grants[entitlement]})
    req_grant = requests.get(entitlement)
    if req_grant is not None:
        return _request_why(req_grant)
    return Why(NONE)


def _request_why(r: RequestGrant) -> Why:
    return Why(REQUEST, {"request": r.id, "approver": r.approver,
                         "expires_at": r.expires_at.isoformat() if r.expires_at else None})


def reviewer_by_app(connector: str, entitlement: str, owners: Mapping[tuple[str, str], str], default: str) -> str:
    """The entitlement's catalogue owner; an account's: the connector's owner ("*"); else the default."""
    owner = owners.get((connector, entitlement)) or owners.get((connector, "*")) or default
    return owner.casefold()


def reviewer_by_manager(employee_id: str, managers: Mapping[str, str], emails: Mapping[str, str],
                        default: str) -> str:
    """The person's manager (HR manager_id -> their work e-mail); else the default reviewer."""
    manager = managers.get(employee_id, "")
    email = emails.get(manager, "") if manager and manager != employee_id else ""
    return (email or default).casefold()


def build_items(holdings: Iterable[Holding], *, by: str, connector: str | None,
                rule_grants: Mapping[tuple[str, str], Mapping[str, str]],
                requests: Mapping[tuple[str, str], Mapping[str, RequestGrant]],
                owners: Mapping[tuple[str, str], str], managers: Mapping[str, str], emails: Mapping[str, str],
                default_reviewer: str) -> list[ItemDraft]:
    """One item per (person, connector, entitlement) and per account, each held thing once
    (what jml recorded wins over the same thing found in the app), sorted for a stable campaign.

    rule_grants / requests are keyed by (connector, employee_id)."""
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}, not {by!r}")
    seen: dict[tuple[str, str, str, str], Holding] = {}
    for h in holdings:
        if connector is not None and h.connector != connector:
            continue
        key = (h.connector, h.employee_id, h.username.casefold() if not h.employee_id else "", h.entitlement)
        if key not in seen or (seen[key].held_by == "app" and h.held_by == "jml"):
            seen[key] = h
    out = []
    for key in sorted(seen):
        h = seen[key]
        k = (h.connector, h.employee_id)
        why = classify(h.entitlement, rule_grants.get(k), requests.get(k, {})) if h.employee_id else Why(NONE)
        if by == "app":
            reviewer = reviewer_by_app(h.connector, h.entitlement, owners, default_reviewer)
        else:
            reviewer = reviewer_by_manager(h.employee_id, managers, emails, default_reviewer)
        out.append(ItemDraft(h, reviewer, why))
    return out


def refusal(*, subject_id: str, subject_email: str, reviewer: str, who_person: str | None, who_email: str,
            admin: bool, decided: bool) -> str | None:
    """Why this decider may not decide this item (None: they may). Nobody reviews their own
    access, admins included; otherwise only the assigned reviewer, or an admin."""
    if decided:
        return "the item is already decided"
    mine = bool(subject_id) and who_person == subject_id
    if subject_email and who_email and subject_email.casefold() == who_email.casefold():
        mine = True
    if mine:
        return "nobody may decide on their own access"
    if admin:
        return None
    if not who_email or who_email.casefold() != reviewer.casefold():
        return "the item is assigned to another reviewer"
    return None


def revoke_operation(h: Holding, traits: ConnectorTraits) -> Operation:
    """The one operation that takes a held thing away: an entitlement's removal, an account's
    deactivation. An account jml holds no record of (no person owns it, or it was made outside jml)
    is deleted by its id, as reconcile deletes orphans: there is no recorded account to deactivate."""
    detail: dict[str, Any] = {"username": h.username, "review": True}
    if h.entitlement == ACCOUNT:
        if not h.employee_id or h.held_by == "app":
            return Operation(h.connector, Action.DELETE, f"orphan:{h.remote_id or h.username}",
                             {**detail, "remote_id": h.remote_id, "orphan": True}, Priority.NORMAL)
        return Operation(h.connector, Action.DEACTIVATE, h.employee_id, detail, Priority.NORMAL)
    g = h.entitlement
    if traits.assignment_grants and "@" in g and not g.startswith("group:"):
        return Operation(h.connector, Action.UNASSIGN, h.employee_id, {**detail, "grant": g}, Priority.NORMAL)
    return Operation(h.connector, Action.REMOVE_MEMBER, h.employee_id, {**detail, "group": g}, Priority.NORMAL)


def revoke_operations(h: Holding, traits: ConnectorTraits, recorded_grants: Iterable[str] = ()) -> list[Operation]:
    """revoke_operation, and for an account jml holds, the removal of each grant recorded on it
    too (what the planner does to an account no rule wants: inactive and holding nothing)."""
    first = revoke_operation(h, traits)
    if h.entitlement != ACCOUNT or first.action is not Action.DEACTIVATE:
        return [first]
    return [first, *(revoke_operation(Holding(h.connector, h.employee_id, h.username, g), traits)
                     for g in sorted(recorded_grants))]


def revoked_in_app(h: Holding, active: bool | None, groups: frozenset[str] | None) -> bool:
    """The read-back shows the thing gone: the account inactive or gone (active None), or the
    entitlement no longer among the account's."""
    if active is None:
        return True
    if h.entitlement == ACCOUNT:
        return not active
    return groups is not None and h.entitlement not in groups


def progress(items: Iterable[tuple[str, bool]]) -> dict[str, tuple[int, int]]:
    """reviewer -> (decided, total), from (reviewer, decided) pairs."""
    out: dict[str, list[int]] = {}
    for reviewer, decided in items:
        n = out.setdefault(reviewer, [0, 0])
        n[0] += int(decided)
        n[1] += 1
    return {r: (d, t) for r, (d, t) in sorted(out.items())}


def state_of(decision: str | None, verified: bool, verify_error: str | None) -> str:
    """An item's state for the gauge and the pages: open | kept | revoking | revoked | revoke_failed."""
    if decision is None:
        return "open"
    if decision == "keep":
        return "kept"
    if verified:
        return "revoked"
    return "revoke_failed" if verify_error else "revoking"
