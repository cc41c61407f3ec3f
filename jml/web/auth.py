"""Who may use the pages and the API: the admin bearer token, or the browser session it opens.

- The token is read on every request (`server.admin_token_env` / `_file`), so a rotated file
  takes effect at once; sessions opened with an older token stop working.
- Sessions are random ids kept server-side with an absolute expiry; the cookie is HttpOnly and
  SameSite=Strict and carries nothing but the id.
- Every state-changing request authenticated by the cookie needs the session's CSRF token
  (form field `csrf_token` or header `X-CSRF-Token`), and the Origin (or Referer) must name this
  host when the browser sends one. A bearer token is never sent by a browser on its own, so a
  bearer-authenticated request needs neither.
- Every comparison of a secret is constant-time (hmac.compare_digest).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from aiohttp import web

from jml.config import Config, resolve_secret
from jml.errors import ConfigError

SESSION_COOKIE = "jml_session"
LOGIN_COOKIE = "jml_login"  # double-submit token for the login form (there is no session yet)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 8 * 3600.0  # seconds: a working day, then sign in again
MAX_SESSIONS = 1000
LOGIN_FAILURES_PER_MINUTE = 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    id: str
    csrf: str
    expires: float  # time.monotonic()
    token_fp: str  # which admin token opened it


@dataclass(frozen=True)
class Principal:
    kind: str  # "token" | "session"
    session: Session | None = None

    @property
    def actor(self) -> str:
        return "api" if self.kind == "token" else "web"


def _fingerprint(token: str) -> str:
    return hashlib.sha256(b"jml-admin-token:" + token.encode()).hexdigest()


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Gate:
    """The sessions and the token check for one running service."""

    config: Config
    sessions: dict[str, Session] = field(default_factory=dict)
    _failures: deque[float] = field(default_factory=deque)

    # ---- the admin token -----------------------------------------------------------
    def admin_token(self) -> str | None:
        try:
            return resolve_secret(self.config.server, "admin_token", "server", required=False)
        except ConfigError:
            return None  # configured but unset/unreadable: nobody can sign in (the service logs it)

    def check_token(self, given: str) -> str | None:
        """The token's fingerprint if `given` is the admin token."""
        token = self.admin_token()
        if not token or not given:
            return None
        return _fingerprint(token) if _eq(given, token) else None

    def login_throttled(self) -> bool:
        now = time.monotonic()
        while self._failures and now - self._failures[0] > 60:
            self._failures.popleft()
        return len(self._failures) >= LOGIN_FAILURES_PER_MINUTE

    def login_failed(self) -> None:
        self._failures.append(time.monotonic())

    # ---- sessions ------------------------------------------------------------------
    def open_session(self, token_fp: str) -> Session:
        self._expire()
        while len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.expires)
            del self.sessions[oldest.id]
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + SESSION_TTL, token_fp)
        self.sessions[s.id] = s
        return s

    def close_session(self, sid: str) -> None:
        self.sessions.pop(sid, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[sid]

    def session_for(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            return None
        s = self.sessions.get(sid)
        if s is None:
            return None
        token = self.admin_token()
        if s.expires <= time.monotonic() or not token or not _eq(s.token_fp, _fingerprint(token)):
            self.sessions.pop(sid, None)
            return None
        return s

    def principal(self, request: web.Request) -> Principal | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return Principal("token") if self.check_token(value.strip()) else None
        s = self.session_for(request)
        return Principal("session", s) if s else None


# ---- CSRF and origin -------------------------------------------------------------------
def same_origin(request: web.Request) -> bool:
    """Origin (else Referer), when the browser sends one, must name this host."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return _names_host(origin, request)
    referer = request.headers.get("Referer")
    if referer:
        return _names_host(referer, request)
    return True


def _names_host(url: str, request: web.Request) -> bool:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and _eq(str(given), session.csrf)


def cookie_attrs(request: web.Request) -> dict[str, object]:
    return {"httponly": True, "samesite": "Strict", "path": "/", "secure": request.secure}


def login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = request.path_qs if request.method == "GET" else "/"
    return web.HTTPSeeOther(location="/login?next=" + quote(target, safe=""))


def safe_next(value: str | None) -> str:
    """Only a path on this site (no scheme, no //host, no backslash tricks)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 for c in value):
        return "/"
    return value
