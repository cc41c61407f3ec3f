"""The signed-in web layer over a real SQLite store: sign-in, CSRF, the API, the HR view, OpenAPI.

aiohttp's TestServer/TestClient drive `jml.web.add_routes` on a bare app; the ServiceContext
is built as `jml serve` builds it (a Runtime over a temp config, an Engine that is not running).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from jml import config as config_mod
from jml.context import ServiceContext
from jml.model import Action, Lifecycle, Operation, Person, PersonState, Phase, Priority, Status
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.store.repo import PersonSave
from jml.store.tables import AccountRow, GrantRow, SlaClockRow
from jml.web import add_routes

TOKEN = "adm-" + "s3cr3t-token-value-0123456789"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
RT = web.AppKey("test_rt", Runtime)


def _config(tmp: Path) -> config_mod.Config:
    return config_mod.from_dict({
        "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
        "server": {"admin_token_env": "JML_TEST_ADMIN_TOKEN"},
        "sla": {"deprovision": "10m"},
        "policy": {"rules": [{"name": "everyone", "when": {"status": ["Active", "Leave"]},
                              "grant": {"demo": ["All Staff"]}},
                             {"name": "engineering", "when": {"department": "Engineering"},
                              "grant": {"demo": ["Engineering"]}}]},
        "connectors": {"demo": {"type": "scim", "url": "http://127.0.0.1:9/v2/", "token_env": "JML_TEST_SCIM"},
                       "chat": {"type": "scim", "url": "http://127.0.0.1:9/v2/", "token_env": "JML_TEST_SCIM",
                                "sla": "5m"}},
    }, tmp)


def _seed(rt: Runtime) -> None:
    people = [
        Person("E100", Status.ACTIVE, first_name="Ana", last_name="Smith", work_email="ana.smith@acme.example",
               department="Engineering", job_title="Engineer", hire_date=dt.date(2020, 1, 6)),
        Person("E200", Status.ACTIVE, first_name="Bob", last_name="Jones", work_email="bob.jones@acme.example",
               department="Sales", hire_date=dt.date(2021, 3, 1)),
        Person("E300", Status.TERMINATED, first_name="Cy", last_name="Leaver", work_email="cy@acme.example",
               department="Sales", termination_date=dt.date(2026, 11, 23)),
    ]
    saves = [PersonSave(PersonState(p.employee_id, p), f"h{p.employee_id}",
                        Lifecycle(Phase.LEAVER if p.status is Status.TERMINATED else Phase.ACTIVE,
                                  effective_termination=NOW - dt.timedelta(minutes=3)
                                  if p.status is Status.TERMINATED else None))
             for p in people]
    rt.store.save_people(saves, NOW)
    A = AccountRow.__table__  # type: ignore[attr-defined]
    G = GrantRow.__table__  # type: ignore[attr-defined]
    SC = SlaClockRow.__table__  # type: ignore[attr-defined]
    since = NOW - dt.timedelta(days=30)
    with rt.store.engine.begin() as conn:
        conn.execute(A.insert(), [
            {"connector": "demo", "employee_id": "E100", "username": "ana.smith@acme.example", "active": True,
             "deleted": False, "attributes": {}, "remote_id": "u1", "created_at": since, "updated_at": since},
            {"connector": "chat", "employee_id": "E100", "username": "ana.smith", "active": True,
             "deleted": False, "attributes": {}, "remote_id": "c1", "created_at": since, "updated_at": since},
            {"connector": "demo", "employee_id": "E300", "username": "cy@acme.example", "active": True,
             "deleted": False, "attributes": {}, "remote_id": "u3", "created_at": since, "updated_at": since},
        ])
        conn.execute(G.insert(), [
            {"connector": "demo", "employee_id": "E100", "name": "All Staff", "rule": "everyone", "since": since},
            {"connector": "demo", "employee_id": "E100", "name": "Engineering", "rule": "engineering",
             "since": since},
        ])
        conn.execute(SC.insert(), [
            # In flight, 7 minutes left.
            {"connector": "demo", "employee_id": "E300", "started_at": NOW - dt.timedelta(minutes=3),
             "deadline": NOW + dt.timedelta(minutes=7), "verified_at": None, "breached": False,
             "predicted_breach": False},
            # Past its deadline, not verified: a breach.
            {"connector": "chat", "employee_id": "E300", "started_at": NOW - dt.timedelta(minutes=30),
             "deadline": NOW - dt.timedelta(minutes=25), "verified_at": None, "breached": True,
             "predicted_breach": True},
            # Done earlier: plotted.
            {"connector": "demo", "employee_id": "E200", "started_at": NOW - dt.timedelta(days=1, minutes=5),
             "deadline": NOW - dt.timedelta(days=1) + dt.timedelta(minutes=5),
             "verified_at": NOW - dt.timedelta(days=1, minutes=2), "breached": False, "predicted_breach": False},
        ])
    rt.outbox.save_plan("plan-held-1", [Operation("demo", Action.DEACTIVATE, "E200", {"username": "bob"},
                                                  Priority.LEAVER)],
                        held=True, origin="export", reasons=["would deactivate 50% of demo (limit 5%)"],
                        summary={"deactivate": 1}, policy_hash=None, export_id=None, now=NOW)


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient[Any, Any]]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    rt = Runtime(_config(tmp_path), clock=lambda: NOW)
    _seed(rt)
    ctx = ServiceContext(rt=rt, engine=build_engine(rt), started_at=NOW)
    app = web.Application()
    add_routes(app, ctx)
    app[RT] = rt
    async with TestClient(TestServer(app)) as c:
        yield c
    rt.store.close()


def _rt(client: TestClient[Any, Any]) -> Runtime:
    assert client.app is not None
    rt: Runtime = client.app[RT]
    return rt


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def _login(client: TestClient[Any, Any]) -> str:
    """Sign in through the form; returns the session's CSRF token (from the status page)."""
    r = await client.get("/login")
    assert r.status == 200
    login_csrf = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
    assert login_csrf
    r = await client.post("/login", data={"token": TOKEN, "csrf_token": login_csrf.group(1), "next": "/"},
                          allow_redirects=False)
    assert r.status == 303, await r.text()
    assert r.headers["Location"] == "/"
    cookie = r.headers.getall("Set-Cookie")
    session = [c for c in cookie if c.startswith("jml_session=")]
    assert session and "HttpOnly" in session[0] and "SameSite=Strict" in session[0] and "Max-Age=" in session[0]
    page = await (await client.get("/")).text()
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert m and m.group(1)
    return m.group(1)


# ---- sign-in ---------------------------------------------------------------------------------
async def test_unauthenticated_page_redirects_to_login(client: TestClient[Any, Any]) -> None:
    for path in ("/", "/people?q=ana", "/people/E100"):
        r = await client.get(path, allow_redirects=False)
        assert r.status == 303
        assert r.headers["Location"].startswith("/login?next=")


async def test_unauthenticated_api_is_401_json(client: TestClient[Any, Any]) -> None:
    for method, path in (("GET", "/api/v1/status"), ("POST", "/api/v1/offboard"),
                         ("POST", "/api/v1/plans/plan-held-1/approve"), ("GET", "/api/v1/people/E100/progress")):
        r = await client.request(method, path, json={})
        assert r.status == 401, path
        assert "error" in await r.json()
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.get("/api/v1/status", headers={"Authorization": "Bearer wrong-token-value"})
    assert r.status == 401


async def test_login_flow_sets_session_cookie_and_logout_ends_it(client: TestClient[Any, Any]) -> None:
    csrf = await _login(client)
    r = await client.get("/", allow_redirects=False)
    assert r.status == 200
    assert (await client.get("/api/v1/status")).status == 200  # the cookie signs the API in too
    r = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 303
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_wrong_token_and_missing_login_csrf_are_refused(client: TestClient[Any, Any]) -> None:
    r = await client.get("/login")
    tok = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
    assert tok
    r = await client.post("/login", data={"token": "not-the-token", "csrf_token": tok.group(1)},
                          allow_redirects=False)
    assert r.status == 401
    assert "jml_session" not in r.cookies
    client.session.cookie_jar.clear()
    r = await client.post("/login", data={"token": TOKEN, "csrf_token": tok.group(1)}, allow_redirects=False)
    assert r.status == 403


async def test_login_next_is_never_an_open_redirect(client: TestClient[Any, Any]) -> None:
    r = await client.get("/login")
    tok = re.search(r'name="csrf_token" value="([^"]+)"', await r.text())
    assert tok
    r = await client.post("/login", data={"token": TOKEN, "csrf_token": tok.group(1),
                                          "next": "//evil.example/x"}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/"


# ---- CSRF and origin --------------------------------------------------------------------------
async def test_form_without_or_with_wrong_csrf_is_403_and_changes_nothing(client: TestClient[Any, Any]) -> None:
    await _login(client)
    rt = _rt(client)
    for data in ({}, {"csrf_token": "forged"}):
        r = await client.post("/plans/plan-held-1/approve", data=data, allow_redirects=False)
        assert r.status == 403
    info = rt.outbox.plan("plan-held-1")
    assert info is not None and info.state == "held"


async def test_origin_mismatch_is_403(client: TestClient[Any, Any]) -> None:
    csrf = await _login(client)
    r = await client.post("/plans/plan-held-1/approve", data={"csrf_token": csrf},
                          headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert r.status == 403
    r = await client.post("/plans/plan-held-1/approve", data={"csrf_token": csrf},
                          headers={"Referer": "https://evil.example/page"}, allow_redirects=False)
    assert r.status == 403
    info = _rt(client).outbox.plan("plan-held-1")
    assert info is not None and info.state == "held"


async def test_cookie_api_post_needs_csrf_header(client: TestClient[Any, Any]) -> None:
    csrf = await _login(client)
    r = await client.post("/api/v1/plans/plan-held-1/approve")
    assert r.status == 403
    info = _rt(client).outbox.plan("plan-held-1")
    assert info is not None and info.state == "held"
    r = await client.post("/api/v1/plans/plan-held-1/approve", headers={"X-CSRF-Token": csrf})
    assert r.status == 200


# ---- actions ---------------------------------------------------------------------------------
async def test_approve_held_plan_via_form(client: TestClient[Any, Any]) -> None:
    csrf = await _login(client)
    page = await (await client.get("/")).text()
    assert "plan-held-1" in page and "would deactivate 50% of demo" in page
    host = f"http://{client.server.host}:{client.server.port}"
    r = await client.post("/plans/plan-held-1/approve", data={"csrf_token": csrf}, headers={"Origin": host},
                          allow_redirects=False)
    assert r.status == 303
    rt = _rt(client)
    info = rt.outbox.plan("plan-held-1")
    # The break-glass admin token is the actor, named as such with the client's address.
    actor = "break-glass via=session role=admin addr=127.0.0.1"
    assert info is not None and info.state == "queued" and info.decided_by == actor
    assert [q.op.employee_id for q in rt.outbox.ops(["pending"])] == ["E200"]
    assert any(rec["kind"] == "approval" and rec["actor"] == actor for rec in rt.audit.records())
    assert any(rec["kind"] == "break_glass" and rec["data"]["path"] == "/plans/plan-held-1/approve"
               for rec in rt.audit.records())
    r = await client.post("/plans/plan-held-1/approve", data={"csrf_token": csrf}, allow_redirects=False)
    assert r.status == 409  # no longer held


async def test_bearer_api(client: TestClient[Any, Any]) -> None:
    r = await client.get("/api/v1/status", headers=BEARER)
    assert r.status == 200
    doc = await r.json()
    assert doc["held_plans"][0]["plan_id"] == "plan-held-1"
    assert set(doc["connectors"]) == {"demo", "chat"}
    r = await client.post("/api/v1/plans/nope/approve", headers=BEARER)
    assert r.status == 404
    r = await client.post("/api/v1/plans/plan-held-1/approve", headers=BEARER)
    assert r.status == 200 and (await r.json())["state"] == "queued"
    r = await client.get("/api/v1/people/E300/progress", headers=BEARER)
    assert r.status == 200
    prog = await r.json()
    by = {c["connector"]: c for c in prog["connectors"]}
    assert by["demo"]["state"] == "in_progress" and by["demo"]["seconds_left"] == 420
    assert by["chat"]["state"] == "breached" and by["chat"]["breached"] is True
    assert (await client.get("/api/v1/people/NOBODY/progress", headers=BEARER)).status == 404


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1,2]", b'{"employee_id": 5, "reason": "x"}', b'{"employee_id": "E100"}',
    b'{"employee_id": "E100", "reason": "   "}', b'{"employee_id": "E100", "reason": "x", "at": "yesterday"}',
    b'{"employee_id": "E100", "reason": "x", "undo": "yes"}', b'{"employee_id": "E100", "reason": "x", "extra": 1}',
    b'{"employee_id": "' + b"x" * 200 + b'", "reason": "x"}', b'{"employee_id": "E\\u0000", "reason": "x"}',
    b'{"employee_id": "E100", "reason": "x", "at": "0000-01-01T00:00:00Z"}',
])
async def test_malformed_offboard_is_400(client: TestClient[Any, Any], body: bytes) -> None:
    r = await client.post("/api/v1/offboard", data=body, headers={**BEARER, "Content-Type": "application/json"})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]


async def test_offboard_api_unknown_person_is_404(client: TestClient[Any, Any]) -> None:
    r = await client.post("/api/v1/offboard", json={"employee_id": "NOBODY", "reason": "test"}, headers=BEARER)
    assert r.status == 404, await r.text()
    assert "NOBODY" in (await r.json())["error"]


async def test_offboard_form_has_a_confirmation_step(client: TestClient[Any, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    async def fake_offboard(rt: Runtime, employee_id: str, *, reason: str, at: dt.datetime | None, actor: str,
                            undo: bool) -> dict[str, Any]:
        calls.append({"employee_id": employee_id, "reason": reason, "actor": actor, "undo": undo})
        return {"plan_id": "p-off"}

    monkeypatch.setattr("jml.offboard.offboard", fake_offboard)
    csrf = await _login(client)
    r = await client.post("/people/E100/offboard", data={"csrf_token": csrf, "reason": "resigned"},
                          allow_redirects=False)
    assert r.status == 200
    text = await r.text()
    assert "Offboard now?" in text and 'name="confirm" value="yes"' in text and "ana.smith" in text
    assert calls == []
    r = await client.post("/people/E100/offboard", data={"csrf_token": csrf, "reason": "resigned",
                                                        "confirm": "yes"}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/people/E100?done=offboarded"
    assert calls == [{"employee_id": "E100", "reason": "resigned",
                      "actor": "break-glass via=session role=admin addr=127.0.0.1", "undo": False}]
    r = await client.post("/people/E100/offboard", data={"csrf_token": csrf, "confirm": "yes"},
                          allow_redirects=False)
    assert r.status == 400  # a reason is required
    r = await client.post("/api/v1/offboard", json={"employee_id": "E100", "reason": "api", "undo": True},
                          headers=BEARER)
    assert r.status == 202
    assert (await r.json())["progress"] == "/api/v1/people/E100/progress"
    assert calls[-1]["actor"] == "break-glass via=api role=admin addr=127.0.0.1" and calls[-1]["undo"] is True


# ---- pages -----------------------------------------------------------------------------------
async def test_find_person_and_see_access_with_rules(client: TestClient[Any, Any]) -> None:
    await _login(client)
    for q in ("ana", "SMITH", "ana.smith@acme", "E100"):
        text = await (await client.get("/people", params={"q": q})).text()
        assert 'href="/people/E100"' in text, q
        assert "/people/E200" not in text
    text = await (await client.get("/people/E100")).text()
    assert "Ana Smith" in text and "Engineering" in text and "engineering" in text and "everyone" in text
    assert "ana.smith" in text  # the chat account
    assert (await client.get("/people/NOBODY")).status == 404
    assert (await client.get("/people", params={"q": "x" * 500})).status == 400


async def test_status_page_shows_countdown_breach_held_plan_and_plot(client: TestClient[Any, Any]) -> None:
    await _login(client)
    r = await client.get("/")
    text = await r.text()
    assert "7m 00s left" in text  # E300 in demo
    assert "BREACHED" in text  # E300 in chat
    assert "Cy Leaver" in text
    assert "Approve plan plan-held-1" in text
    assert "<svg" in text and "SLA 10m 00s" in text
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert r.headers["Cache-Control"] == "no-store"


async def test_no_secret_in_any_page(client: TestClient[Any, Any]) -> None:
    await _login(client)
    pages = ["/", "/people?q=a", "/people/E100", "/people/E300", "/login", "/api/v1/status", "/api/openapi.json",
             "/api/v1/people/E300/progress"]
    for path in pages:
        r = await client.get(path)
        body = await r.text()
        assert TOKEN not in body, path
        assert "scim-token-not-used" not in body, path
        assert all(TOKEN not in v for v in r.headers.values()), path


async def test_openapi_document_is_valid_and_open(client: TestClient[Any, Any]) -> None:
    r = await client.get("/api/openapi.json")
    assert r.status == 200
    doc = await r.json()
    validate(doc)
    paths = doc["paths"]
    for p in ("/healthz", "/readyz", "/metrics", "/webhooks/okta", "/webhooks/hr", "/", "/login", "/logout",
              "/people", "/people/{employee_id}", "/people/{employee_id}/offboard", "/plans/{plan_id}/approve",
              "/api/v1/status", "/api/v1/offboard", "/api/v1/plans/{plan_id}/approve",
              "/api/v1/people/{employee_id}/progress", "/api/openapi.json"):
        assert p in paths, p
    assert set(paths["/webhooks/okta"]) == {"get", "post"}
    assert {"bearerAuth", "sessionCookie"} <= set(doc["components"]["securitySchemes"])
    body = doc["components"]["schemas"]["OffboardRequest"]
    assert body["required"] == ["employee_id", "reason"] and body["properties"]["reason"]["maxLength"] == 500


async def test_static_assets_are_open(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/static/style.css")).status == 200
    assert (await client.get("/static/app.js")).status == 200


async def test_real_offboard_through_the_api_queues_leaver_work(client: TestClient[Any, Any]) -> None:
    r = await client.post("/api/v1/offboard", json={"employee_id": "E100", "reason": "resigned (HR-1)"},
                          headers=BEARER)
    assert r.status == 202, await r.text()
    doc = await r.json()
    assert doc["employee_id"] == "E100" and doc["changed"] is True and doc["held"] is False
    rt = _rt(client)
    state = rt.store.load_states(["E100"])["E100"]
    assert state.override is not None and state.override.reason == "resigned (HR-1)"
    assert state.override.actor == "break-glass via=api role=admin addr=127.0.0.1"
    ops = rt.outbox.ops(["pending"])
    assert ops and all(q.op.priority is Priority.LEAVER for q in ops if q.op.employee_id == "E100")
    prog = await (await client.get("/api/v1/people/E100/progress", headers=BEARER)).json()
    assert prog["leaver"] is True
    assert {c["connector"] for c in prog["connectors"]} == {"demo", "chat"}
    assert all(c["state"] == "in_progress" and c["pending"] > 0 for c in prog["connectors"])
    r = await client.post("/api/v1/offboard", json={"employee_id": "E100", "reason": "mistake", "undo": True},
                          headers=BEARER)
    assert r.status == 202
    assert rt.store.load_states(["E100"])["E100"].override is None


async def test_session_ends_when_the_admin_token_rotates(client: TestClient[Any, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await _login(client)
    assert (await client.get("/", allow_redirects=False)).status == 200
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN + "-rotated")
    assert (await client.get("/", allow_redirects=False)).status == 303
    assert (await client.get("/api/v1/status", headers=BEARER)).status == 401


@pytest.mark.parametrize("content_type,body", [
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken"),
    ("application/x-www-form-urlencoded", b"%%%&&&=%zz"),
    ("application/json", b"{not a form"),
    ("application/x-www-form-urlencoded", b"reason=" + b"r" * 600 + b"&confirm=yes"),
    ("application/x-www-form-urlencoded", b"reason=%00bad&confirm=yes"),
])
async def test_malformed_forms_never_5xx(client: TestClient[Any, Any], content_type: str, body: bytes) -> None:
    for path in ("/people/E100/offboard", "/plans/plan-held-1/approve", "/login", "/logout"):
        r = await client.post(path, data=body, headers={**BEARER, "Content-Type": content_type},
                              allow_redirects=False)
        assert r.status < 500, (path, r.status, await r.text())
    info = _rt(client).outbox.plan("plan-held-1")
    assert info is not None
