"""Slack's SCIM v2 limits and dialect, in front of the real scim2-server.

What Slack documents (docs.slack.dev/reference/scim-api, …/scim-api/rate-limits) and this
wrapper enforces; everything else is scim2-server's own behaviour:

* Auth: a wrong bearer token answers 401 `{"Errors":{"description":"invalid_authentication","code":401}}`.
* userName: at most 21 characters of [a-z0-9._-]; anything else answers 400 in Slack's shape
  and never reaches the server.
* `DELETE /Users/{id}` deactivates: rewritten to `PATCH active:false` on scim2-server, so the
  user stays (inactive) and `active:true` brings it back; the client sees 204.
* Uniqueness: a taken userName answers 409 `username_taken`; Slack also keeps emails unique
  (scim2-server does not), so a POST/PUT whose email another user holds answers 409 `email_taken`.
* Rate limits: a token bucket per write endpoint (POST /Users, PUT|PATCH /Users/{id},
  DELETE /Users/{id}, and the same for /Groups): 180/min, burst 20; plus 600/min over all
  writes. Over the limit: 429 + Retry-After (whole seconds), nothing forwarded.
* Locks: a write to a resource while another write to it is in flight answers 429
  `resource_locked` + Retry-After (when `lock_conflicts`); `lock_next(n)` forces that answer.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.vendor_peers.proxy import VendorProxy

USERNAME = re.compile(r"^[a-z0-9._-]{1,21}$")
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_deactivating: contextvars.ContextVar[bool] = contextvars.ContextVar("slack_deactivating", default=False)
_locked_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("slack_locked_key", default=None)


def slack_error(description: str, code: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=code, text=json.dumps({"Errors": {"description": description, "code": code}}),
                        content_type="application/json", headers=headers)


@dataclass
class Bucket:
    """A synchronous token bucket: `take()` says yes, or how long until a token."""

    per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def wait(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * 60.0 / self.per_minute

    def take(self) -> None:
        self.tokens -= 1


class SlackScimProxy(VendorProxy):
    def __init__(self, upstream: str, token: str, *, per_minute: float = 180, burst: int = 20,
                 overall_per_minute: float = 600, overall_burst: int = 180, lock_conflicts: bool = True) -> None:
        super().__init__(upstream)
        self.token = token
        self.per_minute, self.burst = per_minute, burst
        self.overall = Bucket(overall_per_minute, overall_burst)
        self.buckets: dict[str, Bucket] = {}
        self.lock_conflicts = lock_conflicts
        self.in_flight: set[str] = set()
        self.forced_locks = 0
        self.rate_limited = 0  # 429s answered for the rate limit (not for locks)
        self.forwarded_usernames: list[str] = []
        self.write_faults: deque[web.Response] = deque()

    # ---- test knobs ------------------------------------------------------------------
    def lock_next(self, n: int = 1) -> None:
        self.forced_locks += n

    def fail_next_write(self, description: str, code: int, retry_after: float | None = None) -> None:
        """The next write answers this Slack error (reads pass), e.g. ("too_many_requests", 429, 1)."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        self.write_faults.append(slack_error(description, code, headers))

    # ---- VendorProxy hooks -----------------------------------------------------------
    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        # aiohttp serves keep-alive requests one after another in one task: reset per request.
        _deactivating.set(False)
        _locked_key.set(None)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return slack_error("invalid_authentication", 401)
        if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            return None
        resource, rid = _split(request.path)
        if self.write_faults:
            return self.write_faults.popleft()
        if self.forced_locks:
            self.forced_locks -= 1
            return slack_error("resource_locked", 429, {"Retry-After": "1"})
        limited = self._rate_limit(request.method, resource)
        if limited is not None:
            return limited
        if resource == "Users":
            bad = self._bad_username(request.method, body)
            if bad is not None:
                return bad
            taken = await self._email_taken(request.method, rid, body)
            if taken is not None:
                return taken
        if rid and self.lock_conflicts:
            key = f"{resource}/{rid}"
            if key in self.in_flight:
                return slack_error("resource_locked", 429, {"Retry-After": "1"})
            self.in_flight.add(key)
            _locked_key.set(key)
        return None

    async def rewrite(self, method: str, path: str, query: str, body: Any) -> tuple[str, str, str, Any]:
        resource, rid = _split(path)
        if method == "DELETE" and resource == "Users" and rid:
            _deactivating.set(True)
            return "PATCH", path, query, {"schemas": [PATCH_SCHEMA],
                                          "Operations": [{"op": "replace", "path": "active", "value": False}]}
        return method, path, query, body

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        key = _locked_key.get()
        if key is not None:
            self.in_flight.discard(key)
        resource, _ = _split(path)
        if _deactivating.get() and status == 200:
            return 204, None
        if status == 409 and resource == "Users":
            return 409, {"Errors": {"description": "username_taken", "code": 409}}
        return status, body

    # ---- rules -----------------------------------------------------------------------
    def _rate_limit(self, method: str, resource: str) -> web.Response | None:
        verb = "update" if method in ("PUT", "PATCH") else method.lower()
        bucket = self.buckets.setdefault(f"{verb} {resource}", Bucket(self.per_minute, self.burst))
        wait = max(bucket.wait(), self.overall.wait())
        if wait > 0:
            self.rate_limited += 1
            return slack_error("too_many_requests", 429, {"Retry-After": str(max(1, math.ceil(wait)))})
        bucket.take()
        self.overall.take()
        return None

    def _bad_username(self, method: str, body: Any) -> web.Response | None:
        names: list[Any] = []
        if isinstance(body, dict) and method in ("POST", "PUT") and "userName" in body:
            names.append(body["userName"])
        if isinstance(body, dict) and method == "PATCH":
            for op in body.get("Operations") or []:
                if isinstance(op, dict) and str(op.get("path", "")).lower() == "username":
                    names.append(op.get("value"))
                elif isinstance(op, dict) and isinstance(op.get("value"), dict) and "userName" in op["value"]:
                    names.append(op["value"]["userName"])
        for name in names:
            if not isinstance(name, str) or not USERNAME.match(name):
                return slack_error("invalid_username: userName must be at most 21 characters of "
                                   "lowercase letters, digits, periods, hyphens and underscores", 400)
            self.forwarded_usernames.append(name)
        return None

    async def _email_taken(self, method: str, rid: str | None, body: Any) -> web.Response | None:
        if method not in ("POST", "PUT") or not isinstance(body, dict):
            return None
        emails = [e.get("value") for e in body.get("emails") or [] if isinstance(e, dict) and e.get("value")]
        assert self._session is not None
        for email in emails:
            flt = urllib.parse.quote(f'emails.value eq "{email}"')
            async with self._session.get(f"{self.upstream}/Users?filter={flt}",
                                         headers={"Authorization": f"Bearer {self.token}"}) as resp:
                found = await resp.json(content_type=None)
            holders = [r for r in found.get("Resources") or [] if r.get("id") != rid]
            if holders:
                return slack_error("email_taken", 409)
        return None


def _split(path: str) -> tuple[str, str | None]:
    """'/v2/Users/abc' -> ('Users', 'abc'); '/v2/Groups' -> ('Groups', None)."""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        if part in ("Users", "Groups"):
            return part, (parts[i + 1] if i + 1 < len(parts) else None)
    return "", None
