"""Who may use the pages and the API, and as whom they act.

Three ways in, each ending in a `Principal` with roles:
- an OIDC browser session (jml.web.oidc): the person's IdP groups map to roles
  (`server.oidc.roles`); a person whose groups map to no role gets no session;
- a scoped API token (`jml token create NAME --role …`): `Authorization: Bearer jml_…`, looked
  up by its sha256 on every request, so a revoked or expired token stops at once;
- the config's admin token (`server.admin_token_env` / `_file`), break-glass: as a bearer token or
  through the token form at /login; role admin; every use is audited (`break_glass`).

- The admin token is read on every request, so a rotated file takes effect at once; sessions
  opened with an older token stop working.
- Sessions are random ids kept server-side with an absolute expiry; the cookie is HttpOnly,
  SameSite=Strict, Secure when the browser reached us over TLS (directly or, from a trusted
  proxy, per X-Forwarded-Proto), and carries nothing but the id.
- Every state-changing request authenticated by the cookie needs the session's CSRF token
  (form field `csrf_token` or header `X-CSRF-Token`), and the Origin (or Referer) must name this
  host when the browser sends one. A bearer token is never sent by a browser on its own, so a
  bearer-authenticated request needs neither.
- Failed sign-ins and bearer failures are throttled per client address (X-Forwarded-For only
  from `server.trusted_proxies`) and per account, never globally.
- Every comparison of a secret is constant-time (hmac.compare_digest) or by its hash.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import quote, urlsplit

from aiohttp import web

from jml.approvals import Approver
from jml.config import Config, resolve_secret
from jml.errors import ConfigError
from jml.store.identity import IdentityStore
from jml.web.roles import rights

log = logging.getLogger("jml.web.auth")

SESSION_COOKIE = "jml_session"
LOGIN_COOKIE = "jml_login"  # double-submit token for the login form (there is no session yet)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 8 * 3600.0  # seconds: a working day, then sign in again
MAX_SESSIONS = 1000
LOGIN_FAILURES_PER_MINUTE = 10
ACCOUNT_FAILURES_FACTOR = 10  # one account takes this many times a client's failures before it is throttled
MAX_BEARER = 512  # an API or admin token is far shorter; longer ones are refused before any lookup
TOKEN_PREFIX = "jml_"
MAX_TRACKED_CLIENTS = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    id: str
    csrf: str
    expires: float  # time.monotonic()
    token_fp: str  # which admin token opened it ("" for an OIDC session)
    kind: str = "break-glass"  # break-glass | oidc
    subject: str = "break-glass"
    email: str = ""
    name: str = ""
    roles: frozenset[str] = frozenset({"admin"})
    person: str | None = None  # the HR employee_id this person is linked to


@dataclass(frozen=True)
class Principal:
    kind: str  # "session" | "token" (a scoped API token) | "admin-token" (break-glass bearer)
    session: Session | None = None
    roles: frozenset[str] = frozenset({"admin"})
    subject: str = "break-glass"
    email: str = ""
    name: str = ""
    address: str = ""
    person: str | None = None

    @cached_property
    def rights(self) -> frozenset[str]:
        return rights(self.roles)

    def can(self, right: str) -> bool:
        return right in self.rights

    @property
    def break_glass(self) -> bool:
        return self.kind == "admin-token" or (self.session is not None and self.session.kind == "break-glass")

    @property
    def key(self) -> str:
        """The identity that counts once among approvers."""
        if self.break_glass:
            return "break-glass"
        if self.kind == "token":
            return f"token:{self.subject}"
        return f"person:{self.subject}"

    @property
    def actor(self) -> str:
        """How the audit trail names who acted: the person (subject, e-mail, roles) and where from."""
        roles = ",".join(sorted(self.roles))
        if self.break_glass:
            via = "session" if self.session is not None else "api"
            return f"break-glass via={via} role=admin addr={self.address}"
        if self.kind == "token":
            return f"api-token={self.subject} role={roles} addr={self.address}"
        person = f" person={self.person}" if self.person else ""
        return f"person sub={self.subject} email={self.email}{person} role={roles} addr={self.address}"

    @property
    def approver(self) -> Approver:
        return Approver(self.key, self.actor)

    @property
    def label(self) -> str:
        """Who is signed in, as the page header shows it."""
        roles = ", ".join(sorted(self.roles))
        if self.break_glass:
            return f"break-glass admin token ({roles})"
        if self.kind == "token":
            return f"API token {self.subject} ({roles})"
        who = self.name or self.email or self.subject
        mail = f" <{self.email}>" if self.email and self.email != who else ""
        return f"{who}{mail} ({roles})"


# Who the current request is from, for the page header and for showing only the actions they may take.
CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("jml_web_principal", default=None)


def _fingerprint(token: str) -> str:
    return hashlib.sha256(b"jml-admin-token:" + token.encode()).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# ---- the client's address and scheme ---------------------------------------------------------
def _networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _trusted(addr: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_address(request: web.Request, config: Config) -> str:
    """The peer, or — when the peer is a trusted proxy — the nearest untrusted X-Forwarded-For hop."""
    peer = request.remote or ""
    nets = _networks(config.server.trusted_proxies)
    if not nets or not _trusted(peer, nets):
        return peer
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, nets):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from beyond the proxy: the proxy is all we know
    return hops[0] if hops else peer


def is_secure(request: web.Request, config: Config) -> bool:
    """TLS on our socket, or a trusted proxy's X-Forwarded-Proto: https."""
    if request.secure:
        return True
    if not _trusted(request.remote or "", _networks(config.server.trusted_proxies)):
        return False
    proto = request.headers.get("X-Forwarded-Proto", "")
    return proto.split(",")[0].strip().lower() == "https"


# ---- throttles -------------------------------------------------------------------------------
@dataclass
class Throttle:
    """Failures per key within a sliding minute."""

    limit: int
    window: float = 60.0
    _hits: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, key: str) -> bool:
        q = self._hits.get(key)
        if not q:
            return False
        now = time.monotonic()
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._hits[key]
            return False
        return len(q) >= self.limit

    def failed(self, key: str) -> None:
        if len(self._hits) >= MAX_TRACKED_CLIENTS and key not in self._hits:
            now = time.monotonic()
            for k in [k for k, q in self._hits.items() if not q or now - q[-1] > self.window]:
                del self._hits[k]
            if len(self._hits) >= MAX_TRACKED_CLIENTS:
                self._hits.pop(next(iter(self._hits)))
        self._hits.setdefault(key, deque()).append(time.monotonic())


@dataclass
class Gate:
    """The sessions, the throttles and the credential checks for one running service."""

    config: Config
    sessions: dict[str, Session] = field(default_factory=dict)
    identities: IdentityStore | None = None
    audit: Callable[[str, dict[str, object], str], None] | None = None  # (kind, data, actor), blocking
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    clients: Throttle = field(init=False)
    accounts: Throttle = field(init=False)

    def __post_init__(self) -> None:
        limit = self.config.server.login_failures_per_minute
        self.clients = Throttle(limit)
        self.accounts = Throttle(limit * ACCOUNT_FAILURES_FACTOR)

    # ---- the admin token (break-glass) -----------------------------------------------
    def admin_token(self) -> str | None:
        try:
            return resolve_secret(self.config.server, "admin_token", "server", required=False)
        except ConfigError:
            return None  # configured but unset/unreadable: nobody can sign in with it (the service logs it)

    def check_token(self, given: str) -> str | None:
        """The token's fingerprint if `given` is the admin token."""
        token = self.admin_token()
        if not token or not given:
            return None
        return _fingerprint(token) if _eq(given, token) else None

    # ---- throttles ---------------------------------------------------------------------
    def login_throttled(self, address: str, account: str = "break-glass") -> bool:
        return self.clients.blocked(address) or self.accounts.blocked(account)

    def login_failed(self, address: str, account: str = "break-glass") -> None:
        self.clients.failed(address)
        self.accounts.failed(account)

    # ---- sessions ------------------------------------------------------------------
    def open_session(self, token_fp: str, **who: object) -> Session:
        self._expire()
        while len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.expires)
            del self.sessions[oldest.id]
        ttl = SESSION_TTL
        if who.get("kind") == "oidc" and self.config.server.oidc is not None:
            ttl = self.config.server.oidc.session_ttl.total_seconds()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + ttl, token_fp,
                    **who)  # type: ignore[arg-type]
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
        if not sid or len(sid) > 128:
            return None
        s = self.sessions.get(sid)
        if s is None:
            return None
        if s.expires <= time.monotonic():
            self.sessions.pop(sid, None)
            return None
        if s.kind == "break-glass":
            token = self.admin_token()
            if not token or not _eq(s.token_fp, _fingerprint(token)):
                self.sessions.pop(sid, None)
                return None
        return s

    # ---- who is asking -----------------------------------------------------------------
    def bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    async def principal(self, request: web.Request) -> Principal | None:
        """The caller, or None. Raises 429 (JSON) when this client failed too often."""
        address = client_address(request, self.config)
        value = self.bearer(request)
        if value is not None:
            if self.clients.blocked(address):
                raise web.HTTPTooManyRequests(text='{"error": "too many failed sign-ins: wait a minute"}',
                                              content_type="application/json", headers={"Retry-After": "60"})
            who = await self._bearer(value, address)
            if who is None:
                self.clients.failed(address)
            elif who.break_glass:
                await self.audit_break_glass(request, who)
            return who
        s = self.session_for(request)
        if s is None:
            return None
        who = Principal("session", s, s.roles, s.subject, s.email, s.name, address, s.person)
        if who.break_glass:
            await self.audit_break_glass(request, who)
        return who

    async def _bearer(self, value: str, address: str) -> Principal | None:
        if len(value) > MAX_BEARER or not value.isascii():
            return None
        if value.startswith(TOKEN_PREFIX) and self.identities is not None:
            store = self.identities
            tok = await asyncio.to_thread(store.token_by_hash, token_hash(value))
            now = self.clock()
            if tok is None or not tok.live(now):
                return None
            if tok.last_used_at is None or now - tok.last_used_at > dt.timedelta(minutes=1):
                await asyncio.to_thread(store.touch_token, tok.name, now)
            return Principal("token", None, frozenset(tok.roles), tok.name, "", "", address)
        if self.check_token(value):
            return Principal("admin-token", None, frozenset({"admin"}), "break-glass", "", "", address)
        return None

    async def audit_break_glass(self, request: web.Request, who: Principal) -> None:
        """Every use of the break-glass admin token leaves an audit record and a warning."""
        log.warning("break-glass admin token used", extra={"method": request.method, "path": request.path,
                                                           "remote": who.address})
        if self.audit is not None:
            await asyncio.to_thread(self.audit, "break_glass", {"method": request.method, "path": request.path,
                                                                "address": who.address}, who.actor)


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


def cookie_attrs(request: web.Request, config: Config | None = None, *, samesite: str = "Strict") -> dict[str, object]:
    """HttpOnly, SameSite, path /, and Secure when the browser reached us over TLS (directly, or per a
    trusted proxy's X-Forwarded-Proto)."""
    secure = is_secure(request, config) if config is not None else request.secure
    return {"httponly": True, "samesite": samesite, "path": "/", "secure": secure}


def login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = request.path_qs if request.method == "GET" else "/"
    return web.HTTPSeeOther(location="/login?next=" + quote(target, safe=""))


def safe_next(value: str | None) -> str:
    """Only a path on this site (no scheme, no //host, no backslash tricks)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 for c in value) or len(value) > 2000:
        return "/"
    return value


# Extra navigation links and the right each needs (html.page shows the ones the caller may use).
VIEW_RIGHTS: list[tuple[str, str, str, str]] = [("/audit", "Evidence", "audit", "audit"),
                                                 ("/reviews", "Reviews", "reviews", "review"),
                                                 ("/access", "Access", "access", "view")]
