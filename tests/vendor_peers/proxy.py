"""A loopback reverse proxy in front of a real peer (scim2-server, moto).

Vendor wrappers subclass `VendorProxy` and override `check()` to reject what the vendor
rejects (and `rewrite()` to translate a vendor's dialect onto the real server); tests
queue faults (`fail_next`) to inject 429s, 5xx, resets and stalls. It forwards
everything else unchanged, so the peer stays the source of truth.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.peers import free_port


@dataclass
class Fault:
    status: int = 500  # 0 = reset the connection
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # stall before answering (or before forwarding if status is None)
    forward: bool = False  # stall, then forward for real


@dataclass
class Seen:
    method: str
    path: str
    query: str
    body: Any
    status: int = 0


class VendorProxy:
    """Override `check` (return a web.Response to reject) and `rewrite` in subclasses."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: deque[Fault] = deque()
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- hooks -------------------------------------------------------------
    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        return None

    async def rewrite(self, method: str, path: str, query: str, body: Any) -> tuple[str, str, str, Any]:
        return method, path, query, body

    def keeps_etag(self, path: str) -> bool:
        """Whether the upstream's ETag header is passed on for `path` (a dialect may drop it)."""
        return True

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        return status, body

    # ---- faults ------------------------------------------------------------
    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def writes(self) -> list[Seen]:
        return [s for s in self.seen if s.method in ("POST", "PUT", "PATCH", "DELETE")]

    # ---- plumbing ----------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        seen = Seen(request.method, request.path, request.query_string, body)
        self.seen.append(seen)
        if self.faults:
            fault = self.faults.popleft()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if not fault.forward:
                if fault.status == 0:
                    assert request.transport is not None
                    request.transport.close()
                    raise ConnectionResetError("injected reset")
                seen.status = fault.status
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        rejected = await self.check(request, body)
        if rejected is not None:
            seen.status = rejected.status
            return rejected
        method, path, query, body = await self.rewrite(request.method, request.path, request.query_string, body)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "if-match", "accept")}
        if body is not None:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/scim+json")
        data = json.dumps(body).encode() if body is not None and not isinstance(body, str) else body
        url = self.upstream + path + (f"?{query}" if query else "")
        async with self._session.request(method, url, data=data, headers=headers) as resp:
            payload = await resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "application/scim+json")
            etag = resp.headers.get("ETag")
        try:
            out: Any = json.loads(payload) if payload else None
        except ValueError:
            out = payload.decode("utf-8", "replace")
        status, out = await self.transform_response(method, path, status, out)
        seen.status = status
        extra = {"ETag": etag} if etag and self.keeps_etag(path) else {}
        if out is None:
            return web.Response(status=status, headers=extra)
        return web.Response(status=status, text=json.dumps(out), content_type=ctype.split(";")[0], headers=extra)

    async def _start(self, port: int) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> VendorProxy:
        """Run in a thread with its own loop, so sync and async tests can both use it."""
        port = free_port()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{port}/"
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> VendorProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
