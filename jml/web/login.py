"""GET/POST /login and POST /logout.

The login form has no session to hang a CSRF token on, so it uses a double-submit token: a
random value in a SameSite=Strict cookie and the same value in a hidden field.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from jml.web import html
from jml.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    cookie_attrs,
    csrf_ok,
    safe_next,
    same_origin,
)
from jml.web.state import BadInput, read_form, state

MAX_TOKEN = 4096


def _login_page(request: web.Request, *, message: str = "", next_: str = "/", status: int = 200) -> web.Response:
    gate = state(request).gate
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not (20 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(24)
    if gate.admin_token() is None and not message:
        message = ("No admin token is configured (server.admin_token_env or server.admin_token_file), "
                   "so nobody can sign in.")
    msg = f'<p class="error" role="alert">{html.h(message)}</p>' if message else ""
    text = html.template("login.html").substitute(message=msg, login_csrf=html.h(token), next=html.h(next_),
                                                  hours=str(int(SESSION_TTL // 3600)))
    resp = web.Response(text=text, content_type="text/html", charset="utf-8", status=status)
    resp.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_attrs(request))  # type: ignore[arg-type]
    html.secure_headers(resp)
    return resp


async def login_form(request: web.Request) -> web.StreamResponse:
    next_ = safe_next(request.query.get("next"))
    if state(request).gate.principal(request) is not None:
        raise web.HTTPSeeOther(location=next_)
    return _login_page(request, next_=next_)


async def login(request: web.Request) -> web.StreamResponse:
    gate = state(request).gate
    if not same_origin(request):
        return _login_page(request, message="Sign-in refused: the form was sent from another site.", status=403)
    try:
        form = await read_form(request)
    except BadInput as e:
        return _login_page(request, message=str(e), status=400)
    next_ = safe_next(form.get("next"))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = form.get("csrf_token", "")
    if not cookie or not given or not hmac.compare_digest(cookie.encode(), given.encode()):
        return _login_page(request, message="The sign-in form expired: please try again.", next_=next_, status=403)
    if gate.admin_token() is None:
        return _login_page(request, next_=next_, status=503)
    token = form.get("token", "")
    if len(token) > MAX_TOKEN:
        return _login_page(request, message="That is not the admin token.", next_=next_, status=400)
    if gate.login_throttled():
        return _login_page(request, message="Too many failed attempts: wait a minute.", next_=next_, status=429)
    fp = gate.check_token(token.strip())
    if fp is None:
        gate.login_failed()
        return _login_page(request, message="That is not the admin token.", next_=next_, status=401)
    session = gate.open_session(fp)
    resp = web.HTTPSeeOther(location=next_)
    resp.set_cookie(SESSION_COOKIE, session.id, max_age=int(SESSION_TTL), **cookie_attrs(request))  # type: ignore[arg-type]
    resp.del_cookie(LOGIN_COOKIE, path="/")
    resp.headers["Cache-Control"] = "no-store"
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    gate = state(request).gate
    session = gate.session_for(request)
    if session is not None:
        if not same_origin(request):
            return html.message_page("Refused", "This form was sent from another site.",
                                     now=state(request).ctx.rt.clock(), csrf=session.csrf, status=403)
        try:
            form = await read_form(request)
        except BadInput as e:
            return html.message_page("Bad request", str(e), now=state(request).ctx.rt.clock(), csrf=session.csrf)
        if not csrf_ok(session, form.get("csrf_token")):
            return html.message_page("Refused", "This form has expired: reload the page and try again.",
                                     now=state(request).ctx.rt.clock(), csrf=session.csrf, status=403)
        gate.close_session(session.id)
    resp = web.HTTPSeeOther(location="/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp

