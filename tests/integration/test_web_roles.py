"""Roles on every route: each route of jml.web.ROUTES x each role, through a scoped API token.

Allowed → anything but 401/403; forbidden → 403 (and nothing changes). The table of rights is
jml.web.roles.RIGHTS; this test reads the expected answer from an independent statement of the
issue's rules, so a route given the wrong right fails here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.store.identity import IdentityStore
from jml.web import ROUTES, add_routes
from jml.web.auth import new_api_token, token_hash
from jml.web.roles import ROLES
from tests.integration.test_web import NOW, TOKEN, _config, _seed

# Who may do what, as the issue states it (independent of jml.web.roles).
EVERYONE = set(ROLES)
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/"): EVERYONE,
    ("GET", "/api/v1/status"): EVERYONE,
    ("GET", "/api/v1/people/{employee_id}/progress"): EVERYONE,
    ("GET", "/people"): {"hr", "admin"},
    ("GET", "/people/{employee_id}"): {"hr", "admin"},
    ("POST", "/people/{employee_id}/offboard"): {"hr", "admin"},
    ("POST", "/api/v1/offboard"): {"hr", "admin"},
    ("POST", "/plans/{plan_id}/approve"): {"approver", "admin"},
    ("POST", "/api/v1/plans/{plan_id}/approve"): {"approver", "admin"},
    ("POST", "/plans/{plan_id}/discard"): {"operator", "admin"},
    ("POST", "/api/v1/plans/{plan_id}/discard"): {"operator", "admin"},
    ("GET", "/plans/{plan_id}/revert"): {"operator", "admin"},
    ("POST", "/plans/{plan_id}/revert"): {"operator", "admin"},
    ("POST", "/api/v1/plans/{plan_id}/revert"): {"operator", "admin"},
    ("POST", "/retry"): {"operator", "admin"},
    ("POST", "/operations/{operation_id}/discard"): {"operator", "admin"},
    ("POST", "/api/v1/retry"): {"operator", "admin"},
    ("POST", "/connectors/{connector}/pause"): {"operator", "admin"},
    ("POST", "/connectors/{connector}/resume"): {"operator", "admin"},
    ("POST", "/api/v1/connectors/{connector}/pause"): {"operator", "admin"},
    ("POST", "/api/v1/connectors/{connector}/resume"): {"operator", "admin"},
    ("GET", "/audit"): {"auditor", "admin"},
    ("GET", "/api/v1/audit"): {"auditor", "admin"},
    ("GET", "/api/v1/reports/access"): {"auditor", "admin"},
    ("GET", "/api/v1/reports/sla"): {"auditor", "admin"},
    # Access reviews: everyone signed in may be a reviewer (of their own items only); campaigns are
    # started and their evidence exported by auditors.
    ("GET", "/reviews"): EVERYONE,
    ("GET", "/reviews/{campaign_id}"): EVERYONE,
    ("POST", "/reviews/{campaign_id}/decide"): EVERYONE,
    ("GET", "/api/v1/reviews"): EVERYONE,
    ("POST", "/api/v1/reviews"): {"auditor", "admin"},
    ("GET", "/api/v1/reviews/{campaign_id}"): EVERYONE,
    ("POST", "/api/v1/reviews/{campaign_id}/decisions"): EVERYONE,
    ("GET", "/api/v1/reviews/{campaign_id}/export"): {"auditor", "admin"},
    # Access requests: every signed-in person; what they may do is the approval policy's (403 with its reason).
    ("GET", "/api/v1/catalogue"): EVERYONE,
    ("GET", "/api/v1/access/requests"): EVERYONE,
    ("POST", "/api/v1/access/requests"): EVERYONE,
    ("POST", "/api/v1/access/requests/{request_id}/approve"): EVERYONE,
    ("POST", "/api/v1/access/requests/{request_id}/deny"): EVERYONE,
    ("POST", "/api/v1/access/requests/{request_id}/revoke"): EVERYONE,
    ("POST", "/api/v1/access/jit"): EVERYONE,
    ("GET", "/access"): EVERYONE,
    ("POST", "/access/request"): EVERYONE,
    ("POST", "/access/{request_id}/approve"): EVERYONE,
    ("POST", "/access/{request_id}/deny"): EVERYONE,
    ("POST", "/access/{request_id}/revoke"): EVERYONE,
}

BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/offboard": {"json": {"employee_id": "E100", "reason": "role test"}},
    "/api/v1/retry": {"json": {"all": True}},
    "/people/{employee_id}/offboard": {"data": {"reason": "role test"}},
}


def test_every_route_is_in_the_table() -> None:
    assert {(m, p) for m, p, *_ in ROUTES} == set(EXPECTED)


@pytest.fixture
async def app_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient[Any, Any],
                                                                                            dict[str, str], Runtime]]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    rt = Runtime(_config(tmp_path), clock=lambda: NOW)
    _seed(rt)
    store = IdentityStore(rt.store.engine)
    tokens = {}
    for role in ROLES:
        secret = new_api_token()
        assert store.create_token(f"t-{role}", token_hash(secret), [role], created_by="test", now=NOW,
                                  expires_at=None)
        tokens[role] = secret
    app = web.Application()
    add_routes(app, ServiceContext(rt=rt, engine=build_engine(rt), started_at=NOW))
    async with TestClient(TestServer(app)) as c:
        yield c, tokens, rt
    rt.store.close()


def _fill(path: str) -> str:
    return (path.replace("{employee_id}", "E100").replace("{plan_id}", "plan-held-1").replace("{connector}", "demo")
            .replace("{operation_id}", "1").replace("{campaign_id}", "1")
            .replace("{request_id}", "ar-none"))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), sorted(EXPECTED))
async def test_route_by_role(app_tokens: tuple[TestClient[Any, Any], dict[str, str], Runtime], role: str,
                             method: str, path: str) -> None:
    client, tokens, rt = app_tokens
    kw = BODIES.get(path, {})
    r = await client.request(method, _fill(path), headers={"Authorization": f"Bearer {tokens[role]}"},
                             allow_redirects=False, **kw)
    if role in EXPECTED[(method, path)]:
        assert r.status not in (401, 403) and r.status < 500, (role, method, path, r.status, await r.text())
    else:
        assert r.status == 403, (role, method, path, r.status)
        # A refusal changes nothing: the held plan is still held, nothing paused, no offboard.
        info = rt.outbox.plan("plan-held-1")
        assert info is not None and info.state == "held"
        assert not rt.store.get_setting("paused_connectors", [])
        assert rt.store.load_states(["E100"])["E100"].override is None


async def test_forbidden_page_is_plain_and_names_who(app_tokens: tuple[TestClient[Any, Any], dict[str, str],
                                                                       Runtime]) -> None:
    client, tokens, _rt = app_tokens
    r = await client.get("/people", headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert r.status == 403
    text = await r.text()
    assert "Not allowed" in text and "API token t-viewer (viewer)" in text


async def test_actions_name_the_token_as_actor(app_tokens: tuple[TestClient[Any, Any], dict[str, str],
                                                                 Runtime]) -> None:
    client, tokens, rt = app_tokens
    r = await client.post("/api/v1/plans/plan-held-1/approve",
                          headers={"Authorization": f"Bearer {tokens['approver']}"})
    assert r.status == 200
    approval = [rec for rec in rt.audit.records() if rec["kind"] == "approval"]
    assert approval and approval[0]["actor"] == "api-token=t-approver role=approver addr=127.0.0.1"


async def test_revoked_and_expired_tokens_stop_at_once(app_tokens: tuple[TestClient[Any, Any], dict[str, str],
                                                                         Runtime]) -> None:
    client, tokens, rt = app_tokens
    store = IdentityStore(rt.store.engine)
    auth = {"Authorization": f"Bearer {tokens['viewer']}"}
    assert (await client.get("/api/v1/status", headers=auth)).status == 200
    assert store.revoke_token("t-viewer", NOW)
    assert (await client.get("/api/v1/status", headers=auth)).status == 401
    secret = new_api_token()
    store.create_token("old", token_hash(secret), ["viewer"], created_by="test", now=NOW - dt.timedelta(days=2),
                       expires_at=NOW - dt.timedelta(seconds=1))
    assert (await client.get("/api/v1/status", headers={"Authorization": f"Bearer {secret}"})).status == 401
    # Only the hash is stored.
    with rt.store.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM api_token"))
    assert tokens["admin"] not in dump and token_hash(tokens["admin"]) in dump


def test_every_route_is_documented_with_its_403() -> None:
    from jml.web.openapi import document

    doc = document()
    for method, path, *_ in ROUTES:
        op = doc["paths"][path][method.lower()]
        assert "403" in op["responses"], (method, path)
    assert "/auth/callback" in doc["paths"]


async def test_pre_approval_is_approved_by_someone_else_on_the_api(
        app_tokens: tuple[TestClient[Any, Any], dict[str, str], Runtime]) -> None:
    from jml.approvals import Approver, request_pre_approval

    client, tokens, rt = app_tokens
    rid = request_pre_approval(rt, ["E200", "E100"], Approver("token:t-approver", "api-token=t-approver"))
    page = await (await client.get("/", headers={"Authorization": f"Bearer {tokens['admin']}"})).text()
    assert f"Layoff pre-approval <code>{rid}</code>" in page and f"Approve pre-approval {rid}" in page
    assert f"Discard pre-approval {rid}" in page
    viewer = await (await client.get("/", headers={"Authorization": f"Bearer {tokens['viewer']}"})).text()
    assert f"Layoff pre-approval <code>{rid}</code>" in viewer and "Approve pre-approval" not in viewer
    assert "Discard pre-approval" not in viewer
    # The token that asked for it cannot approve it; another approver can.
    r = await client.post(f"/api/v1/plans/{rid}/approve", headers={"Authorization": f"Bearer {tokens['approver']}"})
    assert r.status == 409 and "requested by you" in (await r.json())["error"]
    assert not rt.store.get_setting("pre_approved_leavers", [])
    r = await client.post(f"/api/v1/plans/{rid}/approve", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert r.status == 200
    assert rt.store.get_setting("pre_approved_leavers", []) == ["E100", "E200"]
    rec = next(x for x in rt.audit.records() if x["kind"] == "pre_approval")
    assert rec["actor"] == "api-token=t-admin role=admin addr=127.0.0.1"
    assert rec["data"]["requested_by"] == "api-token=t-approver"


async def test_operator_buttons_on_the_status_page(app_tokens: tuple[TestClient[Any, Any], dict[str, str],
                                                                     Runtime]) -> None:
    """The break-glass session (admin) sees and uses pause, resume, discard; the forms need the CSRF token."""
    from tests.integration.test_web import _login

    client, _tokens, rt = app_tokens
    csrf = await _login(client)
    page = await (await client.get("/")).text()
    assert 'action="/connectors/demo/pause"' in page and "Discard plan plan-held-1" in page
    assert "Signed in as break-glass admin token (admin)" in page
    assert (await client.post("/connectors/demo/pause", data={}, allow_redirects=False)).status == 403
    r = await client.post("/connectors/demo/pause", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303 and rt.store.get_setting("paused_connectors", []) == ["demo"]
    page = await (await client.get("/")).text()
    assert 'action="/connectors/demo/resume"' in page
    r = await client.post("/connectors/demo/resume", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303 and rt.store.get_setting("paused_connectors", []) == []
    r = await client.post("/plans/plan-held-1/discard", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303
    info = rt.outbox.plan("plan-held-1")
    assert info is not None and info.state == "discarded"
    kinds = [(x["kind"], x["actor"]) for x in rt.audit.records()]
    actor = "break-glass via=session role=admin addr=127.0.0.1"
    assert ("pause", actor) in kinds and ("resume", actor) in kinds and ("discard", actor) in kinds


async def test_auditor_downloads(app_tokens: tuple[TestClient[Any, Any], dict[str, str], Runtime]) -> None:
    import json

    from jml.audit import verify_lines

    client, tokens, rt = app_tokens
    auth = {"Authorization": f"Bearer {tokens['auditor']}"}
    rt.audit.append("offboard", {"reason": "x"}, now=NOW, actor="cli user=a", subject="E100")
    r = await client.get("/api/v1/audit", headers=auth)
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in (await r.text()).splitlines() if x.strip()]
    head = lines[-1]["head"]
    result = verify_lines(lines[:-1], expect_count=head["count"], expect_head=head["hash"])
    assert result.ok, result.problem
    r = await client.get("/api/v1/reports/access", headers=auth, params={"format": "csv"})
    assert r.status == 200 and "E100" in await r.text()
    r = await client.get("/api/v1/reports/access", headers=auth, params={"format": "xml"})
    assert r.status == 400
    exports = [x for x in rt.audit.records() if x["kind"] in ("audit_export", "access_report")]
    assert [x["actor"] for x in exports] == ["api-token=t-auditor role=auditor addr=127.0.0.1"] * 2
