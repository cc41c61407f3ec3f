"""HR events: a webhook's `person` read through the export's column profile, and what an
HR event changes for that person (their record; a termination also makes them a leaver,
HR's override outranking an IdP's)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from jml.config import Config
from jml.errors import BadRequest, ExportRejected
from jml.lifecycle import add_leaver
from jml.model import CANONICAL_FIELDS, Override, OverrideKind, Person, PersonState
from jml.sources.hris import parse_export
from jml.sources.profiles import resolve_profile
from jml.store.inbox import InboxItem

__all__ = ["apply_hr", "map_person", "merge_person"]


def map_person(cfg: Config, record: Mapping[str, Any], etype: str) -> tuple[Person, frozenset[str]]:
    """One webhook `person` through the export's column profile -> (Person, the canonical
    fields the record actually carried). A record without a status column reads as Active
    (Terminated for a termination); only supplied fields overwrite the stored record."""
    src = cfg.sources.hris
    kw: dict[str, Any] = {"profile": src.profile, "columns": src.columns,
                          "status_values": src.status_values} if src else {}
    prof = resolve_profile(kw.get("profile", "generic"), kw.get("columns"), kw.get("status_values"))
    present = {str(k).casefold() for k in record}
    supplied = frozenset(f for f, cands in prof.columns.items() if any(c.casefold() in present for c in cands))
    if "employee_id" not in supplied:
        raise BadRequest(f"person: no employee_id column (expected {' or '.join(prof.columns['employee_id'])})")
    row = {str(k): ("" if v is None else v) for k, v in record.items()}
    if "status" not in supplied:
        row[prof.columns["status"][0]] = "Terminated" if etype == "termination" else "Active"
    try:
        parsed = parse_export(json.dumps([row]).encode(), name="webhook person", format="json", **kw)
    except ExportRejected as e:
        raise BadRequest(str(e)) from None
    if parsed.quarantined or len(parsed.people) != 1:
        raise BadRequest(str(parsed.quarantined[0]) if parsed.quarantined else "person: cannot be read")
    # A date out of jml's range (jml.timeparse) is quarantined by the parse, like an export's.
    return parsed.people[0], supplied


def merge_person(old: Person | None, new: Person, supplied: frozenset[str]) -> Person:
    if old is None:
        return new
    fields = {f: getattr(new, f) for f in supplied if f in CANONICAL_FIELDS and f != "employee_id"}
    return replace(old, **fields, extra={**old.extra, **new.extra})


def apply_hr(tz: dt.tzinfo, it: InboxItem, mapped: tuple[Person, frozenset[str]], states: Mapping[str, PersonState],
             overrides: dict[str, Override | None], scope: dict[str, bool],
             changed: dict[str, Person]) -> tuple[str, list[str], str]:
    """Fold one HR event into `overrides`, `scope` and `changed` (the people's new records);
    (outcome, the people it touched, the actor)."""
    person, supplied = mapped
    eid = person.employee_id
    base = changed.get(eid) or (states[eid].person if eid in states else None)
    merged = merge_person(base, person, supplied)
    etype = str(it.payload.get("type"))
    if etype == "termination":
        if "termination_date" not in supplied or merged.termination_date is None:
            merged = replace(merged, termination_date=it.occurred_at.astimezone(tz).date())
        cur = overrides.get(eid)
        new = add_leaver(cur, Override(OverrideKind.HR_TERMINATION, it.occurred_at, "HR termination webhook",
                                       "hr-webhook"))
        if new != cur:
            overrides[eid] = new  # HR's now (an IdP deactivation is taken over, its time kept)
    changed[eid] = merged
    scope[eid] = True
    return etype, [eid], "hr-webhook"
