"""The access-request API: /api/v1/catalogue and /api/v1/access/… (jml/access.py does the work).

Every signed-in person reaches these routes; what they may do is the approval policy's decision
(request for yourself, your reports, or with the `request` right; approve as the manager, the
owner or with `approve`), answered 403 with its reason. A person sees the requests they made,
the ones for them, and the ones they may decide; `people`, `approve`, `audit` see all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from aiohttp import web

from jml import access as acc
from jml import catalogue
from jml.config import parse_duration
from jml.errors import BadRequest
from jml.store.access import STATES, AccessRequest
from jml.web.auth import Principal
from jml.web.state import BadInput, json_error, json_ok, read_json, state, text_field, valid_id

MAX_FIELD = 256
MAX_REASON = acc.MAX_REASON
REQUEST_FIELDS = {"employee_id", "connector", "grant", "reason", "duration"}
JIT_FIELDS = {"connector", "grant", "reason", "hours", "employee_id"}
SEE_ALL = frozenset({"people", "approve", "audit"})


def who_of(p: Principal) -> acc.Who:
    return acc.Who(p.key, p.actor, p.email, p.person, p.rights, p.roles)


def _fields(doc: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)} (expected {', '.join(sorted(allowed))})")


def _refused(e: acc.Refused) -> web.Response:
    return json_error(404 if e.not_found else 403, e.message)


async def get_catalogue(request: web.Request, who: Principal) -> web.StreamResponse:
    live = request.query.get("live", "") in ("1", "true", "yes")
    cat = await catalogue.build(state(request).ctx.rt, live=live)
    return json_ok(cat.to_dict())


def visible(rt: Any, who: acc.Who, reqs: list[AccessRequest]) -> list[AccessRequest]:
    """What this person may see of these requests."""
    if who.rights & SEE_ALL:
        return reqs
    out = []
    for r in reqs:
        if r.requested_by == who.key or (who.employee_id and r.employee_id == who.employee_id):
            out.append(r)
            continue
        try:
            if acc.may_decide(rt, r, who):
                out.append(r)
        except BadRequest:
            continue
    return out


async def list_requests(request: web.Request, who: Principal) -> web.StreamResponse:
    q = request.query
    states = [s for s in q.getall("state", []) if s]
    bad = sorted(set(states) - set(STATES))
    if bad:
        return json_error(400, f"state: unknown state(s) {', '.join(bad)} (use {', '.join(STATES)})")
    eid = q.get("employee_id")
    if eid is not None and not valid_id(eid):
        return json_error(400, "employee_id: not a valid id")
    rt = state(request).ctx.rt
    found = await asyncio.to_thread(rt.store.access.find, states=states or None, eids=[eid] if eid else None,
                                    limit=1000)
    shown = await asyncio.to_thread(visible, rt, who_of(who), found)
    return json_ok({"requests": [r.to_dict() for r in shown]})


def _duration(value: Any, name: str) -> dt.timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadInput(f"`{name}` must be a duration like \"8h\" or \"7d\", or a number of seconds")
    try:
        return parse_duration(value)
    except (ValueError, OverflowError) as e:
        raise BadInput(f"`{name}`: {e}") from None


async def create_request(request: web.Request, who: Principal) -> web.StreamResponse:
    doc = await read_json(request)
    _fields(doc, REQUEST_FIELDS)
    eid = text_field(doc.get("employee_id"), "employee_id", max_len=128)
    connector = text_field(doc.get("connector"), "connector", max_len=MAX_FIELD)
    grant = text_field(doc.get("grant"), "grant", max_len=MAX_FIELD)
    reason = text_field(doc.get("reason"), "reason", max_len=MAX_REASON)
    duration = _duration(doc.get("duration"), "duration")
    rt = state(request).ctx.rt
    try:
        req = await asyncio.to_thread(acc.request, rt, who_of(who), eid, connector, grant, reason=reason,
                                      duration=duration)
    except acc.Refused as e:
        return _refused(e)
    except BadRequest as e:
        return json_error(400, str(e))
    return json_ok(req.to_dict(), status=201)


async def _decide(request: web.Request, who: Principal, what: str) -> web.StreamResponse:
    rid = request.match_info["request_id"]
    if not valid_id(rid):
        return json_error(404, "no such access request")
    reason = ""
    if what != "approve" and (await request.read()).strip():
        doc = await read_json(request)
        _fields(doc, {"reason"})
        reason = text_field(doc.get("reason"), "reason", max_len=MAX_REASON, required=False)
    ctx = state(request).ctx
    w = who_of(who)
    try:
        if what == "approve":
            d = await asyncio.to_thread(acc.approve, ctx.rt, rid, w)
        elif what == "deny":
            d = await asyncio.to_thread(acc.deny, ctx.rt, rid, w, reason)
        else:
            d = await asyncio.to_thread(acc.revoke, ctx.rt, rid, w, reason)
    except acc.Refused as e:
        return _refused(e)
    except BadRequest as e:
        return json_error(400, str(e))
    if d.plan_ids:
        ctx.wake(*d.plan_ids)
    body = {**d.request.to_dict(), "message": d.message, "plan_ids": d.plan_ids}
    return json_ok(body, status=202 if what == "approve" and d.request.state == "pending" else 200)


async def approve(request: web.Request, who: Principal) -> web.StreamResponse:
    return await _decide(request, who, "approve")


async def deny(request: web.Request, who: Principal) -> web.StreamResponse:
    return await _decide(request, who, "deny")


async def revoke(request: web.Request, who: Principal) -> web.StreamResponse:
    return await _decide(request, who, "revoke")


async def jit(request: web.Request, who: Principal) -> web.StreamResponse:
    doc = await read_json(request)
    _fields(doc, JIT_FIELDS)
    connector = text_field(doc.get("connector"), "connector", max_len=MAX_FIELD)
    grant = text_field(doc.get("grant"), "grant", max_len=MAX_FIELD)
    reason = text_field(doc.get("reason"), "reason", max_len=MAX_REASON)
    eid = text_field(doc.get("employee_id"), "employee_id", max_len=128, required=False) or None
    hours = doc.get("hours")
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 366:
        raise BadInput("`hours` must be a number of hours greater than 0")
    ctx = state(request).ctx
    try:
        d = await asyncio.to_thread(acc.jit, ctx.rt, who_of(who), connector, grant,
                                    duration=dt.timedelta(hours=float(hours)), reason=reason, employee_id=eid)
    except acc.Refused as e:
        return _refused(e)
    except BadRequest as e:
        return json_error(400, str(e))
    if d.plan_ids:
        ctx.wake(*d.plan_ids)
    return json_ok({**d.request.to_dict(), "message": d.message, "plan_ids": d.plan_ids}, status=201)
