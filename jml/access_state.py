"""What requests and denials add to or take from the rules, read once per cycle; the catalogue's config.

Planning (sync, reconcile, the SLA read-back, an event's plan) loads `extras(rt, eids, now)` once
and passes each person's part to `policy.desired()`. The access-review work reads `is_managed`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field

from jml.access_rules import rule_grants
from jml.config import CatalogueEntryConfig
from jml.model import ConnectorTraits
from jml.policy import normalize_grant
from jml.runtime import Runtime

_EMPTY_ENTRY = CatalogueEntryConfig()


@dataclass(frozen=True)
class PersonExtras:
    """One person's requested grants in force and denials, in desired()'s shape."""

    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # connector -> grant -> "request:<id>"
    deny: dict[str, frozenset[str]] = field(default_factory=dict)  # connector -> grants denied


NO_EXTRAS = PersonExtras()


def _traits(rt: Runtime, connector: str) -> ConnectorTraits:
    return rt.traits.get(connector) or ConnectorTraits(connector)


def norm(rt: Runtime, connector: str, grant: str) -> str:
    """A grant as the planner spells it (`Engineering` -> `group:Engineering`)."""
    return normalize_grant(grant, _traits(rt, connector))


def catalogue_entry(rt: Runtime, connector: str, grant: str) -> CatalogueEntryConfig:
    """The configured owner, risk, maximum... of an entitlement; defaults when it is not configured."""
    want = norm(rt, connector, grant)
    for name, entry in rt.config.access.catalogue.get(connector, {}).items():
        if norm(rt, connector, name) == want:
            return entry
    return _EMPTY_ENTRY


def is_birthright(rt: Runtime, connector: str, grant: str) -> bool:
    """Some rule grants it."""
    return norm(rt, connector, grant) in rule_grants(rt.policy, rt.traits).get(connector, frozenset())


def is_managed(rt: Runtime, connector: str, grant: str) -> bool:
    """Reconcile puts a managed entitlement back to what the rules say; an unmanaged one is only
    removed by a review decision. Config `managed` wins; else managed when some rule grants it."""
    entry = catalogue_entry(rt, connector, grant)
    if entry.managed is not None:
        return entry.managed
    return is_birthright(rt, connector, grant)


def extras(rt: Runtime, eids: Collection[str] | None, now: dt.datetime) -> dict[str, PersonExtras]:
    """employee_id -> requested grants in force and denials (only people who have some).

    `eids` None: everyone. A large scope (a full export) reads both tables whole instead of binding
    100,000 ids: they are small next to the people."""
    if eids is not None and len(eids) > 500:
        eids = None
    extra: dict[str, dict[str, dict[str, str]]] = {}
    for r in rt.store.access.in_force(now, eids):
        bucket = extra.setdefault(r.employee_id, {}).setdefault(r.connector, {})
        bucket.setdefault(norm(rt, r.connector, r.grant), f"{r.kind}:{r.id}")
    deny: dict[str, dict[str, set[str]]] = {}
    for d in rt.store.access.denials(eids):
        deny.setdefault(d.employee_id, {}).setdefault(d.connector, set()).add(norm(rt, d.connector, d.grant))
    out: dict[str, PersonExtras] = {}
    for eid in set(extra) | set(deny):
        out[eid] = PersonExtras(extra.get(eid, {}), {c: frozenset(g) for c, g in deny.get(eid, {}).items()})
    return out
