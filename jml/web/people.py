"""The HR view: find a person, see their access and why, offboard them, watch it happen."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jml.context import ServiceContext
from jml.model import OverrideKind
from jml.web import access_pages, actions, data, person_data
from jml.web.auth import Principal
from jml.web.html import badge, countdown, csrf_input, duration, h, message_page, page, table, when
from jml.web.state import BadInput, state, text_field, valid_id

MAX_QUERY = 200
MAX_REASON = 500


def _phase_badge(phase: str | None, offboarded: bool) -> str:
    if offboarded:
        return badge("offboarded", "breach")
    kinds = {"active": "ok", "leaver": "breach", "gone": "muted", "prehire": "warn", "suspended": "warn"}
    return badge(phase or "unknown", kinds.get(phase or "", "muted"))


async def search(request: web.Request, who: Principal) -> web.StreamResponse:
    """Find a person (accents and case ignored), or browse with department and status filters."""
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    now = ctx.rt.clock()
    try:
        q = text_field(request.query.get("q", ""), "q", max_len=MAX_QUERY, required=False)
        dept = text_field(request.query.get("department", ""), "department", max_len=MAX_QUERY, required=False)
        status = text_field(request.query.get("status", ""), "status", max_len=20, required=False)
    except BadInput as e:
        return message_page("Bad search", str(e), now=now, csrf=csrf, status=400, back="/people")
    if status and status not in person_data.STATUSES:
        status = ""
    hits, depts = await asyncio.to_thread(_search, ctx, q, dept, status)
    rows = []
    for hit in hits:
        link = (f'<a href="/people/{h(quote(hit.employee_id, safe=""))}">{h(hit.name or hit.employee_id)}</a>'
                if valid_id(hit.employee_id) else h(hit.name or hit.employee_id))
        st = _phase_badge(hit.phase, hit.offboarded)
        if hit.set_aside:
            st += " " + badge("row set aside", "warn") + f'<div class="muted small">{h(hit.set_aside)}</div>'
        rows.append([link, h(hit.email), h(hit.employee_id), h(hit.department), h(hit.job_title), st])
    what = f"for “{h(q)}”" if q else "(browse)"
    filters = " · ".join(x for x in (f"department {h(dept)}" if dept else "", f"status {h(status)}" if status
                                     else "") if x)
    results = (f'<p class="muted">{len(rows)} {"person" if len(rows) == 1 else "people"} {what}'
               f'{" · " + filters if filters else ""}{" (first 100)" if len(rows) >= 100 else ""}</p>'
               + table(["Name", "Email", "Employee ID", "Department", "Job title", "Status"], rows,
                       cls="results", empty=f"Nobody matches “{q}”. Try part of the name, e-mail or id; accents "
                                            "and capitals do not matter."))
    dept_opts = '<option value="">all departments</option>' + "".join(
        f'<option value="{h(d)}"{" selected" if d == dept else ""}>{h(d)}</option>' for d in depts)
    status_opts = '<option value="">any status</option>' + "".join(
        f'<option value="{h(s_)}"{" selected" if s_ == status else ""}>{h(s_)}</option>'
        for s_ in person_data.STATUSES)
    body = (
        '<section class="card"><h1>Find a person</h1>'
        '<form method="get" action="/people" class="search">'
        f'<input type="search" name="q" value="{h(q)}" maxlength="{MAX_QUERY}" autofocus '
        'placeholder="name, email or employee id" aria-label="name, email or employee id">'
        f'<select name="department" aria-label="department">{dept_opts}</select>'
        f'<select name="status" aria-label="status">{status_opts}</select>'
        '<button type="submit" class="primary">Search</button></form>'
        f"{results}</section>"
    )
    return page("People", body, now=now, csrf=csrf, active="people")


def _search(ctx: ServiceContext, q: str, dept: str, status: str) -> tuple[list[person_data.Hit], list[str]]:
    return person_data.search(ctx.rt, q, department=dept, status=status), person_data.departments(ctx.rt)


def _facts(facts: data.PersonFacts, manager: str = "") -> str:
    s = facts.state
    p = s.person
    rows: list[tuple[str, str]] = [("Employee ID", h(s.employee_id))]
    if p is not None:
        boss = "—"
        if p.manager_id:
            label = f"{h(manager)} <span class=\"muted\">{h(p.manager_id)}</span>" if manager else h(p.manager_id)
            boss = f'<a href="/people/{h(quote(p.manager_id, safe=""))}">{label}</a>' if valid_id(p.manager_id) \
                else label
        rows += [("Email", h(p.work_email)), ("Department", h(p.department)), ("Job title", h(p.job_title)),
                 ("Manager", boss), ("Location", h(p.location)), ("HR status", h(p.status.value)),
                 ("Hire date", h(p.hire_date or "—")), ("Termination date", h(p.termination_date or "—"))]
    rows.append(("jml sees them as", _phase_badge(facts.phase, False)))
    if facts.effective_termination:
        rows.append(("Effective termination", h(when(facts.effective_termination))))
    if s.override is not None:
        ov = s.override
        rows.append(("Leaver override", f"{h(ov.kind.value)} at {h(when(ov.effective_at))} by {h(ov.actor or '—')}"
                                        f": {h(ov.reason or '—')}"))
    return '<dl class="facts">' + "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _access(rows: list[dict[str, Any]], conditions: dict[str, str] | None = None,
            removed: list[dict[str, Any]] | None = None) -> str:
    conditions = conditions or {}
    out = []
    for r in rows:
        acct = h(r["account"]) if r["account"] else '<span class="muted">no account</span>'
        st = {"active": badge("active", "ok"), "inactive": badge("disabled", "muted"),
              "deleted": badge("deleted", "muted")}.get(r["state"] or "", "")
        if not r["grants"]:
            out.append([h(r["connector"]), acct, st, '<span class="muted">—</span>', "", ""])
        for g in r["grants"]:
            rule = g["rule"]
            cond = conditions.get(rule or "")
            why = h(rule or "—") + (f'<div class="muted small rule-when">when {h(cond)}</div>' if cond else "")
            out.append([h(r["connector"]), acct, st, h(g["grant"]), why, when(g["since"])])
    for x in removed or []:  # after an offboarding: what was there, and when it went
        label = {"deactivate": "account deactivated", "delete": "account deleted", "cancel_invite": "invitation "
                 "cancelled"}.get(x["action"], str(x["what"]))
        out.append([h(x["connector"]), '<span class="muted">—</span>', badge("removed", "muted"),
                    f'<s class="removed">{h(label)}</s>', f'<span class="muted">removed (plan {h(x["plan_id"])})'
                    '</span>', when(x["at"])])
    return table(["Connector", "Account", "State", "Access", "Granted by rule", "Since / removed"], out,
                 cls="access", empty="No connectors configured.")


def _set_aside(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    items = "".join(f"<li>Row {h(r.get('row'))} of {h(r.get('file'))}: <strong>{h(r.get('field'))}</strong> "
                    f"{h(r.get('message'))}</li>" for r in rows)
    return ('<section class="card set-aside" id="set-aside"><h2>HR row set aside</h2>'
            f"<ul>{items}</ul><p>HR: correct this in the HR system. Until then jml keeps this person's last good "
            "data (a set-aside row never makes anyone a leaver).</p></section>")


def _history(events: list[dict[str, Any]]) -> str:
    rows = []
    for e in events:
        changes = e.get("changes") or {}
        change_text = "; ".join(
            f"{k}: {v[0] or '(empty)'} → {v[1] or '(empty)'}" if isinstance(v, list | tuple) and len(v) == 2
            else f"{k}: {v}" for k, v in changes.items())
        took = e.get("took")
        rows.append([when(e["at"]), h(e["kind"].replace("_", " ")), h(e["what"])
                     + (f'<div class="muted small">{h(change_text)}</div>' if change_text else ""),
                     h(e.get("who") or ""), h(duration(took) if took is not None else "")])
    return table(["When", "What", "Detail", "Who", "Took"], rows, cls="history", empty="Nothing recorded yet.")


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
    if facts.phase in ("leaver", "gone"):
        return ('<section class="card" id="offboard-state"><h2>Already a leaver</h2>'
                '<p>jml is removing (or has removed) this person\'s access; see the progress above. '
                'There is nothing to offboard.</p></section>')
    return (f'<section class="card danger"><h2>Offboard now</h2>'
            '<p>Removes this person\'s access in every app now, without waiting for the HR export.</p>'
            f'<form method="post" action="{action}" id="offboard-form">{csrf_input(csrf)}'
            '<label for="reason">Reason (kept in the audit trail)</label>'
            f'<textarea id="reason" name="reason" required maxlength="{MAX_REASON}" rows="2" '
            'placeholder="e.g. resigned effective today; ticket HR-1234"></textarea>'
            '<button type="submit" class="danger">Offboard now…</button></form></section>')


def _problems(eid: str, name: str, dead: list[dict[str, Any]]) -> str:
    """This person's dead letters, in plain words, with Retry/Discard for operators (issue 17:
    a failed joiner once looked fine here)."""
    if not dead:
        return ""
    from jml.web.status_page import error_cell, op_buttons

    rows = [[h(d["connector"]), h(d["action"]),
             error_cell(str(d["connector"]), str(d["action"]), f"{name} ({eid})", str(d["error"] or "")),
             op_buttons(d["operation_id"])] for d in dead]
    return ('<section class="card attention-person" id="problems"><h2>Needs attention</h2>'
            + table(["App", "Action", "What went wrong", ""], rows, cls="dead") + "</section>")


@dataclass
class _Extra:
    dead: list[dict[str, Any]] = field(default_factory=list)
    manager: str = ""
    conditions: dict[str, str] = field(default_factory=dict)
    removed: list[dict[str, Any]] = field(default_factory=list)
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    requested: str = ""  # the "Requested access" card (jml/web/access_pages.py)


def _load(ctx: ServiceContext, eid: str) -> tuple[data.PersonFacts | None, list[dict[str, Any]],
                                                     dict[str, Any] | None, dt.datetime, _Extra]:
    rt = ctx.rt
    now = rt.clock()
    extra = _Extra(set_aside=person_data.set_aside_for(rt, eid))
    facts = data.person(rt, eid)
    if facts is None:
        return None, [], None, now, extra
    p = facts.state.person
    if p is not None and p.manager_id:
        extra.manager = data.display_names(rt, {p.manager_id}).get(p.manager_id, "")
    extra.conditions = person_data.rule_conditions(rt)
    extra.removed = person_data.removed_access(rt, eid)
    extra.history = person_data.history(rt, eid)
    extra.requested = access_pages.person_section(rt, eid)
    extra.dead = [o for o in rt.outbox.person_history(eid) if o["state"] == "dead"]
    return facts, data.access(rt, eid), data.progress(rt, eid, now), now, extra


async def person(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    eid = request.match_info["employee_id"]
    if not valid_id(eid):
        return message_page("Not found", "No such person.", now=ctx.rt.clock(), csrf=csrf, status=404, back="/people")
    facts, access, prog, now, extra = await asyncio.to_thread(_load, ctx, eid)
    if (facts is None or prog is None) and extra.set_aside:
        # Known only from a set-aside row (a joiner with bad data): say so, and what HR fixes.
        who_ = str(extra.set_aside[0].get("name") or eid)
        body = (f'<p class="crumbs"><a href="/people">People</a> &rsaquo; {h(who_)}</p>'
                f'<section class="card"><h1>{h(who_)}</h1><p>{h(eid)} is not in jml yet: their HR row was set '
                'aside, so no account has been made.</p></section>' + _set_aside(extra.set_aside))
        return page(who_, body, now=now, csrf=csrf, active="people")
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
        + _set_aside(extra.set_aside)
        + _problems(eid, name, extra.dead)
        + f'<section class="card"><h1>{h(name)}</h1>{_facts(facts, extra.manager)}</section>'
        + (_progress(eid, prog, now) if prog["leaver"] else "")
        + f'<section class="card" id="access"><h2>Access</h2>{_access(access, extra.conditions, extra.removed)}'
          '</section>'
        + extra.requested
        + (_offboard_form(eid, facts, csrf) if who.can("offboard") else "")
        + f'<section class="card" id="history"><h2>History</h2>{_history(extra.history)}</section>'
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
