"""GET / : what an operator needs at a glance, refreshed every few seconds by app.js."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from jml.attention import plain_error
from jml.context import ServiceContext
from jml.sla_causes import describe
from jml.status import finish, snapshot
from jml.web import access_pages, data
from jml.web.auth import Principal
from jml.web.html import badge, countdown, csrf_input, duration, h, page, table, when
from jml.web.plot import durations_section
from jml.web.revert_pages import recent_plans
from jml.web.state import can, state


def _person_link(eid: str, names: dict[str, str]) -> str:
    name = names.get(eid, eid)
    label = f"{h(name)} <span class=\"muted\">{h(eid)}</span>" if name != eid else h(eid)
    return f'<a href="/people/{h(eid)}">{label}</a>'


def _when_dt(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _leavers(doc: dict[str, Any], clocks: list[data.Clock], names: dict[str, str], now: dt.datetime) -> str:
    rows: list[list[str]] = []
    seen = set()
    reported = {(str(lv.get("person", "")), str(lv.get("connector", ""))): lv
                for lv in doc.get("leavers_in_flight") or []}
    for c in clocks:
        seen.add((c.employee_id, c.connector))
        state_ = c.state(now)
        if state_ == "verified":
            continue  # done: shown in the durations plot, no longer "in flight"
        lv = reported.get((c.employee_id, c.connector), {})
        predicted = (lv.get("predicted_breach") if lv else c.predicted_breach) and state_ == "in_progress"
        flag = badge("predicted breach", "warn") if predicted else ""
        note = h(lv.get("last_check") or "") if state_ != "verified" else ""
        rows.append([_person_link(c.employee_id, names), h(c.connector), when(c.started_at), when(c.deadline),
                     countdown(c.deadline, state_, now) + " " + flag, f'<span class="muted">{note}</span>'])
    # Anything the SLA module reports in flight that has no clock row yet.
    for lv in doc.get("leavers_in_flight") or []:
        eid, conn = str(lv.get("person", "")), str(lv.get("connector", ""))
        if (eid, conn) in seen:
            continue
        deadline = _when_dt(lv.get("deadline"))
        if lv.get("verified"):
            continue
        st = "in_progress"
        flag = badge("predicted breach", "warn") if lv.get("predicted_breach") else ""
        rows.append([_person_link(eid, names), h(conn), when(_when_dt(lv.get("started_at"))), when(deadline),
                     countdown(deadline, st, now) + " " + flag,
                     f'<span class="muted">{h(lv.get("last_check") or "")}</span>'])
    return table(["Person", "Connector", "Effective termination", "Deadline", "Time left", "Note"], rows,
                 cls="leavers", empty="No leavers in flight.")


def _verified(clocks: list[data.Clock], names: dict[str, str], now: dt.datetime) -> str:
    """Leavers verified deprovisioned in the last hour: out of "in flight", still in sight."""
    rows = [[_person_link(c.employee_id, names), h(c.connector), when(c.started_at), when(c.verified_at),
             countdown(c.deadline, "verified", now),
             h(duration((c.verified_at - c.started_at).total_seconds()) if c.verified_at and c.started_at else "—")]
            for c in clocks if c.verified_at is not None]
    return table(["Person", "Connector", "Effective termination", "Verified", "State", "Took"], rows,
                 cls="verified", empty="None in the last hour.")


def _breaches(breaches: list[data.Clock], names: dict[str, str], now: dt.datetime) -> str:
    rows = []
    for c in breaches:
        over = ((c.verified_at or now) - c.deadline).total_seconds() if c.deadline else None
        cause = describe(getattr(c, "breach_cause", None))
        rows.append([_person_link(c.employee_id, names), h(c.connector), when(c.deadline),
                     when(c.verified_at) if c.verified_at else badge("not yet verified", "breach"),
                     f'<span class="breach">{h(duration(over))} late</span>',
                     f'<span class="cause" title="{h(cause["todo"])}">{h(cause["text"] or "—")}</span>'])
    return table(["Person", "Connector", "Deadline", "Verified", "Over by", "Why"], rows, cls="breaches",
                 empty="No missed deadlines in the last 7 days.")


def _held(ctx: ServiceContext, doc: dict[str, Any], csrf: str) -> str:
    if not doc["held_plans"]:
        return '<p class="empty">No plan is waiting for approval.</p>'
    out = []
    for p in doc["held_plans"]:
        pid = str(p["plan_id"])
        reasons = "".join(f"<li>{h(r)}</li>" for r in p["reasons"] or [])
        summary = ", ".join(f"{h(k)} {h(v)}" for k, v in sorted((p["summary"] or {}).items())) or "no operations"
        ops = ctx.rt.outbox.ops(["held"], limit=25, plan_id=pid)
        op_rows = [[h(q.op.connector), h(q.op.action.value), h(q.op.employee_id),
                    h(q.op.detail.get("group") or q.op.detail.get("grant") or q.op.detail.get("username") or "")]
                   for q in ops]
        out.append(
            f'<article class="held" data-plan="{h(pid)}"><header><strong>Plan <code>{h(pid)}</code></strong> '
            f'<span class="muted">created {h(when(p["created_at"]))}</span></header>'
            f'<p class="summary">{summary}</p><ul class="reasons">{reasons}</ul>'
            f'<details><summary>First operations</summary>'
            f'{table(["Connector", "Action", "Person", "Target"], op_rows, empty="none")}</details>'
            + _plan_buttons(ctx, pid, csrf) + "</article>")
    return "".join(out)


def _plan_buttons(ctx: ServiceContext, pid: str, csrf: str) -> str:
    out = ""
    req = _request(ctx, pid)
    required = ctx.rt.config.guard.approvals_required
    if req is not None and (req.approvers or req.requester):
        who = ", ".join(req.approvers) or "nobody yet"
        out += (f'<p class="muted approvals">Approvals {len(req.approvers)} of {required}: {h(who)}'
                + (f"; requested by {h(req.requester)}" if req.requester else "") + "</p>")
    if can("approve"):
        out += (f'<form method="post" action="/plans/{h(pid)}/approve" class="approve">{csrf_input(csrf)}'
                f'<button type="submit" class="primary">Approve plan {h(pid)}</button></form>')
    if can("operate"):
        out += (f'<form method="post" action="/plans/{h(pid)}/discard" class="discard">{csrf_input(csrf)}'
                f'<button type="submit">Discard plan {h(pid)}</button></form>')
    return out


def _request(ctx: ServiceContext, pid: str) -> Any:
    from jml.approvals import identities

    return identities(ctx.rt).request(pid)


def _pre_approvals(ctx: ServiceContext, csrf: str) -> str:
    from jml.approvals import identities

    reqs = identities(ctx.rt).requests("pre_approval")
    if not reqs:
        return ""
    required = ctx.rt.config.guard.approvals_required
    out = []
    for r in reqs:
        ids = ", ".join(str(x) for x in r.payload.get("employee_ids", [])[:50])
        button = (f'<form method="post" action="/plans/{h(r.id)}/approve" class="approve">{csrf_input(csrf)}'
                  f'<button type="submit" class="primary">Approve pre-approval {h(r.id)}</button></form>'
                  if can("approve") else "")
        if can("operate"):
            button += (f'<form method="post" action="/plans/{h(r.id)}/discard" class="discard">{csrf_input(csrf)}'
                       f'<button type="submit">Discard pre-approval {h(r.id)}</button></form>')
        out.append(f'<article class="held" data-plan="{h(r.id)}"><header><strong>Layoff pre-approval '
                   f'<code>{h(r.id)}</code></strong> <span class="muted">requested by {h(r.requester or "—")}'
                   f'</span></header><p>Leavers the guard is to let through: {h(ids)}</p>'
                   f'<p class="muted">Approvals {len(r.approvers)} of {required}</p>{button}</article>')
    return "".join(out)


def error_cell(connector: str, action: str, person: str, error: str) -> str:
    """A dead letter's error in plain words, the raw text one click away (never spilling out)."""
    plain = plain_error(connector, action, person, error)
    return (f'<div class="plain-error"><p class="error">{h(plain["summary"])}</p>'
            f'<p class="fix">{h(plain["fix"])}</p>'
            f'<details class="raw"><summary>Technical detail</summary><pre>{h(plain["detail"])}</pre></details></div>')


def op_buttons(op_id: object) -> str:
    """Retry / Discard for one dead letter, for the operator role only."""
    if not can("operate"):
        return ""
    return (f'<form method="post" action="/retry" class="retry">{csrf_input(_csrf())}'
            f'<input type="hidden" name="operation_id" value="{h(op_id)}">'
            f'<button type="submit">Retry #{h(op_id)}</button></form>'
            f'<form method="post" action="/operations/{h(op_id)}/discard" class="discard-op">{csrf_input(_csrf())}'
            f'<button type="submit">Discard #{h(op_id)}</button></form>')


def _dead(doc: dict[str, Any], names: dict[str, str]) -> str:
    rows = [[h(f"#{d['operation_id']}"), h(d["connector"]), h(d["action"]), _person_link(str(d["person"]), names),
             error_cell(str(d["connector"]), str(d["action"]), _name(str(d["person"]), names), str(d["error"] or "")),
             h(d["attempts"]), when(d["at"])]
            for d in doc["dead_letters"]]
    if rows and can("operate"):
        for row, d in zip(rows, doc["dead_letters"], strict=True):
            row.append(op_buttons(d["operation_id"]))
    heads = ["Op", "Connector", "Action", "Person", "Error", "Attempts", "At"] + (
        [""] if rows and can("operate") else [])
    return table(heads, rows, cls="dead", empty="No dead letters.") + (
        (f'<form method="post" action="/retry" class="retry">{csrf_input(_csrf())}'
         '<button type="submit">Retry all</button></form>' if can("operate") else
         '<p class="hint">Re-queue with <code>jml retry ID</code> or <code>jml retry --all</code>.</p>')
        if rows else "")


def _name(eid: str, names: dict[str, str]) -> str:
    name = names.get(eid)
    return f"{name} ({eid})" if name and name != eid else eid


def _attention(ctx: ServiceContext, doc: dict[str, Any], csrf: str) -> str:
    """Needs attention, first on the page: each item with why, what to do, and the button
    the signed-in role may press."""
    items = doc.get("attention") or []
    if not items:
        return '<p class="empty all-clear">Nothing needs attention.</p>'
    out = []
    for item in items:
        kind, iid = str(item["kind"]), item.get("id")
        buttons = ""
        if kind == "held_plan":
            buttons = _plan_buttons(ctx, str(iid), csrf)
        elif kind in ("dead_letter", "failed_joiner"):
            buttons = "".join(op_buttons(x) for x in item.get("ids") or [iid])
        elif kind == "paused_connector" and can("operate"):
            buttons = (f'<form method="post" action="/connectors/{h(iid)}/resume" class="resume">{csrf_input(csrf)}'
                       f'<button type="submit">Resume {h(iid)}</button></form>')
        elif kind in ("breach", "predicted_breach") and item.get("actions"):
            buttons = ('<p class="muted">See <a href="#held">Held plans</a> and '
                       '<a href="#connectors">Connectors</a>.</p>')
        person = item.get("person")
        link = (f' <a href="/people/{h(person)}" class="person-link">open person</a>' if person else "")
        detail = (f'<details class="raw"><summary>Technical detail</summary><pre>{h(item["detail"])}</pre></details>'
                  if item.get("detail") else "")
        out.append(f'<li class="attention-item {h(item["severity"])}" data-kind="{h(kind)}">'
                   f'<strong class="title">{h(item["title"])}</strong>{link}'
                   + (f'<p class="why">{h(item["why"])}</p>' if item.get("why") else "")
                   + f'<p class="todo">What to do: {h(item["todo"])}</p>{detail}'
                   f'<div class="buttons">{buttons}</div></li>')
    return f'<ul class="attention">{"".join(out)}</ul>'


def _csrf() -> str:
    from jml.web.auth import CURRENT

    who = CURRENT.get()
    return who.session.csrf if who is not None and who.session is not None else ""


def _freshen(ctx: ServiceContext, doc: dict[str, Any], now: dt.datetime) -> None:
    """In `jml serve` a poll that found the export unchanged is a successful read too
    (ctx.source_ok_at, as /readyz counts it); the stored exports only record changes."""
    cfg = ctx.rt.config.sources.hris
    ok_at = ctx.source_ok_at.get("hris")
    if cfg is None or ok_at is None:
        return
    limit = cfg.stale_after or cfg.poll_interval * 3
    stale = now - ok_at > limit
    rejected = doc["source"].get("last_status") == "rejected" or "rejected" in ctx.source_error.get("hris", "")
    doc["source"] = {**doc["source"], "last_poll_ok": ok_at.isoformat(), "stale": stale,
                     "state": "rejected" if rejected else "stale" if stale else "fresh"}
    if ctx.source_error.get("hris"):
        doc["source"]["error"] = ctx.source_error["hris"]
    finish(ctx.rt, doc)


def _source(ctx: ServiceContext, doc: dict[str, Any]) -> str:
    src = doc["source"]
    if ctx.rt.config.sources.hris is None:
        flag = badge("no HR source configured", "muted")
    else:
        flag = {"rejected": badge("REJECTED", "breach"), "stale": badge("STALE", "breach")}.get(
            str(src.get("state")), badge("fresh", "ok"))
    rows: list[tuple[str, str]] = [
        ("HR export", flag), ("Last read", when(src["last_read"])), ("Result", h(src["last_status"] or "—")),
        ("Last accepted export", when(src["last_success"])),
        ("Rows", h(src["rows"] if src["rows"] is not None else "—"))]
    aside = doc.get("set_aside") or {}
    if aside.get("count"):
        rows.append(("Rows set aside", f'<a href="#attention">{h(aside["count"])} row(s) of {h(aside.get("file"))}'
                                       "</a> (see Needs attention)"))
    if src.get("last_poll_ok"):
        rows.insert(1, ("Last successful poll", when(src["last_poll_ok"])))
    if src.get("last_reason"):
        rows.append(("Note", h(src["last_reason"])))
    for name, err in sorted(ctx.source_error.items()):
        ok_at = when(ctx.source_ok_at.get(name))
        rows.append((f"{name}: last error", f'<span class="error">{h(err)}</span> (last good read {ok_at})'))
    return '<dl class="facts">' + "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _connectors(doc: dict[str, Any]) -> str:
    rows = []
    for name, c in doc["connectors"].items():
        is_paused = name in doc["paused"]
        paused = badge("PAUSED", "warn") if is_paused else badge("running", "ok")
        row = [h(name), paused, h(c["pending"]), h(c["running"]), h(c["held"]),
               f'<span class="{"error" if c["dead"] else ""}">{h(c["dead"])}</span>']
        if can("operate"):
            verb = "resume" if is_paused else "pause"
            row.append(f'<form method="post" action="/connectors/{h(name)}/{verb}" class="{verb}">'
                       f'{csrf_input(_csrf())}<button type="submit">{verb.capitalize()} {h(name)}</button></form>')
        rows.append(row)
    heads = ["Connector", "State", "Pending", "Running", "Held", "Dead"] + ([""] if can("operate") else [])
    notes = [w for c in doc["connectors"].values() for w in c.get("dialect_warnings") or []]
    worked_around = ('<ul class="dialect">' + "".join(f"<li>{h(w)}</li>" for w in notes) + "</ul>") if notes else ""
    return table(heads, rows, cls="connectors", empty="No connectors configured.") + worked_around


def render(ctx: ServiceContext, csrf: str, flash: str = "") -> tuple[str, dt.datetime]:
    rt = ctx.rt
    now = rt.clock()
    doc = snapshot(rt)
    _freshen(ctx, doc, now)
    clocks = data.leaver_clocks(rt, now)
    breaches = data.recent_breaches(rt, now)
    plots = data.durations(rt)
    eids = {c.employee_id for c in clocks} | {c.employee_id for c in breaches} | {
        str(d["person"]) for d in doc["dead_letters"]} | {str(lv.get("person")) for lv in doc["leavers_in_flight"]}
    names = data.display_names(rt, eids)
    in_flight = sum(1 for c in clocks if c.verified_at is None)
    attention = doc.get("attention") or []
    cards = [
        ("Needs attention", str(len(attention)),
         "breach" if any(i["severity"] == "breach" for i in attention) else "warn" if attention else "ok"),
        ("Leavers in flight", str(in_flight), "warn" if in_flight else "ok"),
        ("Missed deadlines (7 days)", str(len(breaches)), "breach" if breaches else "ok"),
        ("Held plans", str(len(doc["held_plans"])), "warn" if doc["held_plans"] else "ok"),
        ("Dead letters", str(len(doc["dead_letters"])), "breach" if doc["dead_letters"] else "ok"),
        ("HR source", {"rejected": "REJECTED", "stale": "STALE", "none": "none"}.get(
            str(doc["source"].get("state")), "fresh"),
         "breach" if doc["source"].get("state") in ("rejected", "stale") else "ok"),
        ("Set-aside HR rows", str((doc.get("set_aside") or {}).get("count", 0)),
         "warn" if (doc.get("set_aside") or {}).get("count") else "ok"),
        ("Paused connectors", ", ".join(doc["paused"]) or "none", "warn" if doc["paused"] else "ok"),
    ]
    summary = "".join(f'<div class="stat {k}"><div class="label">{h(t)}</div><div class="value">{h(v)}</div></div>'
                      for t, v, k in cards)
    body = (
        (f'<p class="flash">{h(flash)}</p>' if flash else "")
        + f'<section class="stats">{summary}</section>'
        + f'<section class="card" id="attention"><h2>Needs attention</h2>{_attention(ctx, doc, csrf)}</section>'
        + f'<section class="card" id="leavers"><h2>Leavers in flight</h2>{_leavers(doc, clocks, names, now)}</section>'
        + f'<section class="card" id="held"><h2>Held plans</h2>{_held(ctx, doc, csrf)}'
          f'{_pre_approvals(ctx, csrf)}</section>'
        + f'<section class="card" id="verified"><h2>Verified in the last hour</h2>{_verified(clocks, names, now)}'
          '</section>'
        + access_pages.status_section(rt)
        + '<div class="two">'
        + f'<section class="card" id="breaches"><h2>Recent breaches</h2>{_breaches(breaches, names, now)}</section>'
        + f'<section class="card" id="sources"><h2>Source freshness</h2>{_source(ctx, doc)}</section>'
        + "</div>"
        + f'<section class="card" id="durations"><h2>Deprovision durations vs SLA</h2>'
          f'{durations_section(plots, rt.config.connector_sla)}</section>'
        + f'<section class="card" id="connectors"><h2>Connectors</h2>{_connectors(doc)}</section>'
        + f'<section class="card" id="dead"><h2>Dead letters</h2>{_dead(doc, names)}</section>'
        + f'<section class="card" id="plans"><h2>Recent plans</h2>{recent_plans(ctx)}</section>'
    )
    return body, now


async def status_page(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    q = request.query
    flash = ""
    if q.get("approved"):
        what = "Pre-approval" if q["approved"].startswith("pa-") else "Plan"
        flash = f"{what} {q['approved'][:64]} approved: " + (
            "its leavers pass the guard." if what == "Pre-approval" else "its operations are queued.")
    elif q.get("waiting"):
        flash = (f"Your approval of {q['waiting'][:64]} is recorded ({q.get('votes', '?')[:3]} of "
                 f"{q.get('required', '?')[:3]}): it waits for someone else's.")
    elif q.get("discarded"):
        flash = f"Plan {q['discarded'][:64]} discarded."
    elif q.get("dropped"):
        flash = f"Dead letter #{q['dropped'][:18]} discarded: it will not be retried."
    elif q.get("retried"):
        flash = f"{q['retried'][:8]} operation(s) back in the outbox."
    body, now = await asyncio.to_thread(render, ctx, csrf, flash)
    return page("Status", body, now=now, csrf=csrf, active="status", refresh=5)
