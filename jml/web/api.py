"""The JSON API (/api/v1/…) and the forms that share its actions."""

from __future__ import annotations

import asyncio
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
        result = await actions.offboard(ctx, eid, reason=reason, at=at, actor=who.actor, undo=undo)
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
        await asyncio.to_thread(actions.approve, ctx, plan_id, who.actor)
    except actions.ActionError as e:
        return json_error(e.status, e.message)
    return json_ok({"plan_id": plan_id, "state": "queued"})


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
        await asyncio.to_thread(actions.approve, ctx, plan_id, who.actor)
    except actions.ActionError as e:
        return html.message_page("Not approved", e.message, now=ctx.rt.clock(), csrf=csrf, status=e.status)
    raise web.HTTPSeeOther(location="/?approved=" + quote(plan_id, safe=""))


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
