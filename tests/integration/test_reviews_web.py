"""Access reviews on the web (issue 18): signed-in reviewers see and decide only their own items,
never their own access; auditors start campaigns and download the evidence; progress is a gauge.

People sign in as the OIDC sign-in leaves them (a session with e-mail, roles and HR link); the
admin and the auditor use scoped API tokens.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml import config as config_mod
from jml import metrics, notify, reviews
from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.store.tables import GrantRow
from jml.web import add_routes
from jml.web.auth import CSRF_HEADER, SESSION_COOKIE, new_api_token, token_hash
from jml.web.state import WEB
from tests.integration.test_notify import Mailbox, _free_port
from tests.integration.test_web import NOW, TOKEN, _config, _seed

ANA, BOB = "ana.smith@acme.example", "bob.jones@acme.example"


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    # Ana owns the Engineering group she is in herself; Bob reviews everything else.
    cfg = _config(tmp_path).model_copy(update={
        "access": config_mod.AccessConfig.model_validate({"catalogue": {"demo": {"Engineering": {"owner": ANA}}}}),
        "reviews": config_mod.ReviewsConfig(default_reviewer=BOB)})
    rt = Runtime(cfg, clock=lambda: NOW)
    _seed(rt)
    tokens = {}
    for role in ("admin", "auditor", "viewer"):
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
        for email, eid, name in ((ANA, "E100", "Ana"), (BOB, "E200", "Bob")):
            s = gate.open_session("", kind="oidc", subject=f"sub-{eid}", email=email, name=name,
                                  roles=frozenset({"viewer"}), person=eid)
            sessions[name] = {"Cookie": f"{SESSION_COOKIE}={s.id}", CSRF_HEADER: s.csrf,
                              "Origin": str(client.make_url("")).rstrip("/")}
        yield {"client": client, "rt": rt, "tokens": tokens, "sessions": sessions, "ctx": ctx}
        # The read-back of a revocation waits for workers this test does not run.
        for task in list(ctx.engine._background):
            task.cancel()
        await asyncio.sleep(0)
    rt.store.close()


async def test_reviewers_decide_their_own_items_only(env: dict[str, Any]) -> None:
    client, rt, tokens, s = env["client"], env["rt"], env["tokens"], env["sessions"]
    # Only auditors (and admins) start campaigns.
    r = await client.post("/api/v1/reviews", json={"by": "app"}, headers=tokens["viewer"])
    assert r.status == 403
    r = await client.post("/api/v1/reviews", json={"by": "team"}, headers=tokens["auditor"])
    assert r.status == 400 and "`by`" in (await r.json())["error"]
    r = await client.post("/api/v1/reviews", json={"by": "app", "due": "7d", "name": "Q4"}, headers=tokens["auditor"])
    assert r.status == 201, await r.text()
    cid = (await r.json())["campaign"]["id"]

    everything = (await (await client.get(f"/api/v1/reviews/{cid}", headers=tokens["admin"])).json())["items"]
    keys = {(i["connector"], i["employee_id"], i["entitlement"]): i for i in everything}
    assert set(keys) == {("demo", "E100", "(account)"), ("demo", "E100", "All Staff"),
                         ("demo", "E100", "Engineering"), ("chat", "E100", "(account)"),
                         ("demo", "E300", "(account)")}
    assert keys[("demo", "E100", "Engineering")]["reviewer"] == ANA
    assert keys[("demo", "E300", "(account)")]["why"] == "none"  # a leaver's account: nothing explains it

    # Each reviewer sees their own items; a viewer token (no e-mail) sees none.
    ana = (await (await client.get(f"/api/v1/reviews/{cid}", headers=s["Ana"])).json())["items"]
    bob = (await (await client.get(f"/api/v1/reviews/{cid}", headers=s["Bob"])).json())["items"]
    none = (await (await client.get(f"/api/v1/reviews/{cid}", headers=tokens["viewer"])).json())["items"]
    assert [i["entitlement"] for i in ana] == ["Engineering"] and len(bob) == 4 and none == []

    own = keys[("demo", "E100", "Engineering")]["item"]
    r = await client.post(f"/api/v1/reviews/{cid}/decisions", json={"items": [own], "decision": "keep"},
                          headers=s["Ana"])
    assert r.status == 403 and "own access" in (await r.json())["error"]
    r = await client.post(f"/api/v1/reviews/{cid}/decisions",
                          json={"items": [keys[("demo", "E300", "(account)")]["item"]], "decision": "keep"},
                          headers=s["Ana"])
    assert r.status == 403 and "another reviewer" in (await r.json())["error"]
    r = await client.post(f"/api/v1/reviews/{cid}/decisions", json={"items": ["x"], "decision": "keep"},
                          headers=s["Bob"])
    assert r.status == 400 and "`items`" in (await r.json())["error"]
    # Without the session's CSRF header a browser session's POST is refused.
    r = await client.post(f"/api/v1/reviews/{cid}/decisions", json={"items": [own], "decision": "keep"},
                          headers={k: v for k, v in s["Bob"].items() if k != CSRF_HEADER})
    assert r.status == 403

    # The page: Ana's own item says why she cannot decide it; Bob gets the buttons.
    page = await (await client.get(f"/reviews/{cid}", headers=s["Ana"])).text()
    assert "nobody may decide on their own access" in page and 'value="keep"' not in page
    page = await (await client.get(f"/reviews/{cid}", headers=s["Bob"])).text()
    assert page.count('value="revoke"') == 4
    listing = await (await client.get("/reviews", headers=s["Bob"])).text()
    assert "Q4" in listing and "0/4" in listing

    # Bob keeps one by the form, revokes the leaver's account and All Staff by the API.
    leaver = keys[("demo", "E300", "(account)")]["item"]
    staff = keys[("demo", "E100", "All Staff")]["item"]
    form = {"item": str(keys[("chat", "E100", "(account)")]["item"]), "decision": "keep", "reason": "on call",
            "csrf_token": s["Bob"][CSRF_HEADER]}
    r = await client.post(f"/reviews/{cid}/decide", data=form, headers=s["Bob"], allow_redirects=False)
    assert r.status == 303, await r.text()
    r = await client.post(f"/api/v1/reviews/{cid}/decisions",
                          json={"items": [leaver, staff], "decision": "revoke", "reason": "left / not needed"},
                          headers=s["Bob"])
    assert r.status == 202, await r.text()
    out = await r.json()
    plan = rt.outbox.plan(out["plan_id"])
    assert plan is not None and plan.origin == "review" and plan.state == "held"
    assert sorted(out["decided"]) == sorted([leaver, staff]) and out["plan_id"]
    # The revocations go through the guard like any plan: deactivating one of the two demo accounts is
    # more than the default limit lets through, so an approver must approve it.
    assert out["held"] is True
    ops = {(q.op.action.value, q.op.employee_id, q.op.detail.get("group"))
           for q in rt.outbox.ops(["pending", "held"], plan_id=out["plan_id"])}
    assert ops == {("deactivate", "E300", None), ("remove_member", "E100", "All Staff")}
    assert [(d.employee_id, d.connector, d.grant) for d in rt.store.access.denials()] == [
        ("E100", "demo", "All Staff"), ("E300", "demo", "(account)")]
    # An admin decides what is left, Ana's own item included (she could not).
    rest = [keys[("demo", "E100", "(account)")]["item"], own]
    r = await client.post(f"/api/v1/reviews/{cid}/decisions", json={"items": rest, "decision": "keep"},
                          headers=tokens["admin"])
    assert r.status == 200 and sorted((await r.json())["decided"]) == sorted(rest)
    assert metrics.REGISTRY.get_sample_value("jml_review_items", {"campaign": str(cid), "state": "kept"}) == 3
    assert metrics.REGISTRY.get_sample_value("jml_review_items", {"campaign": str(cid), "state": "revoking"}) == 2

    # Evidence: auditors only; every row decided and tied to the audit trail.
    assert (await client.get(f"/api/v1/reviews/{cid}/export", headers=s["Bob"])).status == 403
    r = await client.get(f"/api/v1/reviews/{cid}/export?format=csv", headers=tokens["auditor"])
    assert r.status == 200 and r.headers["Content-Disposition"].endswith(f'review-{cid}.csv"')
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert len(rows) == 5 and all(row["decision"] and row["audit_seq"] and row["audit_hash"] for row in rows)
    chain = {rec["seq"]: rec for rec in rt.audit.records()}
    for row in rows:
        rec = chain[int(row["audit_seq"])]
        assert rec["hash"] == row["audit_hash"] and rec["data"]["item"] == int(row["item"])
        assert re.search(r"email=bob\.jones@acme\.example|api-token=t-admin", rec["actor"])
    assert rt.audit.verify().ok


async def test_requested_access_is_explained_by_its_request_and_revoking_ends_it(env: dict[str, Any]) -> None:
    client, rt, tokens = env["client"], env["rt"], env["tokens"]
    # An approved request gives Ana Prod Admins in demo; jml pushed it (the grant is recorded).
    rt.store.access.open("ar-7", kind="request", employee_id="E100", connector="demo", grant="group:Prod Admins",
                         reason="on-call", duration=dt.timedelta(days=7), requested_by="person:sub-E100",
                         requester="ana", required=1, now=NOW - dt.timedelta(days=1), state="active",
                         expires_at=NOW + dt.timedelta(days=6))
    with rt.store.engine.begin() as conn:
        conn.execute(GrantRow.__table__.insert().values(  # type: ignore[attr-defined]
            connector="demo", employee_id="E100", name="group:Prod Admins", rule="request:ar-7",
            since=NOW - dt.timedelta(days=1)))
    r = await client.post("/api/v1/reviews", json={"by": "app", "connector": "demo"}, headers=tokens["admin"])
    assert r.status == 201, await r.text()
    cid = (await r.json())["campaign"]["id"]
    items = (await (await client.get(f"/api/v1/reviews/{cid}", headers=tokens["admin"])).json())["items"]
    prod = next(i for i in items if i["entitlement"] == "group:Prod Admins")
    assert prod["why"] == "request" and prod["why_detail"].startswith("request ar-7 approved by")
    assert prod["last_change"] == (NOW - dt.timedelta(days=1)).isoformat()
    r = await client.post(f"/api/v1/reviews/{cid}/decisions",
                          json={"items": [prod["item"]], "decision": "revoke", "reason": "no longer on call"},
                          headers=env["sessions"]["Bob"])
    assert r.status == 202, await r.text()
    req = rt.store.access.get("ar-7")
    assert req is not None and req.state == "revoked" and "access review" in (req.end_reason or "")
    assert rt.store.access.denials() == []  # a request ends: nothing to deny
    # Unexplained access shows on the status page's "Needs attention" once reconcile has listed it.
    rt.store.set_setting("unexplained", {"at": NOW.isoformat(), "count": 1, "by_connector": {"demo": 1},
                                         "sample": [{"connector": "demo", "username": "ghost", "entitlement":
                                                     "(account)", "employee_id": ""}]})
    page = await (await client.get("/", headers=tokens["admin"])).text()
    assert "1 account(s) or entitlement(s) in apps that no rule and no approved request explains" in page


@pytest.fixture
def mail() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    box, port = Mailbox(), _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


async def test_reviewers_are_told_when_a_campaign_starts(tmp_path: Path, mail: tuple[Mailbox, int]) -> None:
    box, port = mail
    cfg = _config(tmp_path).model_copy(update={
        "access": config_mod.AccessConfig.model_validate({"catalogue": {"demo": {"Engineering": {"owner": ANA}}}}),
        "reviews": config_mod.ReviewsConfig(default_reviewer=BOB),
        "notifications": config_mod.NotificationsConfig.model_validate(
            {"smtp": {"host": "127.0.0.1", "port": port, "starttls": False, "sender": "jml@acme.example"}}),
        "server": _config(tmp_path).server.model_copy(update={"public_url": "https://jml.test.example"})})
    rt = Runtime(cfg, clock=lambda: NOW)
    _seed(rt)
    c = reviews.start(rt, by="app", connector=None, due=None, name="Q4", created_by="test", now=NOW)
    await notify.drain()
    assert len(box.messages) == 1
    rcpts, msg = box.messages[0]
    assert sorted(rcpts) == [ANA, BOB]
    body = msg.get_payload(decode=True).decode()
    assert f"https://jml.test.example/reviews/{c.id}" in body and "Keep or revoke" in body
    rt.store.close()
