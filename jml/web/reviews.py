"""Access review campaigns on the web (issue 18): the reviewer's page and the JSON API.

A reviewer (right `review`) sees the items assigned to them and decides keep or revoke; an
admin sees and may decide every item; anyone with `audit` sees every item and downloads the
evidence. Nobody decides on their own access (jml/review_items.refusal).
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from aiohttp import web

from jml import reviews
from jml.errors import JMLError
from jml.web.auth import Principal
from jml.web.html import badge, csrf_input, h, message_page, page, table, when
from jml.web.roles import AUDIT
from jml.web.state import BadInput, json_error, json_ok, read_json, state, text_field

MAX_REASON = 500
MAX_ITEMS = 5000
DECIDE_FIELDS = {"items", "decision", "reason"}
START_FIELDS = {"by", "connector", "due", "name"}
_STATE_BADGE = {"open": "warn", "kept": "ok", "revoking": "warn", "revoked": "muted", "revoke_failed": "breach"}


def decider(who: Principal) -> reviews.Decider:
    return reviews.Decider(who.actor, who.email, who.person, admin="admin" in who.roles)


def _sees_all(who: Principal) -> bool:
    return "admin" in who.roles or who.can(AUDIT)


def _campaign_id(request: web.Request) -> int:
    raw = request.match_info["campaign_id"]
    if not raw.isdigit() or len(raw) > 9:
        raise BadInput("`campaign_id` must be a campaign's number")
    return int(raw)


def _items(request: web.Request, who: Principal, cid: int) -> tuple[Any, list[Any], dict[str, tuple[int, int]]]:
    rt = state(request).ctx.rt
    c = rt.store.reviews.campaign(cid)
    if c is None:
        return None, [], {}
    mine = None if _sees_all(who) else (who.email or "\0")  # no e-mail: nothing is assigned to them
    return c, rt.store.reviews.items(cid, reviewer=mine), reviews.progress_of(rt, cid)


# ---- API ------------------------------------------------------------------------------
async def list_api(request: web.Request, who: Principal) -> web.StreamResponse:
    rt = state(request).ctx.rt
    campaigns = await asyncio.to_thread(rt.store.reviews.campaigns)
    return json_ok({"campaigns": [reviews.campaign_dict(c) for c in campaigns]})


async def show_api(request: web.Request, who: Principal) -> web.StreamResponse:
    cid = _campaign_id(request)
    c, items, prog = await asyncio.to_thread(_items, request, who, cid)
    if c is None:
        return json_error(404, f"no review campaign {cid}")
    people = dict(await asyncio.to_thread(state(request).ctx.rt.store.people_summary))
    if not _sees_all(who):
        prog = {r: p for r, p in prog.items() if r == who.email.casefold()}
    return json_ok({"campaign": reviews.campaign_dict(c), "items": [reviews.item_dict(it, people) for it in items],
                    "progress": {r: {"decided": d, "total": t} for r, (d, t) in prog.items()}})


def _decide_args(doc: dict[str, Any]) -> tuple[list[int], str, str]:
    unknown = sorted(set(doc) - DECIDE_FIELDS)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} (expected items, decision, reason)")
    items = doc.get("items")
    if not isinstance(items, list) or not items or len(items) > MAX_ITEMS or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in items):
        raise BadInput(f"`items` must be a list of 1 to {MAX_ITEMS} item ids (positive integers)")
    decision = doc.get("decision")
    if decision not in ("keep", "revoke"):
        raise BadInput("`decision` must be \"keep\" or \"revoke\"")
    reason = text_field(doc.get("reason", ""), "reason", max_len=MAX_REASON, required=False, multiline=True)
    return items, str(decision), reason


async def _decide(request: web.Request, who: Principal, cid: int, items: list[int], decision: str,
                  reason: str) -> reviews.Decided:
    ctx = state(request).ctx
    out = await asyncio.to_thread(reviews.decide, ctx.rt, cid, items, decision, decider(who), reason=reason,
                                  now=ctx.rt.clock())
    if out.plan_id is not None and not out.held:
        ctx.wake(out.plan_id)
        # Read the revocations back once the workers have pushed them.
        ctx.engine.spawn(_verify_later(ctx.rt, out.plan_id, cid))
    return out


async def _verify_later(rt: Any, plan_id: str, cid: int) -> None:
    await reviews.verify_when_done(rt, plan_id, cid)


async def decide_api(request: web.Request, who: Principal) -> web.StreamResponse:
    cid = _campaign_id(request)
    items, decision, reason = _decide_args(await read_json(request))
    try:
        out = await _decide(request, who, cid, items, decision, reason)
    except JMLError as e:
        return json_error(404 if "no review campaign" in str(e) else 400, str(e))
    doc = {"decided": out.decided, "refused": {str(k): v for k, v in out.refused.items()}, "plan_id": out.plan_id,
           "held": out.held}
    if not out.decided:
        return json_error(403, "no item decided: " + "; ".join(sorted(set(out.refused.values()))), **doc)
    return json_ok(doc, status=202 if out.plan_id else 200)


async def start_api(request: web.Request, who: Principal) -> web.StreamResponse:
    doc = await read_json(request)
    unknown = sorted(set(doc) - START_FIELDS)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} (expected by, connector, due, name)")
    by = doc.get("by")
    if by not in ("app", "manager"):
        raise BadInput("`by` must be \"app\" or \"manager\"")
    connector = text_field(doc.get("connector"), "connector", max_len=100, required=False) or None
    name = text_field(doc.get("name"), "name", max_len=200, required=False) or None
    due = None
    if doc.get("due") is not None:
        from jml.config import parse_duration

        try:
            due = parse_duration(text_field(doc.get("due"), "due", max_len=20))
        except ValueError as e:
            raise BadInput(f"`due`: {e}") from None
    rt = state(request).ctx.rt
    try:
        c = await asyncio.to_thread(reviews.start, rt, by=str(by), connector=connector, due=due, name=name,
                                    created_by=who.actor, now=rt.clock())
    except JMLError as e:
        raise BadInput(str(e).removeprefix("--")) from None
    return json_ok({"campaign": reviews.campaign_dict(c)}, status=201)


async def export_api(request: web.Request, who: Principal) -> web.StreamResponse:
    cid = _campaign_id(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadInput("`format` must be json or csv")
    rt = state(request).ctx.rt
    if rt.store.reviews.campaign(cid) is None:
        return json_error(404, f"no review campaign {cid}")
    buf = io.StringIO()
    await asyncio.to_thread(reviews.export, rt, cid, buf, fmt=fmt)
    resp = web.Response(text=buf.getvalue(), content_type="text/csv" if fmt == "csv" else "application/json",
                        charset="utf-8")
    resp.headers["Content-Disposition"] = f'attachment; filename="review-{cid}.{fmt}"'
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# ---- pages ----------------------------------------------------------------------------
async def list_page(request: web.Request, who: Principal) -> web.StreamResponse:
    rt = state(request).ctx.rt
    csrf = who.session.csrf if who.session else ""
    campaigns = await asyncio.to_thread(rt.store.reviews.campaigns)
    rows = []
    for c in reversed(campaigns):
        prog = await asyncio.to_thread(reviews.progress_of, rt, c.id)
        mine = prog.get(who.email.casefold()) if who.email else None
        yours = f"{mine[0]}/{mine[1]}" if mine else "—"
        rows.append([f'<a href="/reviews/{c.id}">{h(c.name)}</a>', h(c.by), h(c.connector or "all"),
                     f"{c.decided}/{c.total}", yours, when(c.due_at)])
    body = ('<section class="card"><h1>Access reviews</h1>'
            '<p class="muted">Each reviewer keeps or revokes what people hold; a revocation is pushed to the app '
            'at once and read back. Nobody decides on their own access.</p>'
            + table(["campaign", "by", "connector", "decided", "yours", "due"], rows, empty="no review campaigns")
            + "</section>")
    return page("Access reviews", body, now=rt.clock(), csrf=csrf, active="reviews")


async def show_page(request: web.Request, who: Principal) -> web.StreamResponse:
    rt = state(request).ctx.rt
    csrf = who.session.csrf if who.session else ""
    now = rt.clock()
    try:
        cid = _campaign_id(request)
    except BadInput as e:
        return message_page("Bad request", str(e), now=now, csrf=csrf, status=400, back="/reviews")
    c, items, prog = await asyncio.to_thread(_items, request, who, cid)
    if c is None:
        return message_page("Not found", f"No review campaign {cid}.", now=now, csrf=csrf, status=404,
                            back="/reviews")
    people = dict(await asyncio.to_thread(rt.store.people_summary))
    me = decider(who)
    shown_prog = prog if _sees_all(who) else {r: p for r, p in prog.items() if r == who.email.casefold()}
    prog_rows = [[h(r), f"{d}/{t}", badge("done", "ok") if d == t else badge("open", "warn")]
                 for r, (d, t) in shown_prog.items()]
    rows = []
    for it in items[:2000]:
        who_row = people.get(it.holding.employee_id)
        name = (who_row.name if who_row else "") or it.holding.employee_id or "(no HR person)"
        subject_email = who_row.email if who_row else ""
        why = it.why.text() + ("" if it.holding.held_by == "jml" else " · found in the app")
        action = ""
        if it.decision is None:
            from jml.review_items import refusal

            refused = refusal(subject_id=it.holding.employee_id, subject_email=subject_email, reviewer=it.reviewer,
                              who_person=me.person, who_email=me.email, admin=me.admin, decided=False)
            if refused is None:
                action = (f'<form method="post" action="/reviews/{c.id}/decide" class="inline">{csrf_input(csrf)}'
                          f'<input type="hidden" name="item" value="{it.id}">'
                          '<input type="text" name="reason" placeholder="reason" maxlength="500">'
                          '<button type="submit" name="decision" value="keep">Keep</button>'
                          '<button type="submit" name="decision" value="revoke" class="danger">Revoke</button>'
                          '</form>')
            else:
                action = f'<span class="muted small">{h(refused)}</span>'
        else:
            action = h(f"{it.decision} by {it.decided_by} {when(it.decided_at)}")
        rows.append([h(name), h(it.holding.connector), h(it.holding.entitlement), h(why),
                     when(it.holding.last_change) if it.holding.last_change else "never by jml", h(it.reviewer),
                     badge(it.state, _STATE_BADGE.get(it.state, "muted")), action])
    more = f'<p class="muted">showing the first 2,000 of {len(items)} items</p>' if len(items) > 2000 else ""
    export = (f'<p><a href="/api/v1/reviews/{c.id}/export?format=csv">Evidence (CSV)</a> · '
              f'<a href="/api/v1/reviews/{c.id}/export?format=json">Evidence (JSON)</a></p>'
              if who.can(AUDIT) else "")
    body = (f'<section class="card"><h1>{h(c.name)}</h1>'
            f'<p class="muted">by {h(c.by)} · {c.decided}/{c.total} decided · due {when(c.due_at)}</p>{export}'
            + "<h2>Progress</h2>" + table(["reviewer", "decided", ""], prog_rows, empty="no items for you")
            + "<h2>Items</h2>" + more
            + table(["person", "app", "access", "why they have it", "last change", "reviewer", "state", ""], rows,
                    empty="no items assigned to you")
            + "</section>")
    return page(c.name, body, now=now, csrf=csrf, active="reviews")


async def decide_form(request: web.Request, who: Principal, data: dict[str, str]) -> web.StreamResponse:
    rt = state(request).ctx.rt
    csrf = who.session.csrf if who.session else ""
    now = rt.clock()
    try:
        cid = _campaign_id(request)
        raw = data.get("item", "")
        if not raw.isdigit() or len(raw) > 12:
            raise BadInput("`item` must be an item's number")
        decision = data.get("decision", "")
        if decision not in ("keep", "revoke"):
            raise BadInput("`decision` must be keep or revoke")
        reason = text_field(data.get("reason", ""), "reason", max_len=MAX_REASON, required=False, multiline=True)
        out = await _decide(request, who, cid, [int(raw)], decision, reason)
    except (BadInput, JMLError) as e:
        return message_page("Bad request", str(e), now=now, csrf=csrf, status=400, back="/reviews")
    if not out.decided:
        return message_page("Not allowed", "; ".join(out.refused.values()), now=now, csrf=csrf, status=403,
                            back=f"/reviews/{cid}")
    raise web.HTTPSeeOther(f"/reviews/{cid}")

