"""The GitHub wire: one aiohttp session, GitHub's headers, its rate limits, its errors.

Shared by org mode (REST) and EMU mode (SCIM). Everything vendor-specific about *talking*
to GitHub lives here; the modes only decide *what* to send.

Rate limits (docs.github.com "Rate limits for the REST API", 2022-11-28):
  * primary: 5,000 requests/h per token. Every answer carries x-ratelimit-remaining and
    x-ratelimit-reset (UTC epoch seconds); at 0 nothing may be sent until the reset.
  * secondary: 403 or 429 with a message naming a secondary rate limit. Honour retry-after
    when present, else x-ratelimit-reset when remaining is 0, else wait at least a minute.
  * writes: "make requests serially instead of concurrently" and, for POST/PATCH/PUT/DELETE,
    "wait at least one second between each request" (Best practices for using the REST API).
    By default writes go one at a time, each a second after the previous one's answer
    (WriteSpacing); a configured `rate_limit`/`burst` replaces that with a token bucket.
  * provisions: EMU warns above 1,000 user provisions per hour; org invitations are capped
    per 24 h. `provisions_per_hour` is an exact sliding-window ceiling on the create path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict

from connectors.base import ConnectorContext, TokenBucket, classify_status, connector_defaults, parse_retry_after
from jml.config import GithubConnectorConfig
from jml.errors import ConnectorError, PermanentError, RetryableError

API_VERSION = "2022-11-28"
USER_AGENT = "jml"
SECONDARY_WAIT = 60.0  # GitHub: "wait for at least one minute before retrying"
DEFAULT_WRITE_RATE = 1.0
DEFAULT_WRITE_BURST = 5
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]  # case-insensitive (CIMultiDict)


class HourlyCeiling:
    """At most `limit` acquisitions in any 3,600-second window (exact, not a bucket:
    a bucket's burst would let limit + burst through in one hour)."""

    def __init__(self, limit: int, window: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._stamps: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._stamps and self._stamps[0] <= now - self.window:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return
                await asyncio.sleep(self._stamps[0] + self.window - now)


def vendor_message(body: Any) -> str:
    """GitHub's own words: REST {message, errors[]} or the scim-error {detail, scimType}."""
    if isinstance(body, dict):
        parts = [str(body.get("message") or body.get("detail") or "")]
        if body.get("scimType"):
            parts.append(f"scimType {body['scimType']}")
        for err in body.get("errors") or []:
            parts.append(str(err.get("message") or err.get("code") or err) if isinstance(err, dict) else str(err))
        return "; ".join(p for p in parts if p)
    return str(body or "")[:300]


def next_link(headers: Mapping[str, str]) -> str | None:
    match = _NEXT.search(headers.get("Link", ""))
    return match.group(1) if match else None


class WriteSpacing:
    """One write at a time, the next `gap` seconds after the previous one's *answer*: timed
    from the answer, not the send, the gap holds at GitHub whatever the network or a busy
    event loop did to either request (a bucket's 1/s spacing holds only at the sender)."""

    def __init__(self, gap: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.gap, self._clock = gap, clock
        self._free_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """Writes per second at most (what the SLA prediction paces a queue by)."""
        return 1.0 / self.gap

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._lock:
            wait = self._free_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._free_at = self._clock() + self.gap


class GithubHttp:
    """Send one request, honour every rate-limit signal, classify the answer."""

    def __init__(self, name: str, cfg: GithubConnectorConfig, ctx: ConnectorContext,
                 *, provisions_per_hour: int | None) -> None:
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.base = cfg.api_url.rstrip("/")
        self.gate = TokenBucket(None)  # every request waits here while GitHub says stop
        paced = cfg.rate_limit is None and cfg.burst is None
        # GitHub's own guidance by default; an operator's rate replaces it with a bucket. The
        # bucket stays either way: it is what a rate-limit answer pauses.
        self.writes = connector_defaults(cfg, None if paced else DEFAULT_WRITE_RATE, DEFAULT_WRITE_BURST)
        self.spacing = WriteSpacing(1.0 / DEFAULT_WRITE_RATE) if paced else None
        self.pace: TokenBucket | WriteSpacing = self.spacing or self.writes  # its `rate`: the write pace
        self.provisions = HourlyCeiling(provisions_per_hour) if provisions_per_hour else None
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self.session is None:
            timeout = aiohttp.ClientTimeout(total=self.cfg.timeout.total_seconds())
            self.session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _headers(self, content_type: str | None) -> dict[str, str]:
        token = self.ctx.secret("token")
        if not token:
            raise PermanentError(self.name, "no GitHub token configured (token_env / token_file)")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def provision(self) -> None:
        """Call before a request that provisions a user (invite / SCIM create)."""
        if self.provisions is not None:
            await self.provisions.acquire()

    async def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None,
                      ok: frozenset[int] = frozenset({404}), what: str = "") -> Reply:
        """`path` is relative to api_url (or an absolute `next` link). Statuses in `ok`
        come back as replies; other failures raise our error types."""
        await self.open()
        assert self.session is not None
        write = method != "GET"
        turn: contextlib.AbstractAsyncContextManager[None] = (
            self.spacing.turn() if write and self.spacing is not None else contextlib.nullcontext())
        label = what or f"{method} {path}"
        async with turn:
            await self.gate.acquire()
            if write:
                await self.writes.acquire()
            status, headers, raw = await self._send(method, path, body, params, label)
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        self._note_primary_limit(headers)
        if status < 400 or status in ok:
            return Reply(status, parsed, headers)
        raise self.classify(status, parsed, headers, label)

    async def _send(self, method: str, path: str, body: Any, params: Mapping[str, str] | None,
                    label: str) -> tuple[int, CIMultiDict[str], bytes]:
        assert self.session is not None
        url = path if path.startswith(("http://", "https://")) else self.base + path
        data = json.dumps(body).encode() if body is not None else None
        started = time.monotonic()
        status = 0
        try:
            async with self.session.request(method, url, data=data, params=params,
                                            headers=self._headers("application/json" if data else None)) as resp:
                raw = await resp.read()
                status = resp.status
                return status, CIMultiDict(resp.headers), raw
        except TimeoutError as exc:
            raise RetryableError(self.name, f"{label}: timed out", reason="timeout") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(self.name, f"{label}: {type(exc).__name__}", reason="connection") from exc
        finally:
            self.ctx.observe(self.name, label, time.monotonic() - started, status)

    def _note_primary_limit(self, headers: Mapping[str, str]) -> None:
        wait = self._until_reset(headers)
        if wait is not None:
            self._pause(wait)

    def _until_reset(self, headers: Mapping[str, str]) -> float | None:
        if headers.get("x-ratelimit-remaining") != "0":
            return None
        reset = headers.get("x-ratelimit-reset")
        try:
            return max(0.0, float(reset or "") - time.time()) + 1.0  # +1: reset is whole seconds
        except ValueError:
            return SECONDARY_WAIT

    def _pause(self, seconds: float) -> None:
        self.gate.pause(seconds)
        self.writes.pause(seconds)

    def classify(self, status: int, body: Any, headers: Mapping[str, str], what: str) -> ConnectorError:
        message = vendor_message(body)
        if status in (403, 429):
            wait = parse_retry_after(headers.get("retry-after"))
            if wait is None:
                wait = self._until_reset(headers)
            if wait is None and (status == 429 or "rate limit" in message.lower()):
                wait = SECONDARY_WAIT
            if wait is not None:
                self._pause(wait)
                return RetryableError(self.name, f"{what}: rate limited", status=status, vendor_message=message,
                                      retry_after=wait, reason="rate_limited")
        if status == 401:
            return PermanentError(self.name, f"{what}: GitHub rejected the token (bad credentials)",
                                  status=status, vendor_message=message)
        return classify_status(self.name, status, message, what=what)

    async def paginate(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Any]:
        """REST pagination by the Link header; yields each item of each page."""
        url: str | None = path
        query: Mapping[str, str] | None = params
        while url is not None:
            reply = await self.request("GET", url, params=query, ok=frozenset())
            for item in reply.body or []:
                yield item
            url, query = next_link(reply.headers), None
