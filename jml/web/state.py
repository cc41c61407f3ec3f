"""The web layer's state on the aiohttp app, and the wrappers that sign requests in.

`page` (GET, HTML): no credentials → 303 to /login.  `form` (POST, HTML): the same, plus the
Origin check and, for a browser session, the CSRF field.  `api` (JSON): no credentials → 401;
a cookie-authenticated POST needs the Origin check and the `X-CSRF-Token` header.
Each wrapper names the right its route needs (jml.web.roles); a caller without it gets 403
(a plain page, or JSON), and so does a caller with no role at all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from jml.context import ServiceContext
from jml.web import html
from jml.web.auth import CSRF_FIELD, CSRF_HEADER, CURRENT, Gate, Principal, csrf_ok, login_redirect, same_origin
from jml.web.oidc import OidcClient
from jml.web.roles import VIEW


@dataclass
class WebState:
    ctx: ServiceContext
    gate: Gate
    oidc: OidcClient | None = None
    http: Any = field(default=None)  # aiohttp.ClientSession for the IdP, opened on first use


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


def can(right: str) -> bool:
    """Whether the current request's caller has `right` (pages show only what they may do)."""
    who = CURRENT.get()
    return who is not None and who.can(right)


def forbidden_page(request: web.Request, who: Principal) -> web.Response:
    csrf = who.session.csrf if who.session else ""
    return html.message_page("Not allowed", f"You are signed in as {who.label}; that role does not allow this "
                             "page or action. Ask an administrator for the role you need.",
                             now=state(request).ctx.rt.clock(), csrf=csrf, status=403)


def page(handler: PageHandler, right: str = VIEW) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        who = await state(request).gate.principal(request)
        if who is None:
            raise login_redirect(request)
        token = CURRENT.set(who)
        try:
            if not who.can(right):
                return forbidden_page(request, who)
            return await handler(request, who)
        finally:
            CURRENT.reset(token)

    return wrapped


def form(handler: FormHandler, right: str = VIEW) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        st = state(request)
        now = st.ctx.rt.clock()
        who = await st.gate.principal(request)
        if who is None:
            raise login_redirect(request)
        token = CURRENT.set(who)
        try:
            return await _form_checked(request, who, right, handler, now)
        finally:
            CURRENT.reset(token)

    return wrapped


async def _form_checked(request: web.Request, who: Principal, right: str, handler: FormHandler,
                        now: Any) -> web.StreamResponse:
    if not who.can(right):
        return forbidden_page(request, who)
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


def api(handler: PageHandler, right: str = VIEW) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        who = await state(request).gate.principal(request)
        if who is None:
            return json_error(401, "sign in: send `Authorization: Bearer <API token>`")
        if not who.can(right):
            return json_error(403, f"{who.label} may not do this (needs the right `{right}`)")
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
        doc = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadInput("the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadInput("the request body must be a JSON object")
    if not finite(doc):
        raise BadInput("the request body holds a number that is not finite")
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a parsed document (floats like 1e999 parse to inf)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


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
