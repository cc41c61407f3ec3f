"""Revert on the page and the API (issue 18): `GET /plans/{id}/revert` previews (nothing changes
until the button under the preview is pressed), `POST /plans/{id}/revert` (form) and
`POST /api/v1/plans/{id}/revert` (JSON; a preview unless `{"dry_run": false}`) plan it.

The right is `operate`: reverting is an operator's correction; the revert then goes through the
guard like any plan, and a held one is approved by an approver other than who asked for it
(the asker is recorded as its requester).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jml import approvals
from jml.context import ServiceContext
from jml.revert import RevertOutcome, RevertRefused, revert
from jml.web.auth import Principal
from jml.web.html import csrf_input, h, message_page, page, table, when
from jml.web.state import BadInput, can, json_error, json_ok, read_json, state, valid_id

FIELDS = {"dry_run"}
RECENT = 10


def _run(ctx: ServiceContext, plan_id: str, who: Principal, dry_run: bool) -> RevertOutcome:
    out = revert(ctx.rt, plan_id, actor=who.actor, dry_run=dry_run)
    if not dry_run and out.plan_id is not None:
        # Four eyes: whoever asked cannot approve the revert if the guard holds it.
        approvals.record_requester(ctx.rt, [out.plan_id], who.approver)
        if not out.held and out.operations:
            ctx.wake()
    return out


def _state(out: RevertOutcome) -> str:
    if out.dry_run:
        return "preview"
    if out.held:
        return "held"
    return "queued" if out.operations else "done"


async def revert_api(request: web.Request, who: Principal) -> web.StreamResponse:
    plan_id = request.match_info["plan_id"]
    if not valid_id(plan_id):
        return json_error(404, "no such plan")
    doc: dict[str, Any] = await read_json(request) if (await request.read()).strip() else {}
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} (expected dry_run)")
    dry_run = doc.get("dry_run", True)
    if not isinstance(dry_run, bool):
        raise BadInput("`dry_run` must be true or false")
    try:
        out = await asyncio.to_thread(_run, state(request).ctx, plan_id, who, dry_run)
    except RevertRefused as e:
        return json_error(404 if e.not_found else 409, e.message)
    body = {**out.to_json(), "state": _state(out)}
    return json_ok(body, status=200 if dry_run else 202)


def _preview_body(out: RevertOutcome, csrf: str) -> str:
    rows = [[h(o.connector), h(o.action.value), h(o.employee_id),
             h(o.detail.get("group") or o.detail.get("grant") or o.detail.get("username") or "")]
            for o in out.operations[:500]]
    refused = [[h(e), h(r)] for e, r in sorted(out.refused.items())]
    cannot = [[h(n.connector), h(n.employee_id), h(n.action), h(n.reason)] for n in out.cannot]
    partly = [[h(n.connector), h(n.employee_id), h(n.action), h(n.reason)] for n in out.partly]
    summary = ", ".join(f"{h(k)} {h(v)}" for k, v in out.summary().items()) or "no operations"
    held = (f'<p class="warn">The guard will hold it for approval: {h("; ".join(out.reasons))}</p>'
            if out.held else "")
    warnings = "".join(f'<p class="warn">{h(w)}</p>' for w in out.warnings)
    button = ""
    if can("operate"):
        button = (f'<form method="post" action="/plans/{h(out.reverts)}/revert" class="revert">{csrf_input(csrf)}'
                  f'<button type="submit" class="primary">Revert plan {h(out.reverts)}</button></form>')
    return (f'<section class="card" id="revert"><h1>Revert plan <code>{h(out.reverts)}</code></h1>'
            f'<p class="muted">Preview: nothing has changed yet. The plan came from {h(out.origin)}.</p>'
            f'<p class="summary">{summary}</p>{held}{warnings}'
            f'<h2>Operations</h2>{table(["Connector", "Action", "Person", "Target"], rows, empty="none")}'
            f'<h2>Refused (HR still has them as leavers)</h2>{table(["Person", "Why"], refused, empty="none")}'
            f'<h2>Cannot be restored</h2>{table(["Connector", "Person", "Was", "Why"], cannot, empty="none")}'
            f'<h2>Restored differently</h2>{table(["Connector", "Person", "Was", "How"], partly, empty="none")}'
            f'<p>Stored person state put back for: {h(", ".join(out.restored_people) or "nobody")}</p>'
            f'{button}</section>')


async def revert_page(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    plan_id = request.match_info["plan_id"]
    now = ctx.rt.clock()
    if not valid_id(plan_id):
        return message_page("Not found", "No such plan.", now=now, csrf=csrf, status=404)
    try:
        out = await asyncio.to_thread(_run, ctx, plan_id, who, True)
    except RevertRefused as e:
        return message_page("Cannot revert", e.message, now=now, csrf=csrf, status=404 if e.not_found else 409)
    return page(f"Revert {plan_id}", _preview_body(out, csrf), now=now, csrf=csrf, active="status")


async def revert_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    plan_id = request.match_info["plan_id"]
    now = ctx.rt.clock()
    if not valid_id(plan_id):
        return message_page("Not found", "No such plan.", now=now, csrf=csrf, status=404)
    try:
        out = await asyncio.to_thread(_run, ctx, plan_id, who, False)
    except RevertRefused as e:
        return message_page("Not reverted", e.message, now=now, csrf=csrf, status=404 if e.not_found else 409)
    what = {"held": "is held for approval by someone else", "queued": "is queued",
            "done": "had nothing to push"}[_state(out)]
    extra = f"; refused: {', '.join(sorted(out.refused))}" if out.refused else ""
    return message_page("Revert planned", f"Plan {out.plan_id} (revert of {plan_id}) {what}{extra}.", now=now,
                        csrf=csrf, status=200, back=f"/#plan-{quote(str(out.plan_id), safe='')}")


def recent_plans(ctx: ServiceContext) -> str:
    """The status page's "Recent plans": applied plans, each with a link to its revert preview (operators)."""
    plans = ctx.rt.outbox.plans(["queued", "done"], limit=RECENT)
    if not plans:
        return '<p class="empty">No plan applied yet.</p>'
    rows = []
    for p in plans:
        summary = ", ".join(f"{k} {v}" for k, v in sorted((p.summary or {}).items())) or "no operations"
        link = (f'<a href="/plans/{h(p.id)}/revert" class="button">Revert…</a>'
                if can("operate") and p.state == "done" else "")
        rows.append([f'<code id="plan-{h(p.id)}">{h(p.id)}</code>', h(p.origin), h(p.state), h(when(p.created_at)),
                     h(summary), link])
    return table(["Plan", "Origin", "State", "Created", "Operations", ""], rows, cls="plans")
