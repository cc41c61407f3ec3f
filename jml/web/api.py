"""The JSON API (/api/v1/…) and the forms that share its actions."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jml.status import snapshot
from jml.web import actions, data, html
from jml.web.auth import Principal
from jml.web.state import BadInput, json_error, json_ok, read_json, state, text_field, valid_id

OFFBOARD_FIELDS = {"employee_id", "reason", "at", "undo"}
MAX_EMPLOYEE_ID = 128
MAX_REASON = 500


async def status(request: web.Request, who: Principal) -> web.StreamResponse:
    doc = await asyncio.to_thread(snapshot, state(request).ctx.rt)
    return json_ok(doc)


def _offboard_args(doc: dict[str, Any]) -> tuple[str, str, Any, bool]:
    unknown = sorted(set(doc) - OFFBOARD_FIELDS)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} (expected employee_id, reason, at, undo)")
    eid = text_field(doc.get("employee_id"), "employee_id", max_len=MAX_EMPLOYEE_ID)
    reason = text_field(doc.get("reason"), "reason", max_len=MAX_REASON, multiline=True)
    at = None
    if doc.get("at") is not None:
        try:
            at = actions.parse_at(doc["at"])
        except ValueError as e:
            raise BadInput(str(e)) from None
    undo = doc.get("undo", False)
    if not isinstance(undo, bool):
        raise BadInput("`undo` must be true or false")
    return eid, reason, at, undo


async def offboard(request: web.Request, who: Principal) -> web.StreamResponse:
    eid, reason, at, undo = _offboard_args(await read_json(request))
    ctx = state(request).ctx
    try:
        result = await actions.offboard(ctx, eid, reason=reason, at=at, actor=who.actor, undo=undo,
                                        who=who.approver)
    except actions.ActionError as e:
        return json_error(e.status, e.message)
    result["progress"] = f"/api/v1/people/{quote(eid, safe='')}/progress"
    return json_ok(result, status=202)


async def approve(request: web.Request, who: Principal) -> web.StreamResponse:
    plan_id = request.match_info["plan_id"]
    if not valid_id(plan_id):
        return json_error(404, "no such plan")
    ctx = state(request).ctx
    try:
        decision = await asyncio.to_thread(actions.approve, ctx, plan_id, who.approver)
    except actions.ActionError as e:
        return json_error(e.status, e.message)
    if not decision.done:
        return json_ok({"plan_id": plan_id, "state": "waiting", "approvals": decision.votes,
                        "required": decision.required, "message": decision.message}, status=202)
    return json_ok({"plan_id": plan_id, "state": "queued", "approvals": decision.votes,
                    "required": decision.required})


async def discard(request: web.Request, who: Principal) -> web.StreamResponse:
    plan_id = request.match_info["plan_id"]
    if not valid_id(plan_id):
        return json_error(404, "no such plan")
    try:
        await asyncio.to_thread(actions.discard, state(request).ctx, plan_id, who.approver)
    except actions.ActionError as e:
        return json_error(e.status, e.message)
    return json_ok({"plan_id": plan_id, "state": "discarded"})


async def retry(request: web.Request, who: Principal) -> web.StreamResponse:
    doc = await read_json(request)
    unknown = sorted(set(doc) - {"operation_id", "all"})
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} (expected operation_id or all)")
    op_id = doc.get("operation_id")
    everything = doc.get("all", False)
    if not isinstance(everything, bool):
        raise BadInput("`all` must be true or false")
    if op_id is not None and (isinstance(op_id, bool) or not isinstance(op_id, int) or not 0 < op_id < 2**62):
        raise BadInput("`operation_id` must be a positive integer")
    if (op_id is None) == (not everything):
        raise BadInput("give `operation_id` or `all: true`")
    n = await asyncio.to_thread(actions.retry, state(request).ctx, op_id, who.actor)
    return json_ok({"requeued": n})


async def pause(request: web.Request, who: Principal) -> web.StreamResponse:
    return await _pause(request, who, True)


async def resume(request: web.Request, who: Principal) -> web.StreamResponse:
    return await _pause(request, who, False)


async def _pause(request: web.Request, who: Principal, paused: bool) -> web.StreamResponse:
    name = request.match_info["connector"]
    if not valid_id(name):
        return json_error(404, "no such connector")
    try:
        now_paused = await asyncio.to_thread(actions.pause, state(request).ctx, name, paused, who.actor)
    except actions.ActionError as e:
        return json_error(e.status, e.message)
    return json_ok({"connector": name, "paused": paused, "paused_connectors": now_paused})


def query_time(request: web.Request, name: str) -> dt.datetime | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return actions.parse_at(value if "T" in value or " " in value else value + "T00:00:00Z")
    except ValueError as e:
        raise BadInput(str(e).replace("`at`", f"`{name}`")) from None


async def audit_export(request: web.Request, who: Principal) -> web.StreamResponse:
    """The audit trail as JSON lines, then its head (as `jml audit export`)."""
    since = query_time(request, "since")
    rt = state(request).ctx.rt

    def lines() -> str:
        out = [json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str)
               for rec in rt.audit.records(since=since)]
        count, head = rt.audit.head()
        out.append(json.dumps({"head": {"count": count, "hash": head}}))
        return "\n".join(out) + "\n"

    text = await asyncio.to_thread(lines)
    await asyncio.to_thread(rt.audit.append, "audit_export", {"since": since.isoformat() if since else None},
                            now=rt.clock(), actor=who.actor)
    resp = web.Response(text=text, content_type="application/x-ndjson")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


async def access_report(request: web.Request, who: Principal) -> web.StreamResponse:
    """Who has what in every connector and which rule grants it (as `jml report access`)."""
    from jml import reports

    fmt = request.query.get("format", "json")
    if fmt not in ("csv", "json"):
        raise BadInput("`format` must be csv or json")
    since = query_time(request, "changes_since")
    rt = state(request).ctx.rt

    def render() -> str:
        buf = io.StringIO()
        reports.access(rt, buf, fmt=fmt, changes_since=since)
        return buf.getvalue()

    text = await asyncio.to_thread(render)
    await asyncio.to_thread(rt.audit.append, "access_report", {"format": fmt}, now=rt.clock(), actor=who.actor)
    resp = web.Response(text=text, content_type="text/csv" if fmt == "csv" else "application/json")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


async def progress(request: web.Request, who: Principal) -> web.StreamResponse:
    eid = request.match_info["employee_id"]
    if not valid_id(eid):
        return json_error(404, "no such person")
    rt = state(request).ctx.rt
    doc = await asyncio.to_thread(data.progress, rt, eid, rt.clock())
    if doc is None:
        return json_error(404, f"no person with employee id {eid!r}")
    return json_ok(doc)


async def approve_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    plan_id = request.match_info["plan_id"]
    if not valid_id(plan_id):
        return html.message_page("Not found", "No such plan.", now=ctx.rt.clock(), csrf=csrf, status=404)
    try:
        decision = await asyncio.to_thread(actions.approve, ctx, plan_id, who.approver)
    except actions.ActionError as e:
        return html.message_page("Not approved", e.message, now=ctx.rt.clock(), csrf=csrf, status=e.status)
    if not decision.done:
        raise web.HTTPSeeOther(location=f"/?waiting={quote(plan_id, safe='')}&votes={decision.votes}"
                                        f"&required={decision.required}")
    raise web.HTTPSeeOther(location="/?approved=" + quote(plan_id, safe=""))


async def discard_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    csrf = who.session.csrf if who.session else ""
    plan_id = request.match_info["plan_id"]
    if not valid_id(plan_id):
        return html.message_page("Not found", "No such plan.", now=ctx.rt.clock(), csrf=csrf, status=404)
    try:
        await asyncio.to_thread(actions.discard, ctx, plan_id, who.approver)
    except actions.ActionError as e:
        return html.message_page("Not discarded", e.message, now=ctx.rt.clock(), csrf=csrf, status=e.status)
    raise web.HTTPSeeOther(location="/?discarded=" + quote(plan_id, safe=""))


async def retry_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    raw = form.get("operation_id", "")
    op_id = int(raw) if raw.isdigit() and len(raw) < 18 else None
    if raw and op_id is None:
        return html.message_page("Bad request", "No such operation.", now=ctx.rt.clock(),
                                 csrf=who.session.csrf if who.session else "", status=400)
    n = await asyncio.to_thread(actions.retry, ctx, op_id, who.actor)
    raise web.HTTPSeeOther(location=f"/?retried={n}")


async def discard_operation_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    """Drop one dead letter from the page (operator): it will not be retried."""
    ctx = state(request).ctx
    raw = request.match_info["operation_id"]
    try:
        if not (raw.isdigit() and len(raw) < 18):
            raise actions.ActionError(404, "No such operation.")
        await asyncio.to_thread(actions.discard_operation, ctx, int(raw), who.actor)
    except actions.ActionError as e:
        return html.message_page("Not done", e.message, now=ctx.rt.clock(),
                                 csrf=who.session.csrf if who.session else "", status=e.status)
    raise web.HTTPSeeOther(location=f"/?dropped={raw}")


async def pause_form(request: web.Request, who: Principal, form: dict[str, str]) -> web.StreamResponse:
    ctx = state(request).ctx
    name = request.match_info["connector"]
    paused = request.path.endswith("/pause")
    try:
        if not valid_id(name):
            raise actions.ActionError(404, "no such connector")
        await asyncio.to_thread(actions.pause, ctx, name, paused, who.actor)
    except actions.ActionError as e:
        return html.message_page("Not done", e.message, now=ctx.rt.clock(),
                                 csrf=who.session.csrf if who.session else "", status=e.status)
    raise web.HTTPSeeOther(location="/#connectors")


async def audit_page(request: web.Request, who: Principal) -> web.StreamResponse:
    ctx = state(request).ctx
    body = ('<section class="card"><h1>Audit</h1>'
            '<p><a class="button" href="/api/v1/audit" download="jml-audit.jsonl">Download the audit trail '
            '(JSON lines, hash-chained)</a></p>'
            '<p><a class="button" href="/api/v1/reports/access?format=csv" download="jml-access.csv">'
            'Download the access report (CSV)</a></p>'
            '<p class="hint">Check an export with <code>jml audit verify FILE</code>.</p></section>')
    return html.page("Audit", body, now=ctx.rt.clock(), csrf=who.session.csrf if who.session else "",
                     active="audit")


async def openapi(request: web.Request) -> web.StreamResponse:
    from jml.web.openapi import document

    resp = web.json_response(document())
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.path.rsplit("/", 1)[-1]
    types = {"style.css": "text/css", "app.js": "text/javascript"}
    if name not in types:
        raise web.HTTPNotFound(text="not found")
    resp = web.Response(body=html.static(name), content_type=types[name], charset="utf-8")
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
