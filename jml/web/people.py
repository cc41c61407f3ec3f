"""The HR view: find a person, see their access and why, offboard them, watch it happen."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jml.context import ServiceContext
from jml.model import OverrideKind
from jml.web import actions, data
from jml.web.auth import Principal
from jml.web.html import badge, countdown, csrf_input, h, message_page, page, table, when
from jml.web.state import BadInput, state, text_field, valid_id

MAX_QUERY = 200
MAX_REASON = 500


def _phase_badge(phase: str | None, offboarded: bool) -> str:
    if offboarded:
        return badge("offboarded", "breach")
    kinds = {"active": "ok", "leaver": "breach", "gone": "muted", "prehire": "warn", "suspended": "warn"}
    return badge(phase or "unknown", kinds.get(phase or "", "muted"))


async def search(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    now = ctx.rt.clock()
    q = request.query.get("q", "")
    try:
        q = text_field(q, "q", max_len=MAX_QUERY, required=False)
    except BadInput as e:
        return message_page("Bad search", str(e), now=now, csrf=csrf, status=400, back="/people")
    results = ""
    if q:
        hits = await asyncio.to_thread(ctx.rt.store.find_people, q, 50)
        index = await asyncio.to_thread(ctx.rt.store.person_index)
        rows = []
        for s in hits:
            p = s.person
            phase = index[s.employee_id].phase if s.employee_id in index else None
            rows.append([
                f'<a href="/people/{h(quote(s.employee_id, safe=""))}">{h(p.display_name if p else s.employee_id)}</a>',
                h(p.work_email if p else ""), h(s.employee_id), h(p.department if p else ""),
                h(p.job_title if p else ""), _phase_badge(phase, s.override is not None),
            ])
        results = (f'<p class="muted">{len(rows)} match{"es" if len(rows) != 1 else ""} for “{h(q)}”</p>'
                   + table(["Name", "Email", "Employee ID", "Department", "Job title", "Status"], rows,
                           cls="results", empty=f"Nobody matches “{q}”. Try part of the name, email or id."))
    body = (
        '<section class="card"><h1>Find a person</h1>'
        '<form method="get" action="/people" class="search">'
        f'<input type="search" name="q" value="{h(q)}" maxlength="{MAX_QUERY}" autofocus '
        'placeholder="name, email or employee id" aria-label="name, email or employee id">'
        '<button type="submit" class="primary">Search</button></form>'
        f"{results}</section>"
    )
    return page("People", body, now=now, csrf=csrf, active="people")


def _facts(facts: data.PersonFacts) -> str:
    s = facts.state
    p = s.person
    rows: list[tuple[str, str]] = [("Employee ID", h(s.employee_id))]
    if p is not None:
        rows += [("Email", h(p.work_email)), ("Department", h(p.department)), ("Job title", h(p.job_title)),
                 ("Manager", h(p.manager_id)), ("Location", h(p.location)), ("HR status", h(p.status.value)),
                 ("Hire date", h(p.hire_date or "—")), ("Termination date", h(p.termination_date or "—"))]
    rows.append(("jml sees them as", _phase_badge(facts.phase, False)))
    if facts.effective_termination:
        rows.append(("Effective termination", h(when(facts.effective_termination))))
    if s.override is not None:
        ov = s.override
        rows.append(("Leaver override", f"{h(ov.kind.value)} at {h(when(ov.effective_at))} by {h(ov.actor or '—')}"
                                        f": {h(ov.reason or '—')}"))
    return '<dl class="facts">' + "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _access(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        acct = h(r["account"]) if r["account"] else '<span class="muted">no account</span>'
        st = {"active": badge("active", "ok"), "inactive": badge("disabled", "muted"),
              "deleted": badge("deleted", "muted")}.get(r["state"] or "", "")
        if not r["grants"]:
            out.append([h(r["connector"]), acct, st, '<span class="muted">—</span>', "", ""])
        for g in r["grants"]:
            out.append([h(r["connector"]), acct, st, h(g["grant"]),
                        h(g["rule"] or "—"), when(g["since"])])
    return table(["Connector", "Account", "State", "Access", "Granted by rule", "Since"], out, cls="access",
                 empty="No connectors configured.")


def progress_rows(doc: dict[str, Any], now: dt.datetime) -> str:
    rows = []
    for c in doc["connectors"]:
        rows.append([h(c["connector"]), h(c["account"] or "—"), h(c["pending"]), h(c["done"]),
                     f'<span class="{"error" if c["dead"] else ""}">{h(c["dead"])}</span>', when(c["deadline"]),
                     countdown(c["deadline"], c["state"], now)])
    return "".join("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>" for r in rows)


def _progress(eid: str, doc: dict[str, Any], now: dt.datetime) -> str:
    head = "".join(f"<th>{t}</th>" for t in ("Connector", "Account", "Pending", "Done", "Failed", "Deadline",
                                             "Time left"))
    done = badge("access removed everywhere", "ok") if doc["all_verified"] else ""
    return (f'<section class="card" id="progress"><h2>Offboarding progress {done}</h2>'
            f'<table class="progress" data-progress="/api/v1/people/{h(quote(eid, safe=""))}/progress">'
            f'<thead><tr>{head}</tr></thead><tbody>{progress_rows(doc, now)}</tbody></table>'
            '<p class="hint">Updates live. “verified” means jml read the app back and the access is gone.</p>'
            "</section>")


def _offboard_form(eid: str, facts: data.PersonFacts, csrf: str) -> str:
    action = f"/people/{h(quote(eid, safe=''))}/offboard"
    ov = facts.state.override
    if ov is not None and ov.kind is OverrideKind.OFFBOARD:
        return (f'<section class="card danger"><h2>Undo the offboarding</h2><form method="post" action="{action}">'
                f'{csrf_input(csrf)}<input type="hidden" name="undo" value="yes">'
                f'<label for="reason">Why is it being undone?</label>'
                f'<textarea id="reason" name="reason" required maxlength="{MAX_REASON}" rows="2"></textarea>'
                '<button type="submit">Undo offboarding…</button></form></section>')
    return (f'<section class="card danger"><h2>Offboard now</h2>'
            '<p>Removes this person\'s access in every app now, without waiting for the HR export.</p>'
            f'<form method="post" action="{action}" id="offboard-form">{csrf_input(csrf)}'
            '<label for="reason">Reason (kept in the audit trail)</label>'
            f'<textarea id="reason" name="reason" required maxlength="{MAX_REASON}" rows="2" '
            'placeholder="e.g. resigned effective today; ticket HR-1234"></textarea>'
            '<button type="submit" class="danger">Offboard now…</button></form></section>')


def _load(ctx: ServiceContext, eid: str) -> tuple[data.PersonFacts | None, list[dict[str, Any]],
                                                     dict[str, Any] | None, dt.datetime]:
    now = ctx.rt.clock()
    facts = data.person(ctx.rt, eid)
    if facts is None:
        return None, [], None, now
    return facts, data.access(ctx.rt, eid), data.progress(ctx.rt, eid, now), now


async def person(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    eid = request.match_info["employee_id"]
    if not valid_id(eid):
        return message_page("Not found", "No such person.", now=ctx.rt.clock(), csrf=csrf, status=404, back="/people")
    facts, access, prog, now = await asyncio.to_thread(_load, ctx, eid)
    if facts is None or prog is None:
        return message_page("Not found", f"No person with employee id {eid}.", now=now, csrf=csrf, status=404,
                            back="/people")
    name = facts.state.person.display_name if facts.state.person else eid
    flash = {"offboarded": f"{name} is being offboarded. Progress below updates live.",
             "undone": f"The offboarding of {name} was undone.",
             "held": f"{name} is recorded as a leaver, but the guard held the plan (too many leavers this hour): "
                     "approve it on the status page."}.get(request.query.get("done", ""), "")
    body = (
        (f'<p class="flash">{h(flash)}</p>' if flash else "")
        + f'<p class="crumbs"><a href="/people">People</a> &rsaquo; {h(name)}</p>'
        + f'<section class="card"><h1>{h(name)}</h1>{_facts(facts)}</section>'
        + (_progress(eid, prog, now) if prog["leaver"] else "")
        + f'<section class="card" id="access"><h2>Access</h2>{_access(access)}</section>'
        + (_offboard_form(eid, facts, csrf) if who.can("offboard") else "")
    )
    return page(name, body, now=now, csrf=csrf, active="people")


async def offboard(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    now = ctx.rt.clock()
    eid = request.match_info["employee_id"]
    back = f"/people/{quote(eid, safe='')}"
    if not valid_id(eid):
        return message_page("Not found", "No such person.", now=now, csrf=csrf, status=404, back="/people")
    undo = form.get("undo") == "yes"
    try:
        reason = text_field(form.get("reason"), "reason", max_len=MAX_REASON, multiline=True)
    except BadInput as e:
        return message_page("Reason needed", f"{e}: say why, it goes into the audit trail.", now=now, csrf=csrf,
                            status=400, back=back)
    facts = await asyncio.to_thread(data.person, ctx.rt, eid)
    if facts is None:
        return message_page("Not found", f"No person with employee id {eid}.", now=now, csrf=csrf, status=404,
                            back="/people")
    if form.get("confirm") != "yes":
        access = await asyncio.to_thread(data.access, ctx.rt, eid)
        return _confirm(eid, facts, access, reason, undo, csrf, ctx, now)
    try:
        result = await actions.offboard(ctx, eid, reason=reason, at=None, actor=who.actor, undo=undo,
                                        who=who.approver)
    except actions.ActionError as e:
        return message_page("Not done", e.message, now=now, csrf=csrf, status=e.status, back=back)
    done = "held" if result.get("held") else "undone" if undo else "offboarded"
    raise web.HTTPSeeOther(location=f"{back}?done={done}")


def _confirm(eid: str, facts: data.PersonFacts, access: list[dict[str, Any]], reason: str, undo: bool, csrf: str,
             ctx: ServiceContext, now: dt.datetime) -> web.Response:
    name = facts.state.person.display_name if facts.state.person else eid
    apps = [a for a in access if a["account"] and a["state"] != "deleted"]
    items = "".join(f"<li><strong>{h(a['connector'])}</strong>: {h(a['account'])}"
                    f" ({len(a['grants'])} grant{'s' if len(a['grants']) != 1 else ''}); deadline "
                    f"{h(when(now + ctx.rt.config.connector_sla(a['connector'])))}</li>" for a in apps)
    what = (f"<p>Undo the offboarding of <strong>{h(name)}</strong> ({h(eid)}): jml will plan their access from "
            "the HR record again.</p>") if undo else (
        f"<p>You are about to offboard <strong>{h(name)}</strong> ({h(eid)}) <strong>now</strong>. "
        "Their access will be removed in:</p>"
        + (f"<ul>{items}</ul>" if items else "<p class=\"muted\">no app accounts recorded</p>"))
    body = (
        f'<section class="card danger narrow" id="confirm"><h1>{"Undo offboarding?" if undo else "Offboard now?"}</h1>'
        f"{what}<p>Reason: <q>{h(reason)}</q></p>"
        f'<form method="post" action="/people/{h(quote(eid, safe=""))}/offboard">{csrf_input(csrf)}'
        f'<input type="hidden" name="reason" value="{h(reason)}"><input type="hidden" name="confirm" value="yes">'
        + ('<input type="hidden" name="undo" value="yes">' if undo else "")
        + f'<button type="submit" class="danger" id="confirm-offboard">'
          f'{"Yes, undo it" if undo else "Yes, offboard " + h(name) + " now"}</button> '
          f'<a class="button" href="/people/{h(quote(eid, safe=""))}">Cancel</a></form></section>')
    return page("Confirm", body, now=now, csrf=csrf, active="people")
