"""Rules: a person's HR attributes and lifecycle phase -> desired accounts and grants. Pure.

A rule's `when` maps attribute -> value or list of values (any of), compared
case-insensitively; every key must match. A person has an account in a connector when
some matching rule names that connector (an empty grant list still means "an account").
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from jml.model import ConnectorTraits, DesiredAccount, Lifecycle, Person, Phase, Status, keyshared_dict
from jml.review_items import ACCOUNT


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: Mapping[str, tuple[str, ...]]  # attribute -> accepted values (casefolded)
    grant: Mapping[str, tuple[str, ...]]  # connector -> grant names


@dataclass(frozen=True, slots=True)
class Policy:
    username: str
    rules: tuple[Rule, ...]
    protected: frozenset[str]  # userNames or employee_ids (casefolded)
    # Every attribute some rule looks at: read once per person, not once per rule.
    attributes: tuple[str, ...] = ()
    # What the rules grant, by the casefolded values of `attributes` (a pure function of them):
    # 100,000 people share a few hundred combinations, so the rules run once per combination.
    _memo: dict[tuple[str, ...], dict[str, dict[str, str]]] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False)
    _normalized: dict[tuple[tuple[str, ...], str, bool], Mapping[str, str]] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False)

    @staticmethod
    def build(username: str, rules: Sequence[tuple[str, Mapping[str, object], Mapping[str, Sequence[str]]]],
              protected: Sequence[str]) -> Policy:
        built = []
        for name, when, grant in rules:
            norm_when = {
                k: tuple(str(x).casefold() for x in (v if isinstance(v, (list, tuple)) else [v]))
                for k, v in when.items()
            }
            built.append(Rule(name, norm_when, {c: tuple(g) for c, g in grant.items()}))
        attributes = tuple(sorted({a for r in built for a in r.when}))
        return Policy(username, tuple(built), frozenset(p.casefold() for p in protected), attributes)

    def fingerprint(self) -> str:
        """A hash of the policy, recorded with every plan for the audit trail."""
        doc = {
            "username": self.username,
            "rules": [{"name": r.name, "when": dict(r.when), "grant": dict(r.grant)} for r in self.rules],
            "protected": sorted(self.protected),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class _Attrs(dict[str, str]):
    def __init__(self, person: Person) -> None:
        super().__init__()
        self.person = person

    def __missing__(self, key: str) -> str:
        return self.person.get(key)


@functools.lru_cache(maxsize=64)
def _single_field(template: str) -> str | None:
    """'{work_email}' -> 'work_email': the common template, rendered without str.format."""
    parts = list(string.Formatter().parse(template))
    if len(parts) == 1 and parts[0][0] == "" and parts[0][1] and not parts[0][2] and not parts[0][3]:
        return parts[0][1]
    return None


def render_username(template: str, person: Person) -> str:
    field = _single_field(template)
    if field is not None:
        return person.get(field).strip()
    return template.format_map(_Attrs(person)).strip()


def matches(rule: Rule, person: Person, values: Mapping[str, str] | None = None) -> bool:
    """Every `when` key matches (a list means any of). `values`: the person's casefolded
    attributes, precomputed by the caller when many rules are checked."""
    if values is None:
        return all(person.get(attr).casefold() in accepted for attr, accepted in rule.when.items())
    return all(values[attr] in accepted for attr, accepted in rule.when.items())


def normalize_grant(grant: str, traits: ConnectorTraits) -> str:
    """`group:NAME` is membership everywhere; a bare name is a group, except an AWS
    `PermissionSet@Account` assignment and GitHub's `team:SLUG`."""
    if ":" in grant.split("@", 1)[0]:
        return grant
    if traits.assignment_grants and "@" in grant:
        return grant
    return f"group:{grant}"


class _AccountAttributes:
    """Its instances' __dict__ is an account's attributes (jml.model.keyshared_dict)."""


def account_attributes(person: Person) -> dict[str, str]:
    # One dict per person, kept by the desired accounts and their create operations of a
    # first import: key-sharing (keyshared_dict), filled in this fixed order.
    out: dict[str, str] = keyshared_dict(_AccountAttributes)
    for key, value in (
        ("given_name", person.preferred_name or person.first_name),
        ("family_name", person.last_name),
        ("display_name", person.display_name),
        ("email", person.work_email),
        ("title", person.job_title),
        ("department", person.department),
        ("cost_center", person.cost_center),
        ("employee_number", person.employee_id),
        ("manager_id", person.manager_id),
        ("location", person.location),
        ("country", person.country),
        ("employment_type", person.employment_type),
        ("github_username", person.github_username),
    ):
        if value:
            out[key] = value
    return out


def grants_for(person: Person, policy: Policy) -> dict[str, dict[str, str]]:
    """connector -> {grant: rule name} for every matching rule (first rule wins a grant)."""
    return {c: dict(g) for c, g in _grants_shared(person, policy)[1].items()}


def _grants_shared(person: Person, policy: Policy) -> tuple[tuple[str, ...] | None, dict[str, dict[str, str]]]:
    """grants_for, memoized by the values the rules look at: (the memo's key, or None when not
    kept; the result, shared: never change it)."""
    names = policy.attributes or tuple(sorted({a for r in policy.rules for a in r.when}))
    key = tuple(person.get(a).casefold() for a in names)
    out = policy._memo.get(key)
    if out is not None:
        return key, out
    values = dict(zip(names, key, strict=True))
    out = {}
    for rule in policy.rules:
        if not matches(rule, person, values):
            continue
        for connector, granted in rule.grant.items():
            bucket = out.setdefault(connector, {})
            for g in granted:
                bucket.setdefault(g, rule.name)
    if len(policy._memo) >= 100_000:  # bounded: rules on a near-unique attribute gain nothing from it
        return None, out
    policy._memo[key] = out
    return key, out


def _normalized_grants(memo_key: tuple[str, ...], granted: dict[str, str], traits: ConnectorTraits,
                       policy: Policy) -> Mapping[str, str]:
    """normalize_grant over a memoized grants dict, once per (memo key, connector): read-only result."""
    key = (memo_key, traits.name, traits.assignment_grants)
    out = policy._normalized.get(key)
    if out is None:
        grants: dict[str, str] = {}
        for g, rule in granted.items():
            grants.setdefault(normalize_grant(g, traits), rule)  # first rule wins, however spelt
        out = MappingProxyType(grants)
        if len(policy._normalized) < 100_000:
            policy._normalized[key] = out
    return out


def desired(
    person: Person,
    lifecycle: Lifecycle,
    connectors: Sequence[ConnectorTraits],
    policy: Policy,
    *,
    extra: Mapping[str, Mapping[str, str]] | None = None,
    deny: Mapping[str, frozenset[str]] | None = None,
) -> list[DesiredAccount]:
    """Desired accounts of one person in every connector, for the planner.

    `extra`: connector -> grant -> why (`request:<id>`, `jit:<id>`), approved grants beyond the rules
    (an account follows them where no rule gives one). `deny`: connector -> grants this person must
    not hold, whatever grants them (a review's decision); `(account)` among them: no account there at all."""
    phase = lifecycle.phase
    memo_key, by_connector = _grants_shared(person, policy)
    if person.status is Status.PREHIRE and phase in (Phase.PREHIRE, Phase.ACTIVE):
        memo_key, by_connector = None, grants_for(person, policy)
        # A pre-hire gets the accounts (and from the hire date the grants) of the employee
        # they are about to be: rules written for `status: Active` (config/jml.example.yaml's own example)
        # must not leave them without an account, nor ungranted on day one while HR's
        # export still says Pre-hire.
        for connector, as_active in grants_for(replace(person, status=Status.ACTIVE), policy).items():
            bucket = by_connector.setdefault(connector, {})
            for g, rule in as_active.items():
                bucket.setdefault(g, rule)
    leaving = phase in (Phase.LEAVER, Phase.GONE)
    out: list[DesiredAccount] = []
    attributes = account_attributes(person)
    for traits in connectors:
        granted = by_connector.get(traits.name)
        more = extra.get(traits.name) if extra else None
        denied = deny.get(traits.name) if deny else None
        if denied and not leaving and (ACCOUNT in denied or normalize_grant(ACCOUNT, traits) in denied):
            continue  # a review revoked the account itself: none here, whatever the rules say
        if granted is None and more:
            granted = {}  # requested access alone: the person needs an account there to hold it
        # Leavers and not-yet hires are evaluated everywhere: an account jml made must
        # follow them even if today's rules no longer mention the connector.
        if granted is None and not leaving and phase is not Phase.NOT_YET:
            continue
        # A leaver whose row lost the attribute (HR blanks fields on termination) is still
        # followed: the planner cuts the recorded account off by its recorded username.
        if traits.required_attribute and not person.get(traits.required_attribute) and not leaving:
            continue
        username = render_username(traits.username_template or policy.username, person)
        if not username and not leaving:
            continue
        protected = username.casefold() in policy.protected or person.employee_id.casefold() in policy.protected
        if memo_key is not None and granted is not None:
            grants: Mapping[str, str] = _normalized_grants(memo_key, granted, traits, policy)
        else:
            fresh: dict[str, str] = {}
            for g, rule in (granted or {}).items():
                fresh.setdefault(normalize_grant(g, traits), rule)  # first rule wins, however spelt
            grants = fresh
        if more or denied:
            # A copy: `grants` may be the memo's shared, read-only mapping.
            adjusted = dict(grants)
            for g, why in (more or {}).items():
                adjusted.setdefault(normalize_grant(g, traits), why)  # a rule's reason wins: it outlives the request
            for g in denied or ():
                adjusted.pop(normalize_grant(g, traits), None)
            grants = adjusted
        if phase is Phase.ACTIVE:
            out.append(DesiredAccount(traits.name, person.employee_id, username, True, attributes, grants,
                                      protected=protected))
        elif phase is Phase.SUSPENDED:
            out.append(DesiredAccount(traits.name, person.employee_id, username, False, attributes, grants,
                                      protected=protected))
        elif phase is Phase.PREHIRE:
            out.append(DesiredAccount(traits.name, person.employee_id, username, False, attributes, {},
                                      protected=protected, create=traits.supports_inactive_create))
        elif phase is Phase.NOT_YET:
            out.append(DesiredAccount(traits.name, person.employee_id, username, False, attributes, {},
                                      protected=protected, create=False))
        else:
            out.append(DesiredAccount(traits.name, person.employee_id, username, False, attributes, {},
                                      leaver=True, delete=phase is Phase.GONE and traits.can_delete,
                                      protected=protected, create=False))
    return out
