"""Access requests on the API (issue 18): signed-in people (OIDC sessions as sign-in leaves them:
e-mail, roles, HR link) request, approve, deny, revoke and take break-glass access; the approval
policy answers 403 with its reason; each person sees their own requests; the catalogue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml import config as config_mod
from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.web import add_routes
from jml.web.auth import CSRF_HEADER, SESSION_COOKIE, new_api_token, token_hash
from jml.web.state import WEB
from tests.integration.test_web import NOW, TOKEN, _config, _seed

ANA, BOB = "ana.smith@acme.example", "bob.jones@acme.example"
REQ = "/api/v1/access/requests"


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    cfg = _config(tmp_path).model_copy(update={"access": config_mod.AccessConfig.model_validate({
        "catalogue": {"demo": {"group:Prod Admins": {"owner": BOB, "risk": "high", "max_duration": "7d"}}},
        "jit": {"max_duration": "4h", "roles": ["operator"]}})})
    rt = Runtime(cfg, clock=lambda: NOW)
    _seed(rt)
    tokens = {}
    for role in ("approver", "viewer"):
        secret = new_api_token()
        assert rt.store.identities.create_token(f"t-{role}", token_hash(secret), [role], created_by="test", now=NOW,
                                                expires_at=None)
        tokens[role] = {"Authorization": f"Bearer {secret}"}
    ctx = ServiceContext(rt=rt, engine=build_engine(rt), started_at=NOW)
    app = web.Application()
    add_routes(app, ctx)
    async with TestClient(TestServer(app)) as client:
        gate = app[WEB].gate
        sessions = {}
        for email, eid, name, roles in ((ANA, "E100", "Ana", {"viewer"}), (BOB, "E200", "Bob", {"viewer"}),
                                        (BOB, "E200", "BobOnCall", {"operator"})):
            s = gate.open_session("", kind="oidc", subject=f"sub-{eid}", email=email, name=name,
                                  roles=frozenset(roles), person=eid)
            sessions[name] = {"Cookie": f"{SESSION_COOKIE}={s.id}", CSRF_HEADER: s.csrf,
                              "Origin": str(client.make_url("")).rstrip("/")}
        yield {"client": client, "rt": rt, "tokens": tokens, "sessions": sessions}
        for task in list(ctx.engine._background):
            task.cancel()
        await asyncio.sleep(0)
    rt.store.close()


async def test_request_two_approvals_on_the_api(env: dict[str, Any]) -> None:
    client, rt, tokens, s = env["client"], env["rt"], env["tokens"], env["sessions"]
    body = {"employee_id": "E100", "connector": "demo", "grant": "group:Prod Admins", "reason": "incident 42",
            "duration": "8h"}
    r = await client.post(REQ, json=body, headers=s["Ana"])
    assert r.status == 201, await r.text()
    req = await r.json()
    rid = req["id"]
    assert (req["state"], req["required"], req["duration_seconds"]) == ("pending", 2, 8 * 3600)
    # Ana may not ask for Bob (not herself, not her report, no `request` right).
    r = await client.post(REQ, json={**body, "employee_id": "E200"}, headers=s["Ana"])
    assert r.status == 403 and "yourself or your reports" in (await r.json())["error"]
    r = await client.post(f"{REQ}/{rid}/approve", headers=s["Ana"])
    assert r.status == 403 and "you requested it" in (await r.json())["error"]
    r = await client.post(f"{REQ}/{rid}/approve", headers=s["Bob"])  # the owner
    assert r.status == 202 and (await r.json())["state"] == "pending"
    r = await client.post(f"{REQ}/{rid}/approve", headers=s["Bob"])
    assert r.status == 403 and "already approved" in (await r.json())["error"]
    r = await client.post(f"{REQ}/{rid}/approve", headers=tokens["viewer"])  # nobody to this request
    assert r.status == 403
    r = await client.post(f"{REQ}/{rid}/approve", headers=tokens["approver"])
    assert r.status == 200, await r.text()
    done = await r.json()
    assert done["state"] == "active" and done["plan_ids"]
    assert [a["basis"] for a in done["approvers"]] == ["owner", "approver"]
    # The plan for Ana adds the group, saying why (the workers, not run here, push it).
    ops = [q.op for q in rt.outbox.plan_ops(done["plan_ids"][0])]
    assert ("add_member", "group:Prod Admins", f"request:{rid}") in [
        (o.action.value, o.detail.get("group"), o.detail.get("rule")) for o in ops]
    # Who sees what.
    assert [x["id"] for x in (await (await client.get(REQ, headers=s["Ana"])).json())["requests"]] == [rid]
    assert (await (await client.get(REQ, headers=tokens["viewer"])).json())["requests"] == []
    assert len((await (await client.get(f"{REQ}?state=active", headers=tokens["approver"])).json())["requests"]) == 1
    assert (await client.get(f"{REQ}?state=bogus", headers=tokens["approver"])).status == 400
    # The holder may give it back.
    r = await client.post(f"{REQ}/{rid}/revoke", json={"reason": "done"}, headers=s["Ana"])
    assert r.status == 200 and (await r.json())["state"] == "revoked"
    r = await client.post(f"{REQ}/ar-nope/approve", headers=s["Bob"])
    assert r.status == 404


@pytest.mark.parametrize(("body", "words"), [
    ({"employee_id": "E100", "connector": "demo", "grant": "g"}, "`reason` is required"),
    ({"employee_id": "E100", "connector": "demo", "grant": "g", "reason": "r", "extra": 1}, "unknown field(s): extra"),
    ({"employee_id": "E100", "connector": "nowhere", "grant": "g", "reason": "r"}, "connector: unknown connector"),
    ({"employee_id": "E100", "connector": "demo", "grant": "group:Prod Admins", "reason": "r", "duration": "30d"},
     "maximum 7d"),
    ({"employee_id": "E100", "connector": "demo", "grant": "g", "reason": "r", "duration": "soon"}, "`duration`"),
    ({"employee_id": "E999", "connector": "demo", "grant": "g", "reason": "r"}, "employee_id: unknown employee"),
])
async def test_bad_requests_name_the_field(env: dict[str, Any], body: dict[str, Any], words: str) -> None:
    r = await env["client"].post(REQ, json=body, headers=env["sessions"]["Ana"])
    assert r.status == 400
    assert words in (await r.json())["error"]


async def test_jit_and_catalogue(env: dict[str, Any]) -> None:
    client, s = env["client"], env["sessions"]
    jit = {"connector": "demo", "grant": "group:Prod Admins", "reason": "pager 7", "hours": 2}
    r = await client.post("/api/v1/access/jit", json=jit, headers=s["Bob"])  # a viewer
    assert r.status == 403 and "access.jit.roles" in (await r.json())["error"]
    r = await client.post("/api/v1/access/jit", json={**jit, "hours": 5}, headers=s["BobOnCall"])
    assert r.status == 400
    r = await client.post("/api/v1/access/jit", json=jit, headers=s["BobOnCall"])
    assert r.status == 201, await r.text()
    got = await r.json()
    assert got["kind"] == "jit" and got["employee_id"] == "E200" and got["state"] == "active" and got["plan_ids"]
    cat = await (await client.get("/api/v1/catalogue", headers=env["tokens"]["viewer"])).json()
    by = {(e["connector"], e["grant"]): e for e in cat["entitlements"]}
    assert by[("demo", "group:Prod Admins")]["risk"] == "high"
    assert by[("demo", "group:Engineering")]["birthright"] and by[("demo", "group:Engineering")]["managed"]


async def test_pages_request_approve_and_the_person_page(env: dict[str, Any]) -> None:
    client, rt, tokens, s = env["client"], env["rt"], env["tokens"], env["sessions"]
    form = {"employee_id": "E100", "connector": "demo", "grant": "group:Prod Admins", "reason": "incident 42",
            "duration": "8h"}
    r = await client.post("/access/request", data={**form, "csrf_token": _csrf(s["Ana"])}, headers=s["Ana"],
                          allow_redirects=False)
    assert r.status == 303, await r.text()
    rid = rt.store.access.find()[0].id
    assert rid in r.headers["Location"]
    # Bob (the owner) sees Approve on /access; Ana (the requester) does not.
    bob_page = await (await client.get("/access", headers=s["Bob"])).text()
    ana_page = await (await client.get("/access", headers=s["Ana"])).text()
    assert f'id="approve-{rid}"' in bob_page and f'id="approve-{rid}"' not in ana_page and rid in ana_page
    r = await client.post(f"/access/{rid}/approve", data={"csrf_token": _csrf(s["Ana"])}, headers=s["Ana"],
                          allow_redirects=False)
    assert r.status == 403 and "you requested it" in await r.text()
    r = await client.post(f"/access/{rid}/approve", data={"csrf_token": _csrf(s["Bob"])}, headers=s["Bob"],
                          allow_redirects=False)
    assert r.status == 303 and "1%20of%202" in r.headers["Location"]
    r = await client.post(f"/access/{rid}/approve", headers=tokens["approver"], allow_redirects=False)
    assert r.status == 303 and "approved" in r.headers["Location"]
    # The person page says why Ana holds it, who asked and who approved, until when.
    secret = new_api_token()
    rt.store.identities.create_token("t-hr", token_hash(secret), ["hr"], created_by="test", now=NOW, expires_at=None)
    text = await (await client.get("/people/E100", headers={"Authorization": f"Bearer {secret}"})).text()
    section = text[text.index('id="requested-access"'):]
    assert rid in section and "incident 42" in section and "person sub=sub-E100" in section
    assert "(owner," in section and "(approver," in section and "active" in section
    # The status page lists it among access beyond the rules, with its expiry.
    status = await (await client.get("/", headers=tokens["viewer"])).text()
    card = status[status.index('id="access-beyond-rules"'):]
    assert rid in card[:card.index("</section>")] and "active" in card[:card.index("</section>")]


def _csrf(headers: dict[str, str]) -> str:
    return headers[CSRF_HEADER]
