"""What the HR view reads beyond one person's facts (issue 17): an accent- and case-blind
search with department and status filters (and a browse list), the set-aside HR rows that
concern someone, the rules' conditions in words, what an offboarding removed, and a person's
whole history in order. No SQL here: the store's repositories answer."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jml.model import PersonState
from jml.runtime import Runtime
from jml.sync import set_aside_rows

__all__ = ["Hit", "departments", "fold", "history", "removed_access", "rule_conditions", "search", "set_aside_for"]

STATUSES = ("active", "prehire", "leaver", "gone", "set aside")


def fold(text: str) -> str:
    """Case- and accent-blind form: 'García' and 'garcia' compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("ß", "ss")


@dataclass(frozen=True, slots=True)
class Hit:
    employee_id: str
    name: str
    email: str
    department: str
    job_title: str
    phase: str | None  # jml's view: active, prehire, leaver, gone; "set aside" for a row only seen set aside
    offboarded: bool
    set_aside: str = ""  # why the latest export set this person's row aside


def _matches(q: str, hay: Iterable[str]) -> bool:
    words = fold(q).split()
    folded = [fold(x) for x in hay if x]
    return all(any(w in h for h in folded) for w in words)


def search(rt: Runtime, q: str, *, department: str = "", status: str = "", limit: int = 100) -> list[Hit]:
    """People whose id, e-mail or name contains every word of `q` (accents and case ignored),
    optionally in one department and one status; an empty `q` browses. Set-aside rows of people
    jml does not know yet are found too."""
    states = rt.store.load_states()
    index = rt.store.person_index()
    aside = {str(r.get("employee_id") or ""): r for r in set_aside_rows(rt)["rows"]}
    hits: list[Hit] = []
    for eid, s in sorted(states.items(), key=lambda kv: fold(_name(kv[1]))):
        p = s.person
        if p is None:
            continue
        phase = index[eid].phase if eid in index else None
        if department and fold(p.department) != fold(department):
            continue
        row = aside.get(eid)
        if status and not (phase == status or (status == "set aside" and row is not None)):
            continue
        if q and not _matches(q, [eid, p.work_email, p.display_name, f"{p.first_name} {p.last_name}",
                                  p.preferred_name]):
            continue
        hits.append(Hit(eid, p.display_name, p.work_email, p.department, p.job_title, phase, s.override is not None,
                        _why(row)))
        if len(hits) >= limit:
            return hits
    if not department and status in ("", "set aside"):
        for eid, row in aside.items():
            if eid in states:
                continue
            if q and not _matches(q, [eid, str(row.get("name") or ""), str(row.get("email") or "")]):
                continue
            hits.append(Hit(eid or f"row {row.get('row')}", str(row.get("name") or ""), str(row.get("email") or ""),
                            "", "", "set aside", False, _why(row)))
    return hits[:limit]


def _name(s: PersonState) -> str:
    return s.person.display_name if s.person is not None else s.employee_id


def _why(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return ""
    return f"row {row.get('row')} of {row.get('file')}: {row.get('field')} {row.get('message')}"


def departments(rt: Runtime) -> list[str]:
    return sorted({s.person.department for s in rt.store.load_states().values()
                   if s.person is not None and s.person.department}, key=fold)


def set_aside_for(rt: Runtime, employee_id: str) -> list[dict[str, Any]]:
    return [r for r in set_aside_rows(rt)["rows"] if str(r.get("employee_id") or "") == employee_id]


def rule_conditions(rt: Runtime) -> dict[str, str]:
    """rule name -> its condition in words ("department is Engineering and status is Active or Leave")."""
    out: dict[str, str] = {}
    for rule in rt.config.policy.rules:
        when = getattr(rule, "when", None) or {}
        parts = []
        for key, value in dict(when).items():
            values = value if isinstance(value, list | tuple) else [value]
            parts.append(f"{key} is " + " or ".join(str(v) for v in values))
        out[rule.name] = " and ".join(parts) or "everyone"
    return out


_REMOVING = {"remove_member", "unassign", "deactivate", "delete", "cancel_invite"}


def removed_access(rt: Runtime, employee_id: str) -> list[dict[str, Any]]:
    """What jml removed from this person (done removals), newest first: after an offboarding the
    access table still shows what was there and when it went."""
    out = []
    for op in reversed(rt.outbox.person_history(employee_id)):
        if op["action"] in _REMOVING and op["state"] == "done":
            d = op["detail"]
            out.append({"connector": op["connector"], "action": op["action"],
                        "what": d.get("group") or d.get("grant") or d.get("username") or "",
                        "at": op["done_at"] or op["updated_at"], "plan_id": op["plan_id"]})
    return out


def _took(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


def history(rt: Runtime, employee_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """Every event, plan, operation, verification and approval for one person, oldest first:
    {"at", "kind", "what", "who", "took", "changes"}."""
    events: list[dict[str, Any]] = []
    for rec in rt.audit.records(subject=employee_id, limit=limit):
        if rec["kind"] == "push":
            continue  # each push is an operation below, with its outcome and duration
        data = rec["data"] if isinstance(rec.get("data"), dict) else {}
        events.append({"at": rec["at"], "kind": rec["kind"], "what": _audit_text(rec["kind"], data),
                       "who": rec.get("actor") or "", "took": None, "changes": data.get("changes") or {}})
    ops = rt.outbox.person_history(employee_id, limit)
    for op in ops:
        target = op["detail"].get("group") or op["detail"].get("grant") or op["detail"].get("username") or ""
        changes = op["detail"].get("attributes") if op["action"] == "update" else None
        state = op["state"] + (f" after {op['attempts']} attempt(s)" if op["attempts"] > 1 else "")
        events.append({"at": (op["created_at"] or op["updated_at"]).isoformat() if (op["created_at"] or
                                                                                    op["updated_at"]) else None,
                       "kind": "operation", "who": "jml",
                       "what": f"{op['connector']}: {op['action']} {target} — {state}"
                               + (f": {op['error']}" if op["error"] and op["state"] == "dead" else "")
                               + f" (plan {op['plan_id']}, from {op['origin'] or '?'})",
                       "took": _took(op["created_at"], op["done_at"]),
                       "changes": changes if isinstance(changes, dict) else {}})
    events.extend(_plan_decisions(ops))
    for clock in rt.store.sla.views_of(employee_id):
        if clock.verified_at is not None:
            late = " (late)" if clock.deadline is not None and clock.verified_at > clock.deadline else ""
            events.append({"at": clock.verified_at.isoformat(), "kind": "verified", "who": "jml",
                           "what": f"{clock.connector}: deprovision verified in the app{late}",
                           "took": _took(clock.started_at, clock.verified_at), "changes": {}})
    events.sort(key=lambda e: e["at"] or "")
    return events[-limit:]


def _plan_decisions(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each plan this person was in: held by the guard (when, why), approved or discarded (who, when)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for op in ops:
        pid = str(op["plan_id"])
        if pid in seen:
            continue
        seen.add(pid)
        created = op["plan_created_at"]
        if op["reasons"]:
            out.append({"at": created.isoformat() if created else None, "kind": "held", "who": "guard",
                        "what": f"plan {pid} held: " + "; ".join(op["reasons"]), "took": None, "changes": {}})
        if op["decided_by"]:
            verb = "discarded" if op["plan_state"] == "discarded" else "approved"
            at = op["decided_at"]
            out.append({"at": at.isoformat() if at else None, "kind": "approval", "who": op["decided_by"],
                        "what": f"plan {pid} {verb}", "took": _took(created, at), "changes": {}})
    return out


def _audit_text(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "hr_change":
        phase = data.get("phase")
        prev = data.get("previous_phase")
        text = f"HR: {data.get('kind', 'change')}" + (f" ({prev} → {phase})" if prev and prev != phase else
                                                       f" ({phase})" if phase else "")
        return text + (f"; {data['reason']}" if data.get("reason") else "")
    if kind == "offboard":
        return f"offboarded: {data.get('reason') or 'no reason given'} (effective {data.get('effective_at')})"
    if kind == "offboard_undo":
        return f"offboarding undone: {data.get('reason') or ''}"
    if kind == "sla_breach":
        return f"{data.get('connector')}: deprovision deadline missed" + (
            f" — {data['cause']}" if data.get("cause") else "")
    if kind == "discard_operation":
        return f"dead letter #{data.get('operation_id')} ({data.get('connector')} {data.get('action')}) discarded"
    parts = [f"{k} {v}" for k, v in data.items() if isinstance(v, str | int | float) and k != "reason"][:4]
    return kind.replace("_", " ") + (": " + ", ".join(parts) if parts else "")
