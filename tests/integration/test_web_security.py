"""Regression tests for the HTTP security findings of issue 14, each against the service's real
listener (jml.service: runner_for + CappedSite + build_app) or the signed-in web app.

(4) header and body read timeouts, a connection cap, a webhook body not read without its
    credential header, declared oversize bodies refused before reading;
(6) the sign-in throttle per client address and per account, not global;
(7) out-of-range timestamps are 400, not 500; the session cookie is Secure behind a trusted TLS
    proxy (X-Forwarded-Proto only from server.trusted_proxies); NaN/Infinity in JSON bodies are
    refused; the Server header is a plain `jml`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jml import config as config_mod
from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.service import CappedSite, build_app, runner_for
from jml.web.state import BadInput, read_json
from tests.integration.test_web import NOW, TOKEN, _seed

BEARER = {"Authorization": f"Bearer {TOKEN}"}


class _Lease:
    started = True
    leader = True


class Server:
    def __init__(self, url: str, host: str, port: int, rt: Runtime) -> None:
        self.url, self.host, self.port, self.rt = url, host, port, rt


def _cfg(tmp: Path, server: dict[str, Any]) -> config_mod.Config:
    return config_mod.from_dict({
        "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
        "server": {"admin_token_env": "JML_TEST_ADMIN_TOKEN", "header_timeout": "1s", "body_timeout": "1s",
                   "max_connections": 4, **server},
        "sources": {"webhook": {"secret_env": "JML_TEST_HOOK"}},
        "policy": {"rules": [{"name": "everyone", "when": {"status": ["Active", "Leave"]},
                              "grant": {"demo": ["All Staff"]}}]},
        "connectors": {"demo": {"type": "scim", "url": "http://127.0.0.1:9/v2/", "token_env": "JML_TEST_SCIM"}},
    }, tmp)


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    monkeypatch.setenv("JML_TEST_HOOK", "hook-secret-value")
    cfg = _cfg(tmp_path, getattr(request, "param", {}))
    rt = Runtime(cfg, clock=lambda: NOW)
    _seed(rt)
    ctx = ServiceContext(rt=rt, engine=build_engine(rt), started_at=NOW)
    runner = runner_for(build_app(ctx, _Lease()), cfg)
    await runner.setup()
    site = CappedSite(runner, "127.0.0.1", 0, max_connections=cfg.server.max_connections)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"http://127.0.0.1:{port}", "127.0.0.1", port, rt)
    finally:
        await runner.cleanup()
        rt.store.close()


async def _raw(s: Server, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(s.host, s.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent before closing; fails if it keeps the connection open."""
    out = b""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"connection still open after {seconds}s: {out[:200]!r}"
        chunk = await asyncio.wait_for(reader.read(65536), left)
        if not chunk:
            return out
        out += chunk


# ---- (4) limits ------------------------------------------------------------------------------
async def test_slow_headers_are_cut_off(server: Server) -> None:
    reader, writer = await _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await _closed_within(reader, 8)
    writer.close()


async def test_slow_body_is_cut_off(server: Server) -> None:
    head = (b"POST /api/v1/offboard HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
            b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"employee_id\"")
    reader, writer = await _raw(server, head)
    await _closed_within(reader, 8)
    writer.close()
    assert server.rt.store.load_states(["E100"])["E100"].override is None


async def test_connection_cap(server: Server) -> None:
    idle = [await asyncio.open_connection(server.host, server.port) for _ in range(4)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    answer = await _closed_within(reader, 2)
    assert answer.startswith(b"HTTP/1.1 503")
    writer.close()
    for _r, w in idle:
        w.close()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as r:
        assert r.status == 200  # room again once the idle ones are gone


LONG_BODY = {"body_timeout": "20s"}  # the refusals below must come long before a body could time out


@pytest.mark.parametrize("server", [LONG_BODY], indirect=True)
async def test_webhook_body_is_not_read_without_its_signature(server: Server) -> None:
    """A POST announcing 1 MB without X-JML-Signature is refused at once: the server does not wait
    for (or read) the body."""
    head = (b"POST /webhooks/hr HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    reader, writer = await _raw(server, head)
    line = await asyncio.wait_for(reader.readline(), 8)  # well before the 20 s body timeout
    assert line.startswith(b"HTTP/1.1 401"), line
    writer.close()
    head = (b"POST /webhooks/okta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    reader, writer = await _raw(server, head)
    line = await asyncio.wait_for(reader.readline(), 8)
    assert line.startswith(b"HTTP/1.1 401") or line.startswith(b"HTTP/1.1 404"), line
    writer.close()


@pytest.mark.parametrize("server", [LONG_BODY], indirect=True)
async def test_declared_oversize_bodies_are_refused_before_reading(server: Server) -> None:
    for path, extra in (("/api/v1/offboard", b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"),
                        ("/webhooks/hr", b"X-JML-Signature: t=1,v1=00\r\n")):
        size = 100_000 if path.startswith("/api") else 2_000_000
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n").encode() + extra + b"\r\n"
        reader, writer = await _raw(server, head)
        line = await asyncio.wait_for(reader.readline(), 8)
        assert line.startswith(b"HTTP/1.1 413"), (path, line)
        writer.close()


async def test_server_header_is_plain(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/login", "/api/v1/status", "/nope"):
            async with http.get(server.url + path) as r:
                assert r.headers.get("Server") == "jml", path


# ---- (6) throttles -----------------------------------------------------------------------------
async def _login_form(http: aiohttp.ClientSession, s: Server, headers: dict[str, str]) -> str:
    r = await http.get(s.url + "/login", headers=headers)
    m = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
    assert m
    return m.group(1)


@pytest.mark.parametrize("server", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
async def test_login_throttle_is_per_client_not_global(server: Server) -> None:
    mallory = {"X-Forwarded-For": "203.0.113.66"}
    alice = {"X-Forwarded-For": "198.51.100.7"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        csrf = await _login_form(http, server, mallory)
        for _ in range(10):
            r = await http.post(server.url + "/login", data={"token": "wrong", "csrf_token": csrf},
                                headers=mallory, allow_redirects=False)
            assert r.status == 401
        r = await http.post(server.url + "/login", data={"token": TOKEN, "csrf_token": csrf}, headers=mallory,
                            allow_redirects=False)
        assert r.status == 429  # mallory is throttled, even with the right token
        csrf = await _login_form(http, server, alice)
        r = await http.post(server.url + "/login", data={"token": TOKEN, "csrf_token": csrf}, headers=alice,
                            allow_redirects=False)
        assert r.status == 303  # alice, elsewhere, is not locked out
    # Bearer failures: per client too.
    mallory = {"X-Forwarded-For": "203.0.113.67"}
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            async with http.get(server.url + "/api/v1/status", headers={**mallory, "Authorization": "Bearer bad"}) as r:
                assert r.status == 401
        async with http.get(server.url + "/api/v1/status", headers={**mallory, **BEARER}) as r:
            assert r.status == 429
        async with http.get(server.url + "/api/v1/status", headers={**alice, **BEARER}) as r:
            assert r.status == 200
    # The audit names where each break-glass use came from.
    uses = [rec for rec in server.rt.audit.records() if rec["kind"] == "break_glass"]
    assert any(rec["data"]["address"] == "198.51.100.7" for rec in uses)


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(10):
            async with http.get(server.url + "/api/v1/status",
                                headers={"X-Forwarded-For": f"203.0.113.{i}", "Authorization": "Bearer bad"}) as r:
                assert r.status == 401
        async with http.get(server.url + "/api/v1/status", headers={"X-Forwarded-For": "198.51.100.7",
                                                                    **BEARER}) as r:
            assert r.status == 429  # all of that came from 127.0.0.1, whatever the header claimed


async def test_absurdly_long_bearer_is_refused_early(server: Server) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/api/v1/status",
                                                         headers={"Authorization": "Bearer " + "a" * 5000}) as r:
        assert r.status == 401


async def test_account_throttle_is_a_backstop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jml.web.auth import ACCOUNT_FAILURES_FACTOR, Gate

    gate = Gate(_cfg(tmp_path, {}))
    for i in range(10 * ACCOUNT_FAILURES_FACTOR):
        assert not gate.login_throttled(f"10.0.{i // 250}.{i % 250}")
        gate.login_failed(f"10.0.{i // 250}.{i % 250}")
    assert gate.login_throttled("192.0.2.1")  # many addresses at one account: that account waits


# ---- (7) input and headers ----------------------------------------------------------------------
@pytest.mark.parametrize("at", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
                                "1000-01-01T00:00:00Z"])
async def test_out_of_range_timestamps_are_400(server: Server, at: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/v1/offboard", headers=BEARER,
                             json={"employee_id": "E100", "reason": "x", "at": at}) as r:
            assert r.status == 400, await r.text()
        async with http.get(server.url + "/api/v1/audit", headers=BEARER, params={"since": at}) as r:
            assert r.status == 400, await r.text()
        async with http.get(server.url + "/api/v1/reports/access", headers=BEARER,
                            params={"changes_since": at}) as r:
            assert r.status == 400, await r.text()


@pytest.mark.parametrize("server", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
async def test_session_cookie_secure_behind_trusted_tls_proxy(server: Server) -> None:
    # The browser speaks https to the proxy; the proxy speaks http to jml (this test plays the proxy,
    # so it hands the Secure cookies over itself).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}
        r = await http.get(server.url + "/login", headers=proxy)
        login_cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("jml_login="))
        assert "Secure" in login_cookie
        value = login_cookie.split(";")[0].split("=", 1)[1]
        r = await http.post(server.url + "/login", data={"token": TOKEN, "csrf_token": value},
                            headers={**proxy, "Cookie": f"jml_login={value}"}, allow_redirects=False)
        assert r.status == 303
        cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("jml_session="))
        assert "Secure" in cookie


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(server: Server) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        proxy = {"X-Forwarded-Proto": "https"}
        csrf = await _login_form(http, server, proxy)
        r = await http.post(server.url + "/login", data={"token": TOKEN, "csrf_token": csrf}, headers=proxy,
                            allow_redirects=False)
        assert r.status == 303
        cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("jml_session="))
        assert "Secure" not in cookie


@pytest.mark.parametrize("body", [b'{"employee_id": "E100", "reason": "x", "n": NaN}', b'{"a": Infinity}',
                                  b'{"a": -Infinity}', b'{"a": [1e999]}'])
async def test_non_finite_numbers_in_json_are_refused(body: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            await read_json(request)
        except BadInput as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", handler)
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as c:
        r = await c.post("/", data=body, headers={"Content-Type": "application/json"})
        assert r.status == 400
