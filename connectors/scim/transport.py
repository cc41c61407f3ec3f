"""The small aiohttp layer under the SCIM connector: send one prepared request, check it.

Bearer auth (RFC 7644 §2), JSON in and out, a timeout per request, a rate-limit token
before every write, and every failure translated here, at the edge, into jml.errors:
connection resets and timeouts are RetryableError(reason="connection"/"timeout"); an
unexpected status goes through the connector's `classify` hook (vendor error bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.base import TokenBucket, classify_status, parse_retry_after
from connectors.scim.protocol import ScimRequest, error_message
from jml.errors import ConflictError, ConnectorError, NotFoundError, PermanentError, RetryableError

SCIM_JSON = "application/scim+json"

Classifier = Callable[[int, Any, "float | None"], ConnectorError]


@dataclass(frozen=True, slots=True)
class ScimResponse:
    status: int
    body: Any  # parsed JSON, text, or None for an empty body
    etag: str | None = None


def default_classify(connector: str, status: int, body: Any, retry_after: float | None) -> ConnectorError:
    """RFC 7644 §3.12 statuses -> our error types; the vendor's message rides along."""
    message = error_message(body)
    if status == 409:
        return ConflictError(connector, "already exists", status=status, vendor_message=message)
    if status == 404:
        return NotFoundError(connector, "not found", status=status, vendor_message=message)
    if status == 401:
        return PermanentError(connector, "the token was rejected: check token_env / token_file",
                              status=status, vendor_message=message)
    if status == 403:
        return PermanentError(connector, "the token is not allowed to do this", status=status,
                              vendor_message=message)
    if status == 412:
        # RFC 7644 §3.14: someone else wrote the resource since we read it; read again and retry.
        return RetryableError(connector, "resource changed concurrently", status=status,
                              vendor_message=message, retry_after=retry_after, reason="conflict")
    return classify_status(connector, status, message, retry_after=retry_after)


class ScimTransport:
    def __init__(
        self,
        connector: str,
        base_url: str,
        token: Callable[[], str | None],
        *,
        timeout: float,
        bucket: TokenBucket,
        classify: Classifier,
        observe: Callable[[str, str, float, int], None] = lambda *_: None,
        in_flight: int | None = None,
    ) -> None:
        self.connector = connector
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.bucket = bucket
        self._classify = classify
        self._observe = observe
        self._session: aiohttp.ClientSession | None = None
        # At most `in_flight` requests at the app at once (the connector's pushes and read-backs),
        # whatever the engine runs: a chain parked on a group write gives its worker seat away
        # (connectors/pool.py), and chains going on together wait here instead of piling onto
        # the app. Waiting for a slot is outside the request's timeout.
        self._in_flight = in_flight
        self._slots: asyncio.Semaphore | contextlib.nullcontext[None] = contextlib.nullcontext()

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            if self._in_flight:
                self._slots = asyncio.Semaphore(self._in_flight)  # of this event loop, as the session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, req: ScimRequest) -> dict[str, str]:
        headers = {"Accept": SCIM_JSON}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if req.payload is not None:
            headers["Content-Type"] = SCIM_JSON
        if req.if_match:
            headers["If-Match"] = req.if_match
        return headers

    async def send(self, req: ScimRequest) -> ScimResponse:
        """Send `req`; return the response if its status is expected, else raise."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        if req.write:
            await self.bucket.acquire()
        data = json.dumps(req.payload).encode() if req.payload is not None else None
        endpoint = req.path.split("/", 1)[0]
        started = time.monotonic()
        try:
            async with self._slots:
                started = time.monotonic()  # the app's latency, not the wait for a slot
                async with self._session.request(req.method, self.base_url + req.path, params=dict(req.params),
                                                 data=data, headers=self._headers(req)) as resp:
                    raw = await resp.read()
                    status, headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise RetryableError(self.connector, f"{req.method} {endpoint} timed out", reason="timeout") from None
        except aiohttp.ClientError as e:
            raise RetryableError(self.connector, f"{req.method} {endpoint} failed: {type(e).__name__}",
                                 reason="connection") from None
        self._observe(self.connector, f"{req.method} {endpoint}", time.monotonic() - started, status)
        body = _decode(raw)
        if status in req.expected:
            return ScimResponse(status, body, headers.get("ETag"))
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429:
            # Back the whole connector off, not just this request (one bucket per connector, README "Connectors").
            self.bucket.pause(retry_after if retry_after is not None else 1.0)
        raise self._classify(status, body, retry_after)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
