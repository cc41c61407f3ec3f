"""Secrets never leave: a full scenario with recognisable fake tokens (SCIM, admin, webhook,
Okta) against an app that answers 401 and echoes the Authorization header back in its error
body, as some vendors do. The tokens must appear in no log line (DEBUG, JSON), no CLI
output, no metric, no audit record, no stored error, nowhere in the database file, and in
no page or API answer of `jml serve`.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.peers import ScimPeer, free_port
from tests.reliability.conftest import (
    ERROR,
    csv_bytes,
    generate,
    run_jml,
    write_config,
    write_export,
)
from tests.vendor_peers.proxy import VendorProxy

SECRETS = {
    "JML_REL_SCIM_TOKEN": "tok-SECRET-scim-1234567890",
    "JML_REL_ADMIN_TOKEN": "tok-SECRET-admin-1234567890",
    "JML_REL_WEBHOOK_SECRET": "tok-SECRET-webhook-1234567890",
    "JML_REL_OKTA_SECRET": "tok-SECRET-okta-1234567890",
}
# What would betray a secret even in part: each whole, and its distinctive tail.
NEEDLES = [*SECRETS.values(), "SECRET-scim", "SECRET-admin", "SECRET-webhook", "SECRET-okta"]


class EchoingUnauthorized(VendorProxy):
    """Every request: 401 with the caller's Authorization header in the body and a header."""

    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        auth = request.headers.get("Authorization", "")
        return web.json_response(
            {"schemas": [ERROR], "status": "401", "detail": f"invalid credentials: {auth!s} (token {auth[7:]})"},
            status=401, headers={"WWW-Authenticate": f'Bearer error="invalid_token", got="{auth}"'})


def leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [n for n in NEEDLES if n in text]


@pytest.fixture
def echo(peer: ScimPeer) -> Iterator[EchoingUnauthorized]:
    with EchoingUnauthorized(peer.url.removesuffix("/v2/")) as proxy:
        yield proxy


def _config(workdir: Path, echo: EchoingUnauthorized) -> Path:
    return write_config(
        workdir, scim_url=echo.url + "v2/",
        connector={"timeout": "5s", "max_attempts": 2, "retry_budget": "5s"},
        extra={"server": {"listen": f"127.0.0.1:{free_port()}", "admin_token_env": "JML_REL_ADMIN_TOKEN",
                          "shutdown_grace": "2s"},
               "sources": {"hris": {"location": str(workdir / "exports") + "/", "format": "csv",
                                    "profile": "generic", "timezone": "UTC", "poll_interval": "1s"},
                           "okta": {"secret_env": "JML_REL_OKTA_SECRET"},
                           "webhook": {"secret_env": "JML_REL_WEBHOOK_SECRET"}}})


def test_tokens_appear_nowhere(echo: EchoingUnauthorized, workdir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    rows = generate(8, seed=5)
    write_export(workdir / "exports", "day0.csv", csv_bytes(rows))
    cfg = _config(workdir, echo)
    outputs: dict[str, str] = {}
    log = ("--log-level", "DEBUG", "--log-json")

    r = run_jml(cfg, "sync", env=SECRETS, log_args=log, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "401" in r.stderr and "token was rejected" in r.stderr, r.stderr[-2000:]
    outputs["sync"] = r.stdout + r.stderr
    # The app really did echo the token back: the proof is only worth something if it did.
    assert any("Bearer" in str(s.body) or s.status == 401 for s in echo.seen)
    for args in (("check",), ("status",), ("status", "--json"), ("plan", "--json"), ("retry", "--all"),
                 ("audit", "export"), ("audit", "verify"), ("report", "access", "--format", "json")):
        r = run_jml(cfg, *args, env=SECRETS, log_args=log, timeout=120)
        assert "Traceback" not in r.stderr, (args, r.stderr[-2000:])
        outputs[" ".join(args)] = r.stdout + r.stderr
        if args == ("status", "--json"):
            status_doc = json.loads(r.stdout)
    assert "token was rejected" in outputs["check"]
    assert '"kind": "push"' in outputs["audit export"] or '"kind":"push"' in outputs["audit export"]
    assert any("401" in d["error"] for d in status_doc["dead_letters"]), status_doc["dead_letters"][:3]

    # In-process, for the metrics registry: the same failing sync, then render().
    from jml import cli, metrics

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    code = cli.main(["--config", str(cfg), *log, "retry", "--all"])
    assert code == 1
    captured = capsys.readouterr()
    outputs["in-process retry"] = captured.out + captured.err
    outputs["metrics"] = metrics.render().decode()
    assert "jml_operations" in outputs["metrics"]

    for name, text in outputs.items():
        assert leaks(text) == [], f"{name} leaks {leaks(text)}:\n{text[:3000]}"
    # Nothing stored: the database files as bytes (audit trail, stored errors, settings).
    for f in workdir.iterdir():
        if f.name.startswith("jml.db"):
            assert leaks(f.read_bytes()) == [], f"{f.name} holds a secret"

    # The service: its pages, API, metrics and logs.
    from tests.e2e.helpers import http, start_serve

    with start_serve(cfg, env=SECRETS, log_name="serve.log") as served:
        served.wait_up(60)
        admin = {"Authorization": f"Bearer {SECRETS['JML_REL_ADMIN_TOKEN']}"}
        pages: dict[str, bytes] = {}
        for path in ("/", "/people", "/api/v1/status", "/api/openapi.json", "/metrics", "/healthz", "/readyz",
                     "/people/" + rows[0]["employee_id"]):
            status, body = served.get(path, headers=admin)
            assert status < 500 or (path == "/readyz" and status == 503), (path, status, body[:500])
            pages[path] = body
        # Wrong credentials, echoed or not, must not be answered with the right ones.
        for path, hdrs in (("/api/v1/status", {"Authorization": "Bearer tok-SECRET-admin-12345678"}),
                           ("/", {"Cookie": "jml_session=tok-SECRET-admin-1234567890x"})):
            status, body = served.get(path, headers=hdrs)  # redirects are followed: to the login form
            assert status in (401, 403) or b"login" in body.lower(), (path, status, body[:300])
            pages[f"bad {path}"] = body
        status, body = http(served.url + "webhooks/hr", method="POST", data=b'{"id":"x"}',
                            headers={"X-JML-Signature": "t=1,v1=00", "Content-Type": "application/json"})
        assert status in (400, 401, 403), status
        pages["webhook hr"] = body
        status, body = http(served.url + "webhooks/okta", method="POST", data=b'{"data":{"events":[]}}',
                            headers={"Authorization": "tok-SECRET-okta-12345", "Content-Type": "application/json"})
        assert status in (400, 401, 403), status
        pages["webhook okta"] = body
        assert served.stop(signal.SIGTERM) == 0
        pages["serve log"] = served.logs().encode()
    for name, body in pages.items():
        assert leaks(body) == [], f"{name} leaks {leaks(body)}:\n{body[:2000]!r}"
    assert os.environ.get("JML_REL_SCIM_TOKEN") == SECRETS["JML_REL_SCIM_TOKEN"]
