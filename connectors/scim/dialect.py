"""What one SCIM server turned out to support: its dialect, learnt from its answers.

Real apps implement SCIM partially (README "Any SCIM 2.0 app"; tests/scim_peers/FINDINGS.md): PATCH for a few
paths only, filters ignored, `count` refused, attributes rejected or silently dropped,
members only by replacing the whole list. The connector starts from what the
ServiceProviderConfig and Schemas announce, then learns from answers and read-backs;
every fact it learns is remembered in the store (`ConnectorContext.remember`), so a
restart or another replica does not repeat the request that taught it.

A fact is a plain JSON value under one of the keys of FACTS. `table()` is what
`jml check` prints; `warnings()` is what the status page shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# A missing fact means "as announced / as the RFC says". Severity: "info" is how the server
# works and needs nothing; "warn" is a deviation jml works around (or an attribute it cannot
# keep there); "fatal" means create, deactivate or membership cannot work.
FACTS: dict[str, tuple[str, str]] = {
    "patch": ("PATCH supported (ServiceProviderConfig)", "info"),
    "etag": ("ETags supported: writes carry If-Match", "info"),
    "bulk": ("Bulk supported (unused: jml sends one operation per request)", "info"),
    "filter": ("filter supported (ServiceProviderConfig)", "info"),
    "max_results": ("most results per filtered query", "info"),
    "page_cap": ("pages capped at this many items whatever count asks", "info"),
    "count": ("`count` parameter accepted (false: pages are read without it)", "warn"),
    "filter:Users:userName": ("filter on userName works (false: users found in a paged index)", "warn"),
    "filter:Users:externalId": ("filter on externalId works (false: users found in a paged index)", "warn"),
    "filter:Groups:displayName": ("filter on displayName works (false: groups found in a paged index)", "warn"),
    "filter:members": ("filter on members.value works (false: groups scanned for members)", "warn"),
    "update": ("user changes are written by this form", "warn"),
    "active": ("activation is written by this form", "warn"),
    "put_only": ("attributes PATCH refuses: written by GET + PUT", "warn"),
    "rejected": ("attributes the server refuses: no longer sent", "warn"),
    "dropped": ("attributes the server accepts but does not keep: no longer sent", "warn"),
    "undeclared": ("attributes the server's Schemas do not declare: not sent", "info"),
    "required": ("attributes the server's Schemas require: derived by jml", "info"),
    "email_plain": ("emails without type/primary (the server refuses them)", "warn"),
    "external_id": ("externalId kept (false: accounts are matched by userName)", "warn"),
    "add_member": ("form that adds a group member", "warn"),
    "remove_member": ("form that removes a group member", "warn"),
    "member_ref": ("members need a $ref", "warn"),
    "members_by": ("group members are listed by this attribute", "warn"),
    "conflict_status": ("status a duplicate userName is answered with (RFC: 409)", "warn"),
    "patch_attributes": ("PATCH ?attributes= accepted (false: a write is read back by GET)", "warn"),
    "filter_or": ("`or` filters work (false: one search per attribute)", "info"),
    "members_or": ("`or` of members.value filters works (false: each leaver's groups asked apart)", "info"),
    "mixed_members": ("one PATCH adds and removes members (false: one PATCH per kind)", "info"),
    "replace_members": ("a costly removal replaces the member list instead (false: refused or ignored)", "info"),
    "excluded": ("excludedAttributes accepted (false: full resources are read)", "info"),
    "start_index": ("startIndex honoured (false: only the first page can be read)", "warn"),
    "delete_deactivates": ("DELETE deactivates: the account stays, inactive", "warn"),
    "patch_only": ("attributes PUT ignores: written by PATCH", "warn"),
    "cannot": ("what this server cannot do at all (dead letters, SLA breaches)", "fatal"),
}

# What a value means when it is not the RFC's default, in plain words for `jml check`.
_DEFAULTS: dict[str, Any] = {"count": True, "external_id": True, "patch_attributes": True, "member_ref": False,
                             "email_plain": False, "members_by": "id", "conflict_status": 409,
                             "filter:Users:userName": True, "filter:Users:externalId": True,
                             "filter:Groups:displayName": True, "filter:members": True,
                             "update": "patch", "active": "patch", "add_member": "value",
                             "remove_member": "filter", "filter_or": True, "members_or": True, "mixed_members": True,
                             "excluded": True,
                             "start_index": True, "delete_deactivates": False}

# Keys learnt to be usable without a read-back ("verified:<what>"): a 2xx was confirmed once.
VERIFIED = "verified:"


@dataclass(frozen=True, slots=True)
class DialectRow:
    fact: str
    value: Any
    meaning: str
    severity: str  # info | warn | fatal


class Dialect(dict[str, Any]):
    """The facts, as a dict; `learn` is the one way a fact is remembered durably."""

    def __init__(self, connector: str, recall: Callable[[], dict[str, Any]] | None = None,
                 remember: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.connector = connector
        self._recall = recall
        self._remember = remember
        self.refresh()

    def refresh(self) -> None:
        """Read what this or another replica learnt before (a failed read is no fact)."""
        if self._recall is None:
            return
        try:
            self.update(self._recall() or {})
        except Exception as e:  # the store is down: learn again, do not stop the connector
            log.warning("%s: cannot read the remembered dialect: %s", self.connector, type(e).__name__)

    def learn(self, key: str, value: Any, why: str) -> bool:
        """Remember `key = value`; True (and one warning) when it is news."""
        if self.get(key) == value:
            return False
        if not key.startswith(VERIFIED):
            log.warning("%s: server dialect: %s = %s (%s)", self.connector, key, value, why)
        self[key] = value
        self._persist({key: value})
        return True

    def announce(self, facts: dict[str, Any]) -> None:
        """What the server says of itself (ServiceProviderConfig, Schemas): kept quietly."""
        changed = {k: v for k, v in facts.items() if self.get(k) != v}
        if changed:
            self.update(changed)
            self._persist(changed)

    def add(self, key: str, item: str, why: str) -> bool:
        """Add `item` to the list fact `key` (rejected, dropped, put_only, cannot)."""
        have = list(self.get(key) or [])
        if item in have:
            return False
        return self.learn(key, sorted([*have, item]), f"{item}: {why}")

    def has(self, key: str, item: str) -> bool:
        return item in (self.get(key) or ())

    def verified(self, what: str) -> bool:
        return bool(self.get(VERIFIED + what))

    def verify(self, what: str) -> None:
        self.learn(VERIFIED + what, True, "confirmed by read-back")

    def _persist(self, facts: dict[str, Any]) -> None:
        if self._remember is None:
            return
        try:
            merged = self._remember(facts)
        except Exception as e:  # remembered next time it is learnt
            log.warning("%s: cannot store the learnt dialect: %s", self.connector, type(e).__name__)
            return
        for k, v in merged.items():
            self.setdefault(k, v)

    # ---- what people read ------------------------------------------------------------
    def table(self) -> list[DialectRow]:
        rows = []
        for key in sorted(self):
            if key.startswith(VERIFIED):
                continue
            meaning, severity = FACTS.get(key, (key, "info"))
            value = self[key]
            if value in ([], None):
                continue
            if severity == "warn" and (value == _DEFAULTS.get(key, object()) or value in ([], None)):
                severity = "info"
            rows.append(DialectRow(key, value, meaning, severity))
        return rows

    def warnings(self) -> list[str]:
        """One plain line per deviation jml works around: "app drops externalId: matched by userName"."""
        out = []
        for row in self.table():
            if row.severity == "info":
                continue
            out.append(f"{self.connector}: {row.meaning}: {_show(row.value)}")
        return out

    def fatal(self) -> list[str]:
        return [f"{self.connector}: cannot {what}" for what in self.get("cannot") or ()]


def warnings_of(connector: str, facts: dict[str, Any]) -> list[str]:
    """Dialect.warnings() for facts read from the store (no connector built)."""
    d = Dialect(connector)
    d.update(facts)
    return d.warnings() + d.fatal()


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)
