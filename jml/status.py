"""What `jml status`, `/api/v1/status` and the status page show, as one document."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connectors.scim.dialect import warnings_of
from jml import sla
from jml.runtime import Runtime
from jml.store.inbox import Inbox


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def snapshot(rt: Runtime, *, dead_limit: int = 50) -> dict[str, Any]:
    now = rt.clock()
    counts = rt.outbox.counts()
    connectors: dict[str, dict[str, Any]] = {}
    learnt = rt.store.dialects.all()
    for name in rt.config.connectors:
        connectors[name] = {s: counts.get((name, s), 0) for s in ("pending", "running", "dead", "held")}
        # What this app's SCIM dialect makes jml work around ("app drops externalId: matched by userName").
        connectors[name]["dialect_warnings"] = warnings_of(name, learnt.get(name, {}))
    paused = sorted(rt.store.get_setting("paused_connectors", []) or [])
    held = [
        {"plan_id": p.id, "created_at": _iso(p.created_at), "reasons": p.reasons, "summary": p.summary}
        for p in rt.outbox.plans(["held"])
    ]
    dead = [
        {"operation_id": q.id, "plan_id": q.plan_id, "connector": q.op.connector, "action": q.op.action.value,
         "person": q.op.employee_id, "error": q.last_error, "attempts": q.attempts, "at": _iso(q.updated_at)}
        for q in rt.outbox.ops(["dead"], limit=dead_limit)
    ]
    exports = rt.store.recent_exports(5)
    from jml.sync import last_source_error, last_source_read

    last_ok = rt.store.last_export("hris", good=True)
    last_read_ok = last_source_read(rt) or (last_ok.read_at if last_ok else None)
    src = rt.config.sources.hris
    stale_after = None
    if src is not None:
        stale_after = src.stale_after or src.poll_interval * 3
    source = {
        "last_read": _iso(exports[0].read_at) if exports else None,
        "last_status": exports[0].status if exports else None,
        "last_reason": exports[0].reason if exports else None,
        "last_success": _iso(last_read_ok),
        "rows": last_ok.row_count if last_ok else None,
        "stale": bool(stale_after and (last_read_ok is None or now - last_read_ok > stale_after)),
    }
    if failed := last_source_error(rt):  # the last read failed (not found, refused, unreachable)
        source["error"], source["error_at"] = failed["error"], failed.get("at")
    # One word for the tile: a rejected export is not "fresh", whenever the last good read was.
    source["state"] = ("rejected" if source["last_status"] == "rejected" else "none" if src is None
                       else "stale" if source["stale"] else "fresh")
    leavers = sla.in_flight(rt, now)
    from jml.sla_causes import cause_of, describe

    for lv in leavers:  # why a missed deadline was missed (issue 17)
        if lv.get("breached"):
            lv["cause"] = describe(cause_of(rt, str(lv["connector"]), str(lv["person"]),
                                            dt.datetime.fromisoformat(str(lv["deadline"]))))
    inbox = Inbox(rt.store)
    health = inbox.health(now)
    events = {
        "pending": health.pending,
        "oldest_pending_seconds": round(health.oldest_pending_seconds, 3),
        "stalled": health.oldest_pending_seconds > rt.config.server.inbox_stall_after.total_seconds(),
        "quarantined_count": health.quarantined,
        "quarantined": inbox.quarantined(limit=dead_limit) if health.quarantined else [],
    }
    from jml.sync import set_aside_rows

    doc: dict[str, Any] = {
        "now": now.isoformat(),
        "timezone": str(rt.config.display_timezone),
        "connectors": connectors,
        "paused": paused,
        "held_plans": held,
        "dead_letters": dead,
        "leavers_in_flight": leavers,
        "source": source,
        "events": events,
        "set_aside": set_aside_rows(rt),
        # Access found in apps that no rule and no approved request explains (kept by reconcile, jml/reviews.py).
        "unexplained": rt.store.get_setting("unexplained") or {"at": None, "count": 0, "by_connector": {},
                                                                "sample": []},
    }
    finish(rt, doc)
    return doc


def finish(rt: Runtime, doc: dict[str, Any]) -> None:
    """(Re)compute what needs attention from the document (after the page has freshened the
    source from the daemon's own polls)."""
    from jml.attention import items

    eids = {str(d["person"]) for d in doc["dead_letters"]} | {str(lv["person"]) for lv in doc["leavers_in_flight"]}
    states = rt.store.load_states(eids) if eids else {}
    names = {eid: s.person.display_name for eid, s in states.items() if s.person is not None}
    doc["attention"] = items(doc, names)


def local_time(value: Any, tz: str | None) -> str:
    """An ISO time as people read it, in the one display zone: 2026-11-23 13:00 CET."""
    import zoneinfo

    if not value:
        return "never"
    try:
        t = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if tz:
        t = t.astimezone(zoneinfo.ZoneInfo(tz))
    return t.strftime("%Y-%m-%d %H:%M %Z").strip()


def _counts(summary: dict[str, Any] | None) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted((summary or {}).items())) or "no operations"


def render_text(doc: dict[str, Any]) -> str:
    tz = doc.get("timezone")
    lines = [f"jml status at {local_time(doc['now'], tz)}"]
    attention = doc.get("attention") or []
    if attention:
        lines.append(f"NEEDS ATTENTION ({len(attention)}):")
        for item in attention:
            mark = "!!" if item["severity"] == "breach" else " !"
            lines.append(f"{mark} {item['title']}")
            if item.get("why"):
                lines.append(f"     why: {item['why']}")
            lines.append(f"     do:  {item['todo']}")
    else:
        lines.append("Nothing needs attention.")
    unexplained = doc.get("unexplained") or {}
    if unexplained.get("count"):
        per = ", ".join(f"{n} in {c}" for c, n in sorted((unexplained.get("by_connector") or {}).items()))
        lines.append(f"unexplained access: {unexplained['count']} ({per}); `jml review start --by app` reviews it")
    src = doc["source"]
    state = {"fresh": "fresh", "stale": "STALE", "rejected": "last export REJECTED", "none": "not configured"}.get(
        src.get("state", ""), "")
    rows = src["rows"] if src["rows"] is not None else "-"
    lines.append(f"HR source: {state}; last read {local_time(src['last_read'], tz)} ({src['last_status'] or '-'}), "
                 f"last good {local_time(src['last_success'], tz)}, {rows} rows")
    aside = doc.get("set_aside") or {}
    if aside.get("count"):
        lines.append(f"  {aside['count']} row(s) of {aside.get('file')} set aside (see above)")
    if src.get("last_reason"):
        lines.append(f"  note: {src['last_reason']}")
    if src.get("error"):
        lines.append(f"  last error ({local_time(src.get('error_at'), tz)}): {src['error']}")
    lines.append("connectors:")
    for name, c in doc["connectors"].items():
        flag = "  PAUSED" if name in doc["paused"] else ""
        lines.append(f"  {name:16} pending {c['pending']:6}  running {c['running']:4}  dead {c['dead']:4}"
                     f"  held {c['held']:6}{flag}")
        lines.extend(f"    note: {w}" for w in c.get("dialect_warnings") or [])
    if doc["held_plans"]:
        lines.append("held plans (`jml approve PLAN_ID` or `jml discard PLAN_ID`):")
        for p in doc["held_plans"]:
            lines.append(f"  {p['plan_id']}  held {local_time(p['created_at'], tz)}: {_counts(p['summary'])}")
            lines.extend(f"    - {r}" for r in p["reasons"])
    if doc["leavers_in_flight"]:
        lines.append("leavers in flight:")
        for lv in doc["leavers_in_flight"]:
            deadline = local_time(lv["deadline"], tz)
            if lv.get("breached"):
                when = f"deadline {deadline} MISSED, {lv['time_left']}"
            else:
                when = f"deadline {deadline}, {lv['time_left']} left"
                if lv.get("predicted_breach"):
                    when += " (predicted to miss it)"
            state_ = lv.get("state")
            lines.append(f"  {lv['person']:12} {lv['connector']:12} {when}" + (f"; {state_}" if state_ else ""))
    ev = doc.get("events") or {}
    if ev.get("pending") or ev.get("quarantined_count"):
        lines.append(f"webhook events: pending {ev['pending']}, oldest waiting {ev['oldest_pending_seconds']:.0f}s"
                     f", set aside (quarantined) {ev['quarantined_count']}"
                     + ("  STALLED" if ev.get("stalled") else ""))
    if doc["dead_letters"]:
        lines.append("dead letters (`jml retry ID` or `jml retry --all`; raw errors):")
        for d in doc["dead_letters"]:
            error = " ".join(str(d["error"] or "").split())  # one line each, whatever the app said
            lines.append(f"  #{d['operation_id']} {d['connector']} {d['action']} {d['person']}: {error}")
    return "\n".join(lines)
