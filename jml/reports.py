"""Reports for auditors: who has what (and why, and since when), and the deprovision SLA.

`access`: per person and connector, each grant jml holds for them, since when and which
rule grants it; with `changes_since`, every change pushed since then, from the audit
trail's push records (the trail is the proof, not the current tables).
`sla_report`: every leaver whose clock started in a month, per connector: effective time,
deadline, verified time, duration, met / breached / pending / cancelled.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable
from typing import IO, Any

from jml import sla
from jml.runtime import Runtime
from jml.sla_causes import cause_for, describe

ACCESS_COLUMNS = ("employee_id", "name", "email", "connector", "username", "account", "grant", "rule", "since",
                  "change", "changed_at")
_ADDS = {"add_member", "assign"}


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def changes(rt: Runtime, since: dt.datetime) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(connector, employee_id) -> the pushes that succeeded since `since`, oldest first."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in rt.audit.records(since=since):
        data = rec.get("data") or {}
        if rec.get("kind") != "push" or not isinstance(data, dict) or data.get("result") != "success":
            continue
        subject = rec.get("subject")
        if not subject:
            continue  # group creation: not a person's access
        detail = data.get("detail") or {}
        out.setdefault((str(data.get("connector")), str(subject)), []).append({
            "at": rec.get("at"), "action": data.get("action"),
            "grant": detail.get("group") or detail.get("grant") if isinstance(detail, dict) else None,
            "rule": detail.get("rule") if isinstance(detail, dict) else None,
            "plan_id": data.get("plan_id"), "operation_id": data.get("operation_id"), "audit_seq": rec.get("seq"),
        })
    return out


def access_data(rt: Runtime, changes_since: dt.datetime | None = None) -> dict[str, Any]:
    people = rt.store.people_summary()
    grants: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for g in rt.store.grant_details():
        grants.setdefault((g["connector"], g["employee_id"]), []).append(
            {"grant": g["name"], "rule": g["rule"], "since": _iso(g["since"])})
    accounts = rt.store.account_summaries()
    changed = changes(rt, changes_since) if changes_since is not None else {}
    keys = sorted(set(accounts) | set(grants) | set(changed), key=lambda k: (k[1], k[0]))
    rows = []
    for key in keys:
        connector, eid = key
        acc = accounts.get(key)
        state = "none"
        if acc is not None:
            state = "deleted" if acc.deleted else ("active" if acc.active else "inactive")
        who = people.get(eid)
        entry: dict[str, Any] = {
            "employee_id": eid, "name": who.name if who else "", "email": who.email if who else "",
            "phase": who.phase if who else "", "connector": connector,
            "username": acc.username if acc is not None else "", "account": state,
            "account_since": _iso(acc.created_at) if acc is not None else None,
            "grants": sorted(grants.get(key, []), key=lambda g: g["grant"]),
        }
        if changes_since is not None:
            entry["changes"] = changed.get(key, [])
        rows.append(entry)
    return {"generated_at": rt.clock().isoformat(), "changes_since": _iso(changes_since), "accounts": rows}


def _csv_rows(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for e in doc["accounts"]:
        base = {k: e[k] for k in ("employee_id", "name", "email", "connector", "username", "account")}
        # The latest add of each current grant since the date marks it as a change.
        added: dict[str, dict[str, Any]] = {}
        others: list[dict[str, Any]] = []
        for ch in e.get("changes", []):
            if ch["action"] in _ADDS and ch["grant"] and any(g["grant"] == ch["grant"] for g in e["grants"]):
                added[ch["grant"]] = ch
            else:
                others.append(ch)
        for g in e["grants"]:
            ch = added.get(g["grant"])
            yield {**base, "grant": g["grant"], "rule": g["rule"] or "", "since": g["since"] or "",
                   "change": ch["action"] if ch else "", "changed_at": ch["at"] if ch else ""}
        if not e["grants"] and not others:
            yield {**base, "grant": "", "rule": "", "since": e["account_since"] or "", "change": "", "changed_at": ""}
        for ch in others:
            yield {**base, "grant": ch["grant"] or "", "rule": ch["rule"] or "", "since": "",
                   "change": ch["action"], "changed_at": ch["at"]}


# OWASP "CSV Injection": a cell starting with one of these is read as a formula by Excel,
# LibreOffice and Google Sheets (=HYPERLINK(…) exfiltrates, =cmd|… runs). HR names, group
# names and usernames are outside our control: prefix such a cell with ' so it stays text.
# (The csv module quotes separators, quotes and line breaks inside a cell.)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never evaluates."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def access(rt: Runtime, out: IO[str], *, fmt: str = "csv", changes_since: dt.datetime | None = None) -> None:
    """`jml report access`: who has what in every connector and which rule grants it."""
    doc = access_data(rt, changes_since)
    if fmt == "json":
        json.dump(doc, out, indent=2, ensure_ascii=False, default=str)
        out.write("\n")
        return
    # RFC 4180 line ends: with "\n" the csv module leaves a bare CR in a cell unquoted, and a
    # spreadsheet starts a new row there.
    writer = csv.DictWriter(out, fieldnames=list(ACCESS_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    for row in _csv_rows(doc):
        writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})


# ---- SLA -----------------------------------------------------------------------------
def sla_rows(rt: Runtime, month: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    tz = rt.config.display_timezone  # the one display zone (server.timezone, default HR's)
    now = rt.clock()
    month = month or now.astimezone(tz).strftime("%Y-%m")
    start, end = sla.month_range(month, tz)
    people = rt.store.people_summary()
    rows = []
    for c in sla.clocks(rt, started_from=start, started_before=end):
        if c.cancelled:
            result = "cancelled"
        elif c.breached or (c.verified_at is not None and c.verified_at > c.deadline) or (
                c.verified_at is None and now > c.deadline):
            result = "breached"
        elif c.verified_at is not None:
            result = "met"
        else:
            result = "pending"
        seconds = (c.verified_at - c.started_at).total_seconds() if c.verified_at else None
        cause = ""
        if result == "breached":  # recorded when counted; worked out now for one not counted yet
            cause = getattr(c, "breach_cause", None) or cause_for(rt, c)
        rows.append({
            "employee_id": c.employee_id, "name": who.name if (who := people.get(c.employee_id)) else "",
            "connector": c.connector, "effective": c.started_at.astimezone(tz).isoformat(),
            "deadline": c.deadline.astimezone(tz).isoformat(),
            "verified": c.verified_at.astimezone(tz).isoformat() if c.verified_at else None,
            "seconds": round(seconds, 3) if seconds is not None else None, "result": result, "cause": cause,
        })
    rows.sort(key=lambda r: (r["effective"], r["employee_id"], r["connector"]))
    return month, rows


def sla_report(rt: Runtime, out: IO[str], *, month: str | None = None) -> int:
    """`jml report sla [--month YYYY-MM]`: every leaver of the month, per connector."""
    month, rows = sla_rows(rt, month)
    tz = rt.config.display_timezone  # the one display zone (server.timezone, default HR's)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    leavers = len({r["employee_id"] for r in rows})
    out.write(f"deprovision SLA, {month} ({tz.key}): {leavers} leaver(s), {len(rows)} deprovision(s): "
              + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("met", "breached", "pending", "cancelled")) + "\n")
    causes: dict[str, int] = {}
    for r in rows:
        if r["cause"]:
            causes[r["cause"]] = causes.get(r["cause"], 0) + 1
    if causes:
        out.write("breaches by cause: " + ", ".join(f"{n} {describe(c)['text']}" for c, n in
                                                     sorted(causes.items(), key=lambda kv: -kv[1])) + "\n")
    if not rows:
        return 0
    header = ("employee_id", "name", "connector", "effective", "deadline", "verified", "duration", "result", "cause")
    table = [header] + [
        (r["employee_id"], r["name"], r["connector"], r["effective"], r["deadline"], r["verified"] or "-",
         sla.humanize(r["seconds"]) if r["seconds"] is not None else "-", r["result"], r["cause"] or "")
        for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        out.write("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0
