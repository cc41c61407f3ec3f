"""The JSON API (/api/v1/…) and the forms that share its actions."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jml.errors import JMLError
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
    """Evidence for auditors (issue 17): the audit trail with its verify result, the access
    report and the monthly SLA report, each downloadable."""
    ctx = state(request).ctx
    rt = ctx.rt
    month = request.query.get("month", "")
    if month and not re.fullmatch(r"[0-9]{4}-[0-9]{2}", month):
        raise BadInput("`month` must be YYYY-MM")

    def gather() -> tuple[Any, tuple[int, str], str, list[dict[str, Any]]]:
        from jml import reports

        result = rt.audit.verify()
        m, rows = reports.sla_rows(rt, month or None)
        return result, rt.audit.head(), m, rows

    try:
        result, (count, head), month, rows = await asyncio.to_thread(gather)
    except JMLError as e:
        raise BadInput(str(e)) from None
    verdict = (html.badge(f"intact: {result.count} records", "ok") if result.ok
               else html.badge("BROKEN", "breach") + f' <span class="error">{html.h(result.problem)}</span>')
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("met", "breached", "pending", "cancelled"))
    table_rows = [[html.h(r["name"] or r["employee_id"]), html.h(r["employee_id"]), html.h(r["connector"]),
                   html.when(r["effective"]), html.when(r["verified"]) if r["verified"] else "—",
                   html.h(html.duration(r["seconds"]) if r["seconds"] is not None else "—"),
                   html.badge(r["result"], {"met": "ok", "breached": "breach", "pending": "warn"}.get(r["result"],
                                                                                                     "muted")),
                   html.h(r.get("cause") or "")] for r in rows]
    q = f"month={month}"
    body = ('<section class="card" id="evidence-audit"><h1>Evidence</h1><h2>Audit trail</h2>'
            f'<p>Hash chain check: {verdict}. Head <code>{html.h(head[:16])}…</code> after {count} records.</p>'
            '<p><a class="button" href="/api/v1/audit" download="jml-audit.jsonl">Download the audit trail '
            '(JSON lines, hash-chained)</a></p>'
            '<p class="hint">Check a download independently with <code>jml audit verify FILE</code>.</p></section>'
            '<section class="card" id="evidence-access"><h2>Access report</h2>'
            '<p>Who has what in every connector and which rule grants it.</p>'
            '<p><a class="button" href="/api/v1/reports/access?format=csv" download="jml-access.csv">'
            'Download the access report (CSV)</a> '
            '<a class="button" href="/api/v1/reports/access?format=json" download="jml-access.json">'
            '(JSON)</a></p></section>'
            f'<section class="card" id="evidence-sla"><h2>Deprovision SLA, {html.h(month)}</h2>'
            '<form method="get" action="/audit" class="search"><input type="month" name="month" '
            f'value="{html.h(month)}" aria-label="month"><button type="submit">Show</button></form>'
            f'<p>{len({r["employee_id"] for r in rows})} leaver(s), {len(rows)} deprovision(s): {html.h(summary)}'
            f' (times in {html.h(rt.config.display_timezone.key)}).</p>'
            f'<p><a class="button" href="/api/v1/reports/sla?{q}&amp;format=csv" download="jml-sla-{html.h(month)}'
            '.csv">Download the SLA report (CSV)</a> '
            f'<a class="button" href="/api/v1/reports/sla?{q}&amp;format=json" download="jml-sla-{html.h(month)}'
            '.json">(JSON)</a></p>'
            + html.table(["Person", "Employee ID", "Connector", "Effective termination", "Verified", "Took",
                          "Result", "Cause of a breach"], table_rows, cls="sla-report",
                         empty="No leavers this month.")
            + "</section>")
    return html.page("Evidence", body, now=rt.clock(), csrf=who.session.csrf if who.session else "",
                     active="audit")


async def sla_report(request: web.Request, who: Principal) -> web.StreamResponse:
    """A month's deprovisions per leaver and connector (as `jml report sla`), CSV or JSON."""
    from jml import reports

    month = request.query.get("month", "")
    if month and not re.fullmatch(r"[0-9]{4}-[0-9]{2}", month):
        raise BadInput("`month` must be YYYY-MM")
    fmt = request.query.get("format", "json")
    if fmt not in ("csv", "json"):
        raise BadInput("`format` must be csv or json")
    rt = state(request).ctx.rt
    try:
        month, rows = await asyncio.to_thread(reports.sla_rows, rt, month or None)
    except JMLError as e:
        raise BadInput(str(e)) from None
    await asyncio.to_thread(rt.audit.append, "sla_report", {"format": fmt, "month": month}, now=rt.clock(),
                            actor=who.actor)
    if fmt == "json":
        resp = web.json_response({"month": month, "timezone": rt.config.display_timezone.key, "deprovisions": rows})
    else:
        buf = io.StringIO()
        fields = ["employee_id", "name", "connector", "effective", "deadline", "verified", "seconds", "result",
                  "cause"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\r\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        resp = web.Response(text=buf.getvalue(), content_type="text/csv")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


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
