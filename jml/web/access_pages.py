"""Access requests in the browser: /access (ask, and decide what the policy names you for) and the
"Requested access" card of a person's page (what they hold beyond the rules, and why)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jml import access as acc
from jml.config import parse_duration
from jml.errors import BadRequest
from jml.runtime import Runtime
from jml.store.access import AccessRequest
from jml.web.access import visible, who_of
from jml.web.auth import Principal
from jml.web.html import badge, csrf_input, h, message_page, page, table, when
from jml.web.state import state, valid_id

STATE_BADGE = {"pending": "warn", "active": "ok", "denied": "bad", "revoked": "bad", "expired": "", "cancelled": ""}


def _approvers(r: AccessRequest) -> str:
    return "<br>".join(f"{h(v.approver)} <small>({h(v.basis)}, {h(when(v.at))})</small>" for v in r.votes) or "—"


def _why(r: AccessRequest) -> str:
    kind = "break-glass" if r.kind == "jit" else "request"
    return f"{h(kind)} <code>{h(r.id)}</code>: {h(r.reason)}"


def person_section(rt: Runtime, employee_id: str) -> str:
    """The person's requested and break-glass grants: why, who asked, who approved, until when."""
    reqs = rt.store.access.find(eids=[employee_id], limit=50)
    rows = [[f"{h(r.connector)}: {h(r.grant)}", _why(r), badge(r.state, STATE_BADGE.get(r.state, "")),
             h(r.requester or "—"), _approvers(r), h(when(r.expires_at))] for r in reqs]
    return ('<section class="card" id="requested-access"><h2>Requested access</h2>'
            + table(["Entitlement", "Why", "State", "Requested by", "Approved by", "Until"], rows,
                    empty="No requested or break-glass access.")
            + "</section>")


def _removal(r: AccessRequest) -> str:
    if r.state not in ("expired", "revoked") or r.granted_at is None:
        return "—"
    if r.removal_verified_at is not None:
        return badge("removed, verified", "ok") + f" <small>{h(when(r.removal_verified_at))}</small>"
    if r.removal_breached:
        return badge("not verified past its deadline", "breach")
    return badge("removing", "warn") + f" <small>deadline {h(when(r.removal_deadline))}</small>"


def status_section(rt: Runtime) -> str:
    """The status page's card: requests waiting, grants in force with their expiry, recent endings."""
    recent = rt.store.access.find(states=["pending", "active", "expired", "revoked"], limit=15)
    rows = [[f"<code>{h(r.id)}</code>", h(r.employee_id), f"{h(r.connector)}: {h(r.grant)}",
             badge(r.state, STATE_BADGE.get(r.state, "")) + (f" <small>{len(r.votes)}/{r.required}</small>"
                                                             if r.state == "pending" else ""),
             h(when(r.expires_at)), _removal(r)] for r in recent]
    return ('<section class="card" id="access-beyond-rules"><h2>Access beyond the rules</h2>'
            + table(["Request", "For", "Entitlement", "State", "Until", "Removal"], rows,
                    empty="No requested or break-glass access.")
            + '<p><a href="/access">Requests and approvals</a></p></section>')


def _buttons(r: AccessRequest, w: acc.Who, rt: Runtime, csrf: str) -> str:
    path = f"/access/{quote(r.id, safe='')}"
    out = []
    if r.state == "pending" and acc.may_decide(rt, r, w):
        if all(v.approver_key != w.key for v in r.votes):  # no second Approve for whoever approved it
            out.append(f'<form method="post" action="{h(path)}/approve" class="inline">{csrf_input(csrf)}'
                       f'<button type="submit" id="approve-{h(r.id)}">Approve</button></form>')
        out.append(f'<form method="post" action="{h(path)}/deny" class="inline">{csrf_input(csrf)}'
                   f'<button type="submit" class="danger" id="deny-{h(r.id)}">Deny</button></form>')
    if r.state == "active":
        out.append(f'<form method="post" action="{h(path)}/revoke" class="inline">{csrf_input(csrf)}'
                   f'<button type="submit" class="danger" id="revoke-{h(r.id)}">Revoke</button></form>')
    return "".join(out)


def _list(rt: Runtime, w: acc.Who, csrf: str) -> str:
    shown = visible(rt, w, rt.store.access.find(limit=200))
    rows = []
    for r in shown:
        try:
            buttons = _buttons(r, w, rt, csrf)
        except BadRequest:  # the person left HR's export meanwhile
            buttons = ""
        rows.append([f"<code>{h(r.id)}</code>", h(r.employee_id), f"{h(r.connector)}: {h(r.grant)}", h(r.reason),
                     badge(r.state, STATE_BADGE.get(r.state, "")) + f" <small>{len(r.votes)}/{r.required}</small>",
                     h(r.requester or "—"), _approvers(r), h(when(r.expires_at)), buttons])
    return table(["Request", "For", "Entitlement", "Reason", "State", "Requested by", "Approved by", "Until", ""],
                 rows, cls="access-requests", empty="No access requests you may see.")


def _form(rt: Runtime, w: acc.Who, csrf: str) -> str:
    options = "".join(f'<option value="{h(c)}">{h(c)}</option>' for c in sorted(rt.config.connectors))
    return ('<section class="card" id="request-access"><h2>Request access</h2>'
            f'<form method="post" action="/access/request">{csrf_input(csrf)}'
            f'<label>Employee id <input name="employee_id" value="{h(w.employee_id or "")}" required '
            'maxlength="128"></label>'
            f'<label>App <select name="connector">{options}</select></label>'
            '<label>Entitlement <input name="grant" required maxlength="256" placeholder="group:Prod Admins">'
            '</label><label>Reason <input name="reason" required maxlength="500"></label>'
            '<label>For <input name="duration" maxlength="32" placeholder="8h, 7d (default: the maximum)">'
            '</label><button type="submit" id="request-submit">Request</button></form></section>')


async def access_page(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    w = who_of(who)
    flash = request.query.get("done", "")
    body_parts = await asyncio.to_thread(lambda: (_form(ctx.rt, w, csrf), _list(ctx.rt, w, csrf)))
    body = ((f'<p class="flash" id="flash">{h(flash)}</p>' if flash else "")
            + body_parts[0]
            + f'<section class="card" id="access-requests"><h2>Access requests</h2>{body_parts[1]}</section>')
    return page("Access", body, now=ctx.rt.clock(), csrf=csrf, active="access")


def _refusal(ctx: Any, csrf: str, title: str, message: str, status: int) -> web.Response:
    return message_page(title, message, now=ctx.rt.clock(), csrf=csrf, status=status, back="/access")


async def request_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    try:
        duration = parse_duration(form["duration"]) if form.get("duration", "").strip() else None
    except (ValueError, OverflowError) as e:
        return _refusal(ctx, csrf, "Not requested", f"duration: {e}", 400)
    try:
        req = await asyncio.to_thread(acc.request, ctx.rt, who_of(who), form.get("employee_id", "").strip(),
                                      form.get("connector", "").strip(), form.get("grant", ""),
                                      reason=form.get("reason", ""), duration=duration)
    except acc.Refused as e:
        return _refusal(ctx, csrf, "Not requested", e.message, 404 if e.not_found else 403)
    except BadRequest as e:
        return _refusal(ctx, csrf, "Not requested", str(e), 400)
    raise web.HTTPSeeOther(location="/access?done=" + quote(f"requested {req.id}", safe=""))


async def _decide_form(request: web.Request, who: Principal, form: dict[str, str], what: str) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    rid = request.match_info["request_id"]
    if not valid_id(rid):
        return _refusal(ctx, csrf, "Not found", "No such access request.", 404)
    w = who_of(who)
    fn = {"approve": acc.approve, "deny": acc.deny, "revoke": acc.revoke}[what]
    try:
        d = await asyncio.to_thread(fn, ctx.rt, rid, w)
    except acc.Refused as e:
        return _refusal(ctx, csrf, "Not done", e.message, 404 if e.not_found else 403)
    except BadRequest as e:
        return _refusal(ctx, csrf, "Not done", str(e), 400)
    if d.plan_ids:
        ctx.wake(*d.plan_ids)
    raise web.HTTPSeeOther(location="/access?done=" + quote(d.message, safe=""))


async def approve_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    return await _decide_form(request, who, form, "approve")


async def deny_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    return await _decide_form(request, who, form, "deny")


async def revoke_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    return await _decide_form(request, who, form, "revoke")


__all__ = ["access_page", "approve_form", "deny_form", "person_section", "request_form", "revoke_form",
           "status_section"]
