"""The one protocol every connector implements, and the pieces they share.

A connector has the same small shape everywhere (cartography-style):
  map      pure: an Operation / desired account -> the vendor's payload
  call     I/O: send it (aiohttp / boto3), nothing clever
  classify the vendor's answer -> success, RetryableError, PermanentError, ConflictError
The engine only ever sees `Connector` and the errors of `jml.errors`.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jml.config import _ConnectorBase
from jml.errors import ConnectorError, PermanentError, RetryableError
from jml.model import AccountRecord, ConnectorTraits, Operation, RemoteAccount

__all__ = [
    "ApplyResult",
    "CheckFinding",
    "Connector",
    "ConnectorContext",
    "Entitlement",
    "TokenBucket",
    "classify_status",
    "parse_retry_after",
]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an applied operation left behind, for the store to record."""

    remote_id: str | None = None  # the account's id in the app (set by create/adopt)
    adopted: bool = False  # an existing account was found and taken over
    note: str = ""


@dataclass(frozen=True, slots=True)
class CheckFinding:
    ok: bool
    message: str  # plain words: "token lacks scope admin:org", "reached https://…/Users"


@dataclass(frozen=True, slots=True)
class Entitlement:
    """Something a person can be granted in an app, as a rule or a request names it:
    `group:NAME`, GitHub's `team:SLUG`, AWS's `PermissionSet@AccountId`."""

    grant: str
    display_name: str = ""


@dataclass(slots=True)
class ConnectorContext:
    """What the shell hands a connector when it builds one."""

    name: str
    secret: Callable[[str], str | None]  # secret("token") -> value, re-read for rotation
    # Called with (connector, action/endpoint, seconds, status) for HTTP latency metrics.
    observe: Callable[[str, str, float, int], None] = field(default=lambda *_: None)
    # The server's dialect as remembered in the store (shared by replicas, kept across
    # restarts): `recall()` reads it, `remember(facts)` merges new facts and returns the whole.
    recall: Callable[[], dict[str, Any]] = field(default=dict)
    remember: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda facts: dict(facts))
    # The remote id jml recorded for another person's account here (a manager reference),
    # so a reference costs no search; None when jml has none (then the connector searches).
    remote_id_of: Callable[[str], str | None] = field(default=lambda _eid: None)


@runtime_checkable
class Connector(Protocol):
    """A target app. All methods are idempotent from the caller's point of view."""

    name: str
    traits: ConnectorTraits

    @property
    def write_rate(self) -> float | None:
        """Writes per second this connector sends at most (its vendor's documented limit or
        the configured `rate_limit`); None when unlimited. The SLA forecast paces a queue by it."""
        ...

    async def open(self) -> None:
        """Create sessions/clients; read the server's capabilities."""

    async def close(self) -> None: ...

    async def apply(self, op: Operation, account: AccountRecord | None) -> ApplyResult:
        """Make the remote match what `op` says. `account` is what jml recorded (may be None,
        or lack a remote_id after a crash): find-then-create, adopt on conflict, a 404 on a
        delete is success. Raises jml.errors.ConnectorError subclasses."""
        ...

    async def read_account(self, employee_id: str, username: str, remote_id: str | None) -> RemoteAccount | None:
        """Read one account back (to verify a deprovision); None if it does not exist."""
        ...

    def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        """Every account in the app, with its grants, for reconciliation."""
        ...

    async def check(self) -> list[CheckFinding]:
        """Reach the API with the configured credentials; say what is missing."""
        ...

    async def entitlements(self) -> list[Entitlement]:
        """What can be granted here (groups, teams, permission sets per account), for the catalogue."""
        ...


class TokenBucket:
    """Token-bucket rate limit: `rate` tokens per second, at most `burst` at once.

    Shared by every worker of one connector; `pause(seconds)` empties it when the
    vendor says Retry-After, so the whole connector backs off, not one request.
    """

    def __init__(
        self, rate: float | None, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = float(burst if burst is not None else max(1, int(rate or 1)))
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate is None and self._blocked_until <= self._clock():
            return
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._blocked_until:
                    await asyncio.sleep(self._blocked_until - now)
                    continue
                if self.rate is None:
                    return
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    def pause(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
        self._tokens = 0.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def classify_status(
    connector: str,
    status: int,
    vendor_message: str,
    *,
    retry_after: float | None = None,
    what: str = "request failed",
) -> ConnectorError:
    """The default mapping of an HTTP status to our error types (RFC 7644 §3.12)."""
    if status == 429:
        return RetryableError(connector, "rate limited", status=status, vendor_message=vendor_message,
                              retry_after=retry_after, reason="rate_limited")
    if status >= 500 or status == 408:
        return RetryableError(connector, what, status=status, vendor_message=vendor_message,
                              retry_after=retry_after, reason="server_error")
    return PermanentError(connector, what, status=status, vendor_message=vendor_message)


def connector_defaults(cfg: _ConnectorBase, rate: float | None, burst: int | None = None) -> TokenBucket:
    """The connector's bucket: the configured rate, else the vendor default."""
    return TokenBucket(cfg.rate_limit if cfg.rate_limit is not None else rate,
                       cfg.burst if cfg.burst is not None else burst)
