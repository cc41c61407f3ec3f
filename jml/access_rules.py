"""Access requests' policy, pure: who may ask, who may approve, how many approvals, how long.

| risk   | who approves (never the requester, never the person who gets the access) | approvals |
|--------|---------------------------------------------------------------------------|-----------|
| low    | the person's manager (HR) or the entitlement's owner (catalogue)          | 1         |
| medium | the owner                                                                 | 1         |
| high   | manager, owner or an approver, two distinct people                        | 2         |

Someone with the `approve` right (role approver or admin) may approve at any risk: they are the
organisation's designated approvers, and an entitlement with no owner configured still needs one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jml.model import ConnectorTraits
from jml.policy import Policy, normalize_grant

RISKS = ("low", "medium", "high")
MANAGER, OWNER, APPROVER = "manager", "owner", "approver"


def approvals_required(risk: str) -> int:
    return 2 if risk == "high" else 1


@dataclass(frozen=True, slots=True)
class Parties:
    """One would-be approver of one request, as facts."""

    approver_key: str
    requested_by: str | None
    is_grantee: bool  # the approver is the person who gets the access
    is_manager: bool  # the approver is the grantee's manager in HR data
    is_owner: bool  # the approver is the entitlement's owner in the catalogue
    can_approve: bool  # the approver holds the `approve` right


@dataclass(frozen=True, slots=True)
class Verdict:
    basis: str | None  # manager | owner | approver: the vote counts; None: refused
    refusal: str = ""


def judge(risk: str, p: Parties) -> Verdict:
    """May this person approve a request of this risk, and on what basis."""
    if p.requested_by is not None and p.approver_key == p.requested_by:
        return Verdict(None, "you requested it: someone else must approve it")
    if p.is_grantee:
        return Verdict(None, "the access is for you: someone else must approve it")
    if risk == "medium":
        named = [OWNER] if p.is_owner else []
    else:
        named = [b for b, yes in ((MANAGER, p.is_manager), (OWNER, p.is_owner)) if yes]
    if named:
        return Verdict(named[0])
    if p.can_approve:
        return Verdict(APPROVER)
    who = {"low": "the person's manager, the entitlement's owner or an approver",
           "medium": "the entitlement's owner or an approver"}.get(risk, "the manager, the owner or an approver")
    return Verdict(None, f"a {risk}-risk request is approved by {who}")


def may_request(*, is_self: bool, is_manager: bool, can_request_any: bool) -> bool:
    """For oneself, for one's reports (HR's manager_id), or anyone with the `request` right."""
    return is_self or is_manager or can_request_any


def check_duration(asked: dt.timedelta | None, default: dt.timedelta, maximum: dt.timedelta | None) -> dt.timedelta:
    """The duration granted: the one asked for (default when none), never more than the maximum."""
    d = default if asked is None else asked
    if d <= dt.timedelta(0):
        raise ValueError("duration must be longer than 0s")
    if maximum is not None and d > maximum:
        raise ValueError(f"duration {_human(d)} is longer than this entitlement's maximum {_human(maximum)}")
    return d


def _human(d: dt.timedelta) -> str:
    s = int(d.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0 and s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def rule_grants(policy: Policy, traits: Mapping[str, ConnectorTraits]) -> dict[str, frozenset[str]]:
    """connector -> every grant some rule gives (normalized): the birthright entitlements."""
    out: dict[str, set[str]] = {}
    for rule in policy.rules:
        for connector, grants in rule.grant.items():
            t = traits.get(connector) or ConnectorTraits(connector)
            out.setdefault(connector, set()).update(normalize_grant(g, t) for g in grants)
    return {c: frozenset(g) for c, g in out.items()}


def normalize_all(grants: Iterable[str], traits: ConnectorTraits) -> frozenset[str]:
    return frozenset(normalize_grant(g, traits) for g in grants)
