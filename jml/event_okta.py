"""Okta event hooks: which people an event names, and what it does to their overrides.

Mapping (README "Running it next to HR", Webhooks): deactivate/suspend -> leaver now (IDP_DEACTIVATE,
effective at the event's `published`); activate/unsuspend/reactivate -> an Okta deactivation
is lifted and the person re-evaluated from HR, but an HR termination or an offboard stays
(HR outranks the IdP; outcome "not_lifted: HR leaver"); an Okta deactivation may bring an
HR leaver's time forward, never take it over; update_profile -> re-evaluated. The Okta user
is matched to an HR person by `sources.okta.match` (default work_email) against the
target's alternateId, case-insensitively; no match -> outcome "unmatched", no change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jml.lifecycle import HR_OVERRIDES, add_leaver, idp_lifts
from jml.model import Override, OverrideKind
from jml.store.inbox import InboxItem

__all__ = ["OKTA_LEAVER", "OKTA_REEVALUATE", "OKTA_RETURN", "apply_okta", "okta_users"]

OKTA_LEAVER = frozenset({"user.lifecycle.deactivate", "user.lifecycle.suspend"})
OKTA_RETURN = frozenset({"user.lifecycle.activate", "user.lifecycle.unsuspend", "user.lifecycle.reactivate"})
OKTA_REEVALUATE = frozenset({"user.account.update_profile"})


def okta_users(payload: Mapping[str, Any]) -> list[str]:
    targets = payload.get("target")
    return [str(t["alternateId"]) for t in targets if isinstance(t, dict) and t.get("type") == "User"
            and t.get("alternateId")] if isinstance(targets, list) else []


def apply_okta(it: InboxItem, matches: Mapping[str, str], overrides: dict[str, Override | None],
               scope: dict[str, bool]) -> tuple[str, list[str], str]:
    """Fold one Okta event into `overrides` and `scope`; (outcome, the people it touched, the actor)."""
    etype = str(it.payload.get("eventType", ""))
    actor_doc = it.payload.get("actor")
    actor = f"okta:{actor_doc.get('alternateId', '')}" if isinstance(actor_doc, dict) else "okta"
    if etype not in OKTA_LEAVER | OKTA_RETURN | OKTA_REEVALUATE:
        return "ignored", [], actor
    eids = [matches[u.casefold()] for u in okta_users(it.payload) if u.casefold() in matches]
    if not eids:
        return "unmatched", [], actor
    outcome = "reevaluated"
    for eid in eids:
        scope.setdefault(eid, False)
        cur = overrides.get(eid)
        if etype in OKTA_LEAVER:
            new = add_leaver(cur, Override(OverrideKind.IDP_DEACTIVATE, it.occurred_at, f"Okta {etype}", actor))
            if new != cur:
                overrides[eid] = new
                outcome = "leaver"
            else:
                outcome = "already_leaver"
        # HR outranks the IdP: a reactivation lifts only Okta's own deactivation (not one
        # published after it: out-of-order delivery), never an HR termination or offboard.
        elif etype in OKTA_RETURN and cur is not None:
            if idp_lifts(cur, it.occurred_at):
                overrides[eid] = None
                outcome = "lifted"
            elif cur.kind in HR_OVERRIDES:
                outcome = "not_lifted: HR leaver"
    return outcome, eids, actor
