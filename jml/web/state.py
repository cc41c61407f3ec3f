"""The web layer's state on the aiohttp app, and the wrappers that sign requests in.

`page` (GET, HTML): no credentials → 303 to /login.  `form` (POST, HTML): the same, plus the
Origin check and, for a browser session, the CSRF field.  `api` (JSON): no credentials → 401;
a cookie-authenticated POST needs the Origin check and the `X-CSRF-Token` header.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from jml.context import ServiceContext
from jml.web import html
from jml.web.auth import CSRF_FIELD, CSRF_HEADER, Gate, Principal, csrf_ok, login_redirect, same_origin


@dataclass
class WebState:
    ctx: ServiceContext
    gate: Gate


WEB = web.AppKey("jml_web", WebState)


class BadInput(Exception):
    """Malformed input: answered 400 with this message."""


def state(request: web.Request) -> WebState:
    return request.app[WEB]


PageHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
FormHandler = Callable[[web.Request, Principal, dict[str, str]], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    resp = web.json_response({"error": message, **extra}, status=status)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="jml"'
    return resp


def json_ok(doc: Any, status: int = 200) -> web.Response:
    resp = web.Response(text=json.dumps(doc, ensure_ascii=False, default=str), status=status,
                        content_type="application/json")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def page(handler: PageHandler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        who = state(request).gate.principal(request)
        if who is None:
            raise login_redirect(request)
        return await handler(request, who)

    return wrapped


def form(handler: FormHandler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        st = state(request)
        now = st.ctx.rt.clock()
        who = st.gate.principal(request)
        if who is None:
            raise login_redirect(request)
        csrf = who.session.csrf if who.session else ""
        if not same_origin(request):
            return html.message_page("Refused", "This form was sent from another site.", now=now, csrf=csrf,
                                     status=403)
        try:
            data = await read_form(request)
        except BadInput as e:
            return html.message_page("Bad request", str(e), now=now, csrf=csrf, status=400)
        if who.session is not None and not csrf_ok(who.session, data.get(CSRF_FIELD)):
            return html.message_page("Refused", "This form has expired or did not come from jml: reload the page "
                                     "and try again.", now=now, csrf=csrf, status=403)
        return await handler(request, who, data)

    return wrapped


def api(handler: PageHandler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        who = state(request).gate.principal(request)
        if who is None:
            return json_error(401, "sign in: send `Authorization: Bearer <admin token>`")
        if request.method not in ("GET", "HEAD") and who.session is not None:
            if not same_origin(request):
                return json_error(403, "cross-site request refused (Origin does not match this host)")
            if not csrf_ok(who.session, request.headers.get(CSRF_HEADER)):
                return json_error(403, f"a browser session must send the {CSRF_HEADER} header")
        try:
            return await handler(request, who)
        except BadInput as e:
            return json_error(400, str(e))

    return wrapped


async def read_form(request: web.Request) -> dict[str, str]:
    try:
        raw: MultiDictProxy[Any] = await request.post()
    except web.HTTPException:
        raise
    except Exception as e:  # multipart parser errors come in many types; all mean a malformed body
        raise BadInput(f"the form could not be read ({type(e).__name__})") from None
    out: dict[str, str] = {}
    for k, v in raw.items():
        if isinstance(v, str) and k not in out:
            out[k] = v
    return out


async def read_json(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body.strip():
        raise BadInput("the request body must be a JSON object")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise BadInput("the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadInput("the request body must be a JSON object")
    return doc


_CONTROL = {chr(c) for c in range(0x20)} - {"\t", "\n", "\r"} | {"\x7f"}


def text_field(value: Any, name: str, *, max_len: int, required: bool = True, multiline: bool = False) -> str:
    """A text input: a string, not blank (if required), at most `max_len`, no control characters."""
    if value is None:
        if required:
            raise BadInput(f"`{name}` is required")
        return ""
    if not isinstance(value, str):
        raise BadInput(f"`{name}` must be a string")
    if len(value) > max_len:
        raise BadInput(f"`{name}` is longer than {max_len} characters")
    bad = _CONTROL if multiline else _CONTROL | {"\t", "\n", "\r"}
    if any(c in bad for c in value):
        raise BadInput(f"`{name}` contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"`{name}` is not valid Unicode text") from None
    text: str = value.strip()
    if required and not text:
        raise BadInput(f"`{name}` must not be blank")
    return text


def valid_id(value: str, max_len: int = 128) -> bool:
    """An employee or plan id from a URL: short, printable, valid text."""
    try:
        text_field(value, "id", max_len=max_len)
    except BadInput:
        return False
    return value == value.strip()
