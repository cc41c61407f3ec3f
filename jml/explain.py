"""Why a change happens, in words a person reads (issue 17): `jml plan` prints it beside each
operation and `plan --json` carries it as `detail.reason`; the person page reuses it. Pure.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from jml.model import Action, Lifecycle, Operation, Person, PersonState, Phase

__all__ = ["changed_fields", "operation_reason", "person_reason"]

_SHOWN = ("status", "department", "job_title", "manager_id", "location", "country", "cost_center",
          "employment_type", "work_email", "first_name", "last_name", "preferred_name", "hire_date",
          "termination_date", "github_username")


def _text(value: object) -> str:
    if value is None:
        return ""
    if hasattr(value, "value") and not isinstance(value, str):
        return str(value.value)
    return str(value)


def changed_fields(before: Person | None, after: Person | None) -> dict[str, tuple[str, str]]:
    """HR field -> (old, new) for the fields a person reads (extra columns included)."""
    if before is None or after is None:
        return {}
    out: dict[str, tuple[str, str]] = {}
    names = {f.name for f in dataclasses.fields(Person)}
    for name in _SHOWN:
        if name in names:
            old, new = _text(getattr(before, name)), _text(getattr(after, name))
            if old != new:
                out[name] = (old, new)
    for key in sorted(set(before.extra) | set(after.extra)):
        old, new = before.extra.get(key, ""), after.extra.get(key, "")
        if old != new:
            out[key] = (old, new)
    return out


def person_reason(prev: PersonState | None, state: PersonState, lc: Lifecycle, old_phase: str | None) -> str:
    """One line: joiner, mover (which fields), leaver (why), rehire, or a date reached."""
    person = state.person
    before = prev.person if prev is not None else None
    if before is None and person is not None:
        hire = f", hire date {person.hire_date.isoformat()}" if person.hire_date else ""
        if lc.phase is Phase.NOT_YET:
            return f"joiner: new in HR{hire} (account created inactive before the start)"
        return f"joiner: new in HR{hire}"
    if lc.phase in (Phase.LEAVER, Phase.GONE):
        why = lc.reason or "HR says so"
        return f"leaver: {why}" if old_phase not in ("leaver", "gone") else f"still a leaver: {why}"
    if old_phase in ("leaver", "gone"):
        return "rehire: HR shows the person active again" + (f" ({lc.reason})" if lc.reason else "")
    moved = changed_fields(before, person)
    if moved:
        parts = [f"{k} {old or '(empty)'} → {new or '(empty)'}" for k, (old, new) in list(moved.items())[:4]]
        return "mover: " + "; ".join(parts)
    if old_phase is not None and old_phase != lc.phase.value:
        return f"{old_phase} → {lc.phase.value}" + (f": {lc.reason}" if lc.reason else " (a date was reached)")
    return lc.reason or "re-planned (access differs from what the rules grant)"


def operation_reason(op: Operation, people: Mapping[str, str]) -> str:
    """Why this one operation: the person's change and, for access, the rule behind it."""
    who = people.get(op.employee_id, "")
    detail = op.detail
    action = op.action
    if action is Action.UPDATE:
        attrs = detail.get("attributes") or {}
        keys = sorted(attrs) if isinstance(attrs, Mapping) else []
        if detail.get("previous_employee_id"):
            what = f"conversion: takes over {detail['previous_employee_id']}'s account"
        else:
            what = "attributes changed: " + ", ".join(keys) if keys else "username changed"
    else:
        rule = detail.get("rule")
        target = str(detail.get("group") or detail.get("grant") or "")
        try:
            what = _what(action, target, rule)
        except TypeError:  # an unhashable target or rule: said the same way, not kept
            what = _what.__wrapped__(action, target, rule)
        if action is Action.CREATE_GROUP:
            return what
    return f"{who} — {what}" if who else what


@functools.lru_cache(maxsize=4096, typed=True)
def _what(action: Action, target: str, rule: object) -> str:
    """The words of an operation other than an update (a plan repeats a few hundred of them
    over 288k operations: kept)."""
    if action in (Action.ADD_MEMBER, Action.ASSIGN):
        return f"rule {rule!r} grants {target}" if rule else f"a rule grants {target}"
    if action in (Action.REMOVE_MEMBER, Action.UNASSIGN):
        return f"no rule grants {target} any more"
    if action is Action.CREATE_GROUP:
        return f"group {target} is needed by a rule and not yet seen in the app"
    if action in (Action.CREATE, Action.INVITE):
        return "no account yet"
    if action is Action.DEACTIVATE:
        return "account deactivated"
    if action is Action.REACTIVATE:
        return "account reactivated"
    if action is Action.DELETE:
        return "deleted after lifecycle.delete_after"
    return str(action.value)
