"""What `jml status`, `/api/v1/status` and the status page show, as one document."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connectors.scim.dialect import warnings_of
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
    from jml.sync import last_source_read

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
    leavers: list[dict[str, Any]] = []
    try:
        from jml import sla

        leavers = sla.in_flight(rt, now)
    except ImportError:
        pass
    inbox = Inbox(rt.store)
    health = inbox.health(now)
    events = {
        "pending": health.pending,
        "oldest_pending_seconds": round(health.oldest_pending_seconds, 3),
        "stalled": health.oldest_pending_seconds > rt.config.server.inbox_stall_after.total_seconds(),
        "quarantined_count": health.quarantined,
        "quarantined": inbox.quarantined(limit=dead_limit) if health.quarantined else [],
    }
    return {
        "now": now.isoformat(),
        "connectors": connectors,
        "paused": paused,
        "held_plans": held,
        "dead_letters": dead,
        "leavers_in_flight": leavers,
        "source": source,
        "events": events,
    }


def render_text(doc: dict[str, Any]) -> str:
    lines = [f"jml status at {doc['now']}"]
    src = doc["source"]
    lines.append(f"source: last read {src['last_read'] or 'never'} ({src['last_status'] or '-'})"
                 f", last good {src['last_success'] or 'never'}, rows {src['rows'] if src['rows'] is not None else '-'}"
                 + ("  STALE" if src["stale"] else ""))
    if src.get("last_reason"):
        lines.append(f"  reason: {src['last_reason']}")
    lines.append("connectors:")
    for name, c in doc["connectors"].items():
        flag = "  PAUSED" if name in doc["paused"] else ""
        lines.append(f"  {name:16} pending {c['pending']:6}  running {c['running']:4}  dead {c['dead']:4}"
                     f"  held {c['held']:6}{flag}")
        lines.extend(f"    note: {w}" for w in c.get("dialect_warnings") or [])
    if doc["held_plans"]:
        lines.append("held plans (approve with `jml approve PLAN_ID`):")
        for p in doc["held_plans"]:
            lines.append(f"  {p['plan_id']}  {p['created_at']}  {p['summary']}")
            lines.extend(f"    - {r}" for r in p["reasons"])
    if doc["leavers_in_flight"]:
        lines.append("leavers in flight:")
        for lv in doc["leavers_in_flight"]:
            lines.append(f"  {lv['person']:12} {lv['connector']:12} deadline {lv['deadline']}  "
                         f"time left {lv['time_left']}{'  PREDICTED BREACH' if lv.get('predicted_breach') else ''}")
    ev = doc.get("events") or {}
    if ev.get("pending") or ev.get("quarantined_count"):
        lines.append(f"webhook events: pending {ev['pending']}, oldest waiting {ev['oldest_pending_seconds']:.0f}s"
                     f", quarantined {ev['quarantined_count']}" + ("  STALLED" if ev.get("stalled") else ""))
    if ev.get("quarantined"):
        lines.append("quarantined webhook events (failed while processed; the others went on):")
        for q in ev["quarantined"]:
            lines.append(f"  {q['id']}  received {q['received_at']}  {q['error']}")
    if doc["dead_letters"]:
        lines.append("dead letters (re-queue with `jml retry ID` or `jml retry --all`):")
        for d in doc["dead_letters"]:
            lines.append(f"  #{d['operation_id']} {d['connector']} {d['action']} {d['person']}: {d['error']}")
    return "\n".join(lines)
