"""What needs attention, and why, in the words of the people who act on it (issue 17).

`items(doc)` turns `jml status`'s document into a list, most urgent first: held plans, dead
letters (a failed joiner among them), set-aside HR rows, actual and predicted breaches, a
stale or rejected HR source, paused connectors, a stalled webhook inbox. Each item says what
happened, what to do and which button (if the role allows) does it. Pure: the status page,
`jml status` (text and --json) and the API all read the same list.

`plain_error` turns a dead letter's raw error into which HR field of which person to fix, or
which app refused what and why; the raw text stays one click away.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["items", "plain_error", "set_aside_text"]

_CREATE = {"create", "invite"}
SET_ASIDE_SHOWN = 10  # set-aside rows listed one by one; beyond, one summary item
_SEVERITY = {"breach": 0, "warn": 1, "info": 2}


def _who(eid: str, names: dict[str, str]) -> str:
    name = names.get(eid) or ""
    return f"{name} ({eid})" if name and name != eid else eid


def plain_error(connector: str, action: str, person: str, error: str) -> dict[str, str]:
    """{"summary": what went wrong, "fix": what to do and who does it, "detail": the raw text}."""
    raw = error or ""
    person = person or "everyone who needs it"
    text = raw.casefold()
    status = re.search(r"\(http (\d{3})\)", text)
    code = int(status.group(1)) if status else None
    what = {"create": "creating the account", "invite": "inviting the person", "update": "updating the account",
            "deactivate": "deactivating the account", "reactivate": "reactivating the account",
            "delete": "deleting the account", "add_member": "adding a group", "remove_member": "removing a group",
            "assign": "assigning access", "unassign": "removing access",
            "create_group": "creating a group"}.get(action, action)
    if "validationerror" in text and "email" in text:
        return {"summary": f"{connector} could not be sent {person}'s work e-mail: it is not a valid address.",
                "fix": f"HR: correct the work_email field of {person} in the HR system; then Retry.",
                "detail": raw}
    if "validationerror" in text:
        field = re.search(r"validation errors? for (\w+)", raw)
        name = f" ({field.group(1)})" if field else ""
        return {"summary": f"A value from HR{name} for {person} is not accepted by {connector}'s format.",
                "fix": f"HR: check {person}'s record (names, e-mail, dates); then Retry.", "detail": raw}
    if code == 409 or "already exists" in text or "uniqueness" in text or "email_taken" in text:
        return {"summary": f"{connector} refused {what} for {person}: another account already uses this "
                           "user name or e-mail.",
                "fix": f"Ops: find the other account in {connector} (a duplicate, or a previous employee's); "
                       "HR: check the e-mail is not shared. Then Retry.", "detail": raw}
    if code in (401, 403) or "unauthorized" in text or "forbidden" in text:
        return {"summary": f"{connector} refused jml's credentials or permissions while {what}.",
                "fix": f"Ops: check the {connector} token and its scopes (`jml check`); then Retry.",
                "detail": raw}
    if code == 429 or "rate limit" in text:
        return {"summary": f"{connector} kept rate-limiting jml while {what} for {person}.",
                "fix": "Ops: Retry later; lower the connector's rate_limit if it keeps happening.", "detail": raw}
    if text.startswith("blocked: operation"):
        return {"summary": f"{connector}: {what} for {person} waited on an earlier step that failed ({raw}).",
                "fix": "Fix the earlier step (its dead letter is listed with it); Retry both.", "detail": raw}
    if ((code is not None and code >= 500) or "timeout" in text or "connection" in text or "connectorerror" in text
            or "cannot reach" in text or "unreachable" in text or ("refused" in text and code is None)):
        return {"summary": f"{connector} was unreachable or failing while {what} for {person}.",
                "fix": f"Ops: check {connector} is up (`jml check`); then Retry.", "detail": raw}
    if code == 404:
        return {"summary": f"{connector} does not know the account or group needed for {what} ({person}).",
                "fix": f"Ops: check the group exists in {connector} and the account was not removed by hand; "
                       "then Retry.", "detail": raw}
    if code == 400:
        vendor = raw.split("):", 1)[1].strip() if "):" in raw else ""
        return {"summary": f"{connector} refused {what} for {person}" + (f": {vendor}" if vendor else "."),
                "fix": f"HR: check the fields it names in {person}'s record; Ops: Retry once fixed.",
                "detail": raw}
    return {"summary": f"{connector}: {what} for {person} failed.",
            "fix": "Ops: read the detail; Retry once the cause is fixed, or Discard.", "detail": raw}


def set_aside_text(row: dict[str, Any], names: dict[str, str]) -> dict[str, str]:
    eid = str(row.get("employee_id") or "")
    who = row.get("name") or names.get(eid) or ""
    label = f"{who} ({eid})" if who and eid else (who or eid or "an unnamed row")
    field = str(row.get("field") or "")
    return {"summary": f"Row {row.get('row')} of {row.get('file')} ({label}): {field} {row.get('message')}",
            "fix": f"HR: correct {field} for {label} in the HR system. Until then this row is set aside: "
                   "the person's last good data stands (never treated as a leaver); the rest of the export went on."}


def items(doc: dict[str, Any], names: dict[str, str] | None = None) -> list[dict[str, Any]]:
    names = names or {}
    out: list[dict[str, Any]] = []
    for p in doc.get("held_plans") or []:
        summary = ", ".join(f"{v} {k}" for k, v in sorted((p.get("summary") or {}).items())) or "no operations"
        out.append({"kind": "held_plan", "severity": "warn", "id": p["plan_id"],
                    "title": f"Plan {p['plan_id']} is held: {summary}",
                    "why": "; ".join(p.get("reasons") or []) or "the guard held it",
                    "todo": "Check the reasons. If the change is real, an approver approves it "
                            f"(`jml approve {p['plan_id']}`); if the data is wrong, discard it and fix HR.",
                    "actions": ["approve", "discard"]})
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in doc.get("dead_letters") or []:  # one item per person and app: the first failure explains it
        groups.setdefault((str(d["connector"]), str(d.get("person") or "")), []).append(d)
    for (connector, eid), dead in groups.items():
        dead.sort(key=lambda d: (str(d.get("error") or "").startswith("blocked:"), d["operation_id"]))
        d = dead[0]
        plain = plain_error(connector, str(d["action"]), _who(eid, names), str(d.get("error") or ""))
        joiner = any(x["action"] in _CREATE for x in dead)
        more = f" (and {len(dead) - 1} more operation(s) waiting on it)" if len(dead) > 1 else ""
        target = f"for {_who(eid, names)}" if eid else "(no person: a group or setup step)"
        out.append({"kind": "failed_joiner" if joiner else "dead_letter", "severity": "breach",
                    "id": d["operation_id"], "ids": [x["operation_id"] for x in dead], "person": eid or None,
                    "title": (f"Joiner {_who(eid, names)} has no account in {connector}" if joiner else
                              f"{connector}: {d['action']} {target} failed") + more,
                    "why": plain["summary"], "todo": plain["fix"], "detail": plain["detail"],
                    "actions": ["retry", "discard_operation"]})
    aside = doc.get("set_aside") or {}
    aside_rows = aside.get("rows") or []
    total = int(aside.get("count") or len(aside_rows))
    if total > SET_ASIDE_SHOWN:
        out.append({"kind": "set_aside_rows", "severity": "warn", "id": str(aside.get("file")), "person": None,
                    "title": f"{total} rows of {aside.get('file')} set aside (the first {SET_ASIDE_SHOWN} below)",
                    "why": "Rows HR must fix; the rest of the export went on.",
                    "todo": "HR: fix them in the HR system; `jml status --json` lists every one (set_aside.rows).",
                    "actions": []})
    for row in aside_rows[:SET_ASIDE_SHOWN]:
        text = set_aside_text(row, names)
        out.append({"kind": "set_aside_row", "severity": "warn", "id": f"{row.get('file')}:{row.get('row')}",
                    "person": row.get("employee_id"), "title": "HR row set aside", "why": text["summary"],
                    "todo": text["fix"], "actions": []})
    predicted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for lv in doc.get("leavers_in_flight") or []:
        if lv.get("predicted_breach") and not lv.get("breached"):
            predicted.setdefault((str(lv["connector"]), str(lv.get("state"))), []).append(lv)
    for (connector, _state), group in predicted.items():
        if len(group) < 3:
            continue
        lv = group[0]
        who = ", ".join(_who(str(x["person"]), names) for x in group[:3]) + (
            f" and {len(group) - 3} more" if len(group) > 3 else "")
        out.append({"kind": "predicted_breach", "severity": "warn", "id": f"{connector}:{len(group)}",
                    "person": None,
                    "title": f"{len(group)} leavers are predicted to miss the deadline in {connector} "
                             f"(first in {lv.get('time_left')})",
                    "why": f"{_blocked_why(lv)}: {who}", "todo": _blocked_todo(lv), "actions": _unblock(lv)})
    grouped = {id(x) for g in predicted.values() if len(g) >= 3 for x in g}
    for lv in doc.get("leavers_in_flight") or []:
        eid = str(lv.get("person") or "")
        if id(lv) in grouped:
            continue
        if lv.get("breached"):
            cause = lv.get("cause") or {}
            out.append({"kind": "breach", "severity": "breach", "id": f"{lv['connector']}:{eid}", "person": eid,
                        "title": f"{_who(eid, names)} is past the deprovision deadline in {lv['connector']}",
                        "why": cause.get("text") or f"still {lv.get('state', 'pending')}",
                        "todo": cause.get("todo") or "Find what blocks it (held plan, paused connector, dead letter) "
                                                     "and clear it; the clock stops when the app shows the account "
                                                     "deactivated.",
                        "actions": _unblock(lv)})
        elif lv.get("predicted_breach"):
            out.append({"kind": "predicted_breach", "severity": "warn", "id": f"{lv['connector']}:{eid}",
                        "person": eid,
                        "title": f"{_who(eid, names)} is predicted to miss the deadline in {lv['connector']} "
                                 f"({lv.get('time_left')} left)",
                        "why": _blocked_why(lv), "todo": _blocked_todo(lv), "actions": _unblock(lv)})
    src = doc.get("source") or {}
    if src.get("state") == "rejected":
        out.append({"kind": "export_rejected", "severity": "breach", "id": "hris",
                    "title": "The latest HR export was rejected: nothing in it was applied",
                    "why": src.get("last_reason") or src.get("error") or "",
                    "todo": "HR/Ops: fix the export (or the drop) and let the next poll read it; "
                            "the last accepted export still stands.", "actions": []})
    elif src.get("stale"):
        out.append({"kind": "stale_source", "severity": "warn", "id": "hris",
                    "title": "The HR source is stale", "why": src.get("error") or
                    f"no successful read since {src.get('last_success') or 'ever'}",
                    "todo": "Ops: check the HR drop (file, bucket or report URL) and its credentials; joiners, "
                            "movers and leavers from HR wait until it is read.", "actions": []})
    for name in doc.get("paused") or []:
        c = (doc.get("connectors") or {}).get(name) or {}
        out.append({"kind": "paused_connector", "severity": "warn", "id": name,
                    "title": f"Connector {name} is paused ({c.get('pending', 0)} operation(s) waiting)",
                    "why": "An operator paused it: its work waits in the outbox, leavers included.",
                    "todo": f"Resume {name} when the app is ready (`jml resume {name}`).", "actions": ["resume"]})
    unexplained = doc.get("unexplained") or {}
    if unexplained.get("count"):
        sample = unexplained.get("sample") or []
        shown = ", ".join(f"{r.get('username')} {r.get('entitlement')} in {r.get('connector')}" for r in sample[:3])
        more = f" and {int(unexplained['count']) - 3} more" if int(unexplained["count"]) > 3 else ""
        out.append({"kind": "unexplained_access", "severity": "warn", "id": "unexplained", "person": None,
                    "title": f"{unexplained['count']} account(s) or entitlement(s) in apps that no rule and no "
                             "approved request explains",
                    "why": f"found by reconciliation: {shown}{more}. jml leaves entitlements it does not manage "
                           "in place until a reviewer decides.",
                    "todo": "Security: start an access review (`jml review start --by app`); the reviewers keep "
                            "or revoke each one.", "actions": []})
    ev = doc.get("events") or {}
    if ev.get("stalled"):
        out.append({"kind": "inbox_stalled", "severity": "breach", "id": "inbox",
                    "title": f"Webhook events are not being processed ({ev.get('pending')} waiting)",
                    "why": f"the oldest has waited {int(ev.get('oldest_pending_seconds') or 0)} s",
                    "todo": "Ops: check the jml process and its log; /readyz fails until it drains.",
                    "actions": []})
    for q in ev.get("quarantined") or []:
        out.append({"kind": "event_set_aside", "severity": "warn", "id": q.get("id"),
                    "title": f"Webhook event {q.get('id')} set aside (quarantined)", "why": q.get("error") or "",
                    "todo": "Ops: read the error; the person's change must come from HR's next export "
                            "or an offboard.", "actions": []})
    out.sort(key=lambda i: _SEVERITY.get(str(i["severity"]), 9))
    return out


def _blocked_why(lv: dict[str, Any]) -> str:
    state = lv.get("state")
    return {"held": "its deprovision is in a held plan", "paused": "its connector is paused",
            "queued": f"{lv.get('operations_ahead', 0)} operation(s) ahead of it at the connector's write rate",
            "not_deprovisioned": "the app still showed access after the push; pushing again",
            "dead_letter": "its deprovision failed for good (a dead letter): it waits for a retry"}.get(
        str(state), f"state {state}")


def _blocked_todo(lv: dict[str, Any]) -> str:
    state = lv.get("state")
    return {"held": "An approver approves (or an operator discards) the held plan.",
            "paused": f"Resume {lv.get('connector')}.",
            "queued": "Nothing yet: watch it; the connector's rate limit decides the pace.",
            "dead_letter": "Ops: fix what failed (`jml check`), then Retry the dead letter."}.get(
        str(state), "Watch it; check the dead letters if it does not move.")


def _unblock(lv: dict[str, Any]) -> list[str]:
    return {"held": ["approve", "discard"], "paused": ["resume"]}.get(str(lv.get("state")), [])
