"""GET /login, GET /auth/callback, POST /login (break-glass token form) and POST /logout.

With `server.oidc` configured, GET /login[?next=] sends the browser to the IdP (code + PKCE,
state, nonce) and GET /auth/callback signs the person in. The admin-token form stays as
break-glass at GET /login?break_glass=1 (and is the only sign-in without OIDC).

The token form has no session to hang a CSRF token on, so it uses a double-submit token: a
random value in a SameSite=Strict cookie and the same value in a hidden field. The OIDC round
trip is bound to the browser by a SameSite=Lax cookie holding the `state` (the IdP's redirect
back is a cross-site navigation, on which Strict cookies are not sent).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from jml.web import html
from jml.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    client_address,
    cookie_attrs,
    csrf_ok,
    safe_next,
    same_origin,
)
from jml.web.oidc import OidcError, claim
from jml.web.state import BadInput, WebState, read_form, state

log = logging.getLogger("jml.web.login")

MAX_TOKEN = 4096
OIDC_COOKIE = "jml_oidc"


def _login_page(request: web.Request, *, message: str = "", next_: str = "/", status: int = 200) -> web.Response:
    st = state(request)
    gate = st.gate
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not (20 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
        token = secrets.token_urlsafe(24)
    if gate.admin_token() is None and not message:
        message = ("No admin token is configured (server.admin_token_env or server.admin_token_file), "
                   "so nobody can sign in with one." + (" Use single sign-on." if st.oidc else ""))
    msg = f'<p class="error" role="alert">{html.h(message)}</p>' if message else ""
    sso = ""
    if st.oidc is not None:
        sso = (f'<p><a class="button primary" id="sso" href="/login?next={html.h(quote(next_, safe=""))}">'
               "Sign in with single sign-on</a></p><p class=\"hint\">Break-glass only: the admin token.</p>")
    text = html.template("login.html").substitute(message=msg + sso, login_csrf=html.h(token), next=html.h(next_),
                                                  hours=str(int(SESSION_TTL // 3600)))
    resp = web.Response(text=text, content_type="text/html", charset="utf-8", status=status)
    resp.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_attrs(request, st.ctx.rt.config))  # type: ignore[arg-type]
    html.secure_headers(resp)
    return resp


def _plain(request: web.Request, title: str, message: str, status: int) -> web.Response:
    return html.message_page(title, message, now=state(request).ctx.rt.clock(), status=status,
                             back="/login?signed_out=1" if state(request).oidc is not None else "/login")


async def http_session(st: WebState) -> aiohttp.ClientSession:
    if st.http is None or st.http.closed:
        st.http = aiohttp.ClientSession()
    session: aiohttp.ClientSession = st.http
    return session


async def login_form(request: web.Request) -> web.StreamResponse:
    st = state(request)
    next_ = safe_next(request.query.get("next"))
    if await st.gate.principal(request) is not None:
        raise web.HTTPSeeOther(location=next_)
    if st.oidc is None or request.query.get("break_glass"):
        return _login_page(request, next_=next_)
    if request.query.get("signed_out"):
        return _login_page(request, message="You are signed out.", next_=next_)
    try:
        url, pending = await st.oidc.begin(await http_session(st), next_)
    except (OidcError, aiohttp.ClientError, TimeoutError) as e:
        log.warning("single sign-on unavailable", extra={"error": str(e)})
        return _plain(request, "Sign-in unavailable", f"The identity provider cannot be reached: {e}. "
                      "An administrator can use the break-glass sign-in at /login?break_glass=1.", 503)
    resp = web.HTTPSeeOther(location=url)
    resp.set_cookie(OIDC_COOKIE, pending.state, max_age=600,
                    **cookie_attrs(request, st.ctx.rt.config, samesite="Lax"))  # type: ignore[arg-type]
    resp.headers["Cache-Control"] = "no-store"
    raise resp


def _person_for(st: WebState, value: str) -> str | None:
    """The HR employee_id whose work_email (or id) is `value`."""
    if not value:
        return None
    wanted = value.strip().casefold()
    for s in st.ctx.rt.store.find_people(value, 50):
        p = s.person
        if s.employee_id.casefold() == wanted or (p is not None and p.work_email.casefold() == wanted):
            return s.employee_id
    return None


async def callback(request: web.Request) -> web.StreamResponse:
    st = state(request)
    if st.oidc is None:
        raise web.HTTPNotFound(text="single sign-on is not configured")
    cfg = st.oidc.cfg
    address = client_address(request, st.ctx.rt.config)
    if st.gate.clients.blocked(address):
        return _plain(request, "Too many attempts", "Too many failed sign-ins from here: wait a minute.", 429)
    q = request.query
    if "error" in q:
        return _plain(request, "Not signed in", f"The identity provider said: {q.get('error', '')[:200]}", 403)
    state_ = q.get("state", "")
    cookie = request.cookies.get(OIDC_COOKIE, "")
    if not state_ or not cookie or not hmac.compare_digest(state_.encode(), cookie.encode()):
        st.gate.clients.failed(address)
        return _plain(request, "Sign-in expired", "This sign-in did not start in this browser or has expired: "
                      "sign in again.", 400)
    pending = st.oidc.take(state_)
    code = q.get("code", "")
    if pending is None or not code or len(code) > 2048:
        st.gate.clients.failed(address)
        return _plain(request, "Sign-in expired", "This sign-in has expired or was already used: sign in again.", 400)
    try:
        claims = await st.oidc.finish(await http_session(st), code, pending)
    except (OidcError, aiohttp.ClientError, TimeoutError) as e:
        st.gate.clients.failed(address)
        log.warning("single sign-on failed", extra={"error": str(e), "remote": address})
        return _plain(request, "Not signed in", str(e), 403)
    sub = str(claims.get("sub", ""))
    email = str(claims.get("email", "") or "")
    name = str(claims.get("name", "") or claims.get("preferred_username", "") or "")
    groups = claim(claims, cfg.roles_claim)
    roles = cfg.roles_for(groups)
    ctx = st.ctx
    person_value = claim(claims, cfg.person_claim)
    person = await asyncio.to_thread(_person_for, st, str(person_value)) if isinstance(person_value, str) else None
    actor = f"person sub={sub} email={email} role={','.join(sorted(roles))} addr={address}"
    if not roles:
        await asyncio.to_thread(ctx.rt.audit.append, "sign_in_refused",
                                {"reason": "no role", "groups": _groups(groups)},
                                now=ctx.rt.clock(), actor=actor)
        resp = _plain(request, "No access", f"You are signed in at the identity provider as {email or sub}, but "
                      "none of your groups gives you a role in jml. Ask an administrator for access.", 403)
        resp.del_cookie(OIDC_COOKIE, path="/")
        return resp
    session = st.gate.open_session("", kind="oidc", subject=sub, email=email, name=name, roles=roles, person=person)
    await asyncio.to_thread(ctx.rt.audit.append, "sign_in", {"method": "oidc", "roles": sorted(roles),
                                                             "person": person}, now=ctx.rt.clock(), actor=actor)
    # A page, not a redirect: the IdP's redirect here was a cross-site navigation, and the browser would
    # not send the new SameSite=Strict cookie on a redirect that continues it. A same-site refresh does.
    target = html.h(pending.next)
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={target}"><title>Signed in · jml</title></head>'
            f'<body><p>Signed in as {html.h(name or email or sub)}. <a href="{target}">Continue</a></p></body></html>')
    resp = web.Response(text=body, content_type="text/html", charset="utf-8")
    resp.set_cookie(SESSION_COOKIE, session.id, max_age=int(cfg.session_ttl.total_seconds()),
                    **cookie_attrs(request, ctx.rt.config))  # type: ignore[arg-type]
    resp.del_cookie(OIDC_COOKIE, path="/")
    html.secure_headers(resp)
    return resp


def _groups(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value[:200]]
    if isinstance(value, list):
        return [str(v)[:200] for v in value[:50]]
    return []


async def login(request: web.Request) -> web.StreamResponse:
    """The break-glass admin-token form."""
    st = state(request)
    gate = st.gate
    cfg = st.ctx.rt.config
    address = client_address(request, cfg)
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
    if gate.login_throttled(address):
        return _login_page(request, message="Too many failed attempts: wait a minute.", next_=next_, status=429)
    if len(token) > MAX_TOKEN:
        gate.login_failed(address)
        return _login_page(request, message="That is not the admin token.", next_=next_, status=400)
    fp = gate.check_token(token.strip())
    if fp is None:
        gate.login_failed(address)
        return _login_page(request, message="That is not the admin token.", next_=next_, status=401)
    session = gate.open_session(fp)
    await asyncio.to_thread(st.ctx.rt.audit.append, "break_glass", {"method": "POST", "path": "/login",
                                                                    "address": address, "sign_in": True},
                            now=st.ctx.rt.clock(), actor=f"break-glass via=session role=admin addr={address}")
    log.warning("break-glass sign-in with the admin token", extra={"remote": address})
    resp = web.HTTPSeeOther(location=next_)
    resp.set_cookie(SESSION_COOKIE, session.id, max_age=int(SESSION_TTL), **cookie_attrs(request, cfg))  # type: ignore[arg-type]
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
    resp = web.HTTPSeeOther(location="/login" if state(request).oidc is None else "/login?signed_out=1")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp
