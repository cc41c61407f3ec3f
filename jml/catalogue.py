"""The catalogue: every entitlement the connectors list, with the owner, risk and limits config
gives it, and whether a rule grants it (birthright) or reconcile manages it.

An entitlement configured or granted by a rule but not (yet) in the app is listed too: a group
jml creates on first use does not exist before. A connector that cannot be read is named in
`errors`; its configured entitlements are still listed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from jml.access_rules import rule_grants
from jml.access_state import catalogue_entry, norm
from jml.errors import ConnectorError
from jml.redact import redact
from jml.runtime import Runtime

log = logging.getLogger(__name__)

LIST_TIMEOUT = 30.0  # seconds per connector: the page must not hang on one slow app


@dataclass(frozen=True)
class CatalogueItem:
    connector: str
    grant: str
    display_name: str
    owner: str | None
    risk: str
    max_duration: dt.timedelta
    requestable: bool
    birthright: bool  # some rule grants it
    managed: bool  # reconcile puts it back to what the rules say
    in_app: bool  # the connector listed it

    def to_dict(self) -> dict[str, Any]:
        return {"connector": self.connector, "grant": self.grant, "display_name": self.display_name,
                "owner": self.owner, "risk": self.risk, "max_duration_seconds": int(self.max_duration.total_seconds()),
                "requestable": self.requestable, "birthright": self.birthright, "managed": self.managed,
                "in_app": self.in_app}


@dataclass
class Catalogue:
    items: list[CatalogueItem] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # connector -> why it could not be listed

    def to_dict(self) -> dict[str, Any]:
        return {"entitlements": [i.to_dict() for i in self.items], "errors": dict(self.errors)}


async def _listed(rt: Runtime, name: str) -> tuple[dict[str, str], str | None]:
    try:
        found = await asyncio.wait_for(rt.connector(name).entitlements(), LIST_TIMEOUT)
    except (ConnectorError, OSError, TimeoutError, ValueError) as e:
        why = redact(str(e) or type(e).__name__)
        log.warning("catalogue: cannot list entitlements", extra={"connector": name, "error": why})
        return {}, why
    return {norm(rt, name, e.grant): e.display_name for e in found}, None


async def build(rt: Runtime, *, live: bool = True) -> Catalogue:
    """The catalogue; `live` False: from config and rules only (no app is called)."""
    births = rule_grants(rt.policy, rt.traits)
    default = rt.config.access.default_duration
    out = Catalogue()
    for name in rt.config.connectors:
        listed: dict[str, str] = {}
        if live:
            listed, error = await _listed(rt, name)
            if error is not None:
                out.errors[name] = error
        configured = {norm(rt, name, g): e for g, e in rt.config.access.catalogue.get(name, {}).items()}
        grants = sorted(set(listed) | set(configured) | set(births.get(name, ())))
        for g in grants:
            entry = catalogue_entry(rt, name, g)
            birthright = g in births.get(name, frozenset())
            managed = entry.managed if entry.managed is not None else birthright
            out.items.append(CatalogueItem(
                name, g, entry.display_name or listed.get(g) or g.removeprefix("group:").removeprefix("team:"),
                entry.owner, entry.risk, entry.max_duration or default, entry.requestable, birthright, managed,
                g in listed))
    return out


def render(cat: Catalogue) -> str:
    """The table `jml access catalogue` prints."""
    rows = [("CONNECTOR", "GRANT", "RISK", "OWNER", "MAX", "BIRTHRIGHT", "MANAGED", "IN APP")]
    for i in cat.items:
        days = i.max_duration.total_seconds() / 86400
        mx = f"{days:g}d" if days >= 1 else f"{i.max_duration.total_seconds() / 3600:g}h"
        rows.append((i.connector, i.grant, i.risk, i.owner or "-", mx if i.requestable else "not requestable",
                     "yes" if i.birthright else "no", "yes" if i.managed else "no", "yes" if i.in_app else "no"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for name, why in sorted(cat.errors.items()):
        lines.append(f"warning: {name}: entitlements not listed: {why}")
    return "\n".join(lines)
