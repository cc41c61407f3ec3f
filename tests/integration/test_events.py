"""Webhooks, offboard and reconciliation end to end in one process: the aiohttp routes on a
test server, a real SQLite store, the engine, and a real scim2-server on loopback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from jml import events, reconcile
from jml import offboard as offboard_mod
from jml.config import from_dict
from jml.context import ServiceContext
from jml.model import OverrideKind
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.store.inbox import Inbox
from jml.store.tables import PlanRow, WebhookEventRow
from jml.sync import plan_cycle
from jml.webhooks import add_routes, sign
from tests.integration.contract.target_scim import PeerReader
from tests.peers import ScimPeer, scim2_server

OKTA_SECRET = "okta-shared-secret-0001"
HR_SECRET = "hr-signing-secret-0001"
HEADER = "employee_id,first_name,last_name,work_email,department,status,hire_date,termination_date\n"
PEOPLE = [
    ("E1", "Pat", "Lee", "pat@acme.example", "Engineering"),
    ("E2", "Ana", "Diaz", "ana@acme.example", "Sales"),
    ("E3", "Bo", "Kim", "bo@acme.example", "Engineering"),
    ("E4", "Cy", "Ng", "cy@acme.example", "Sales"),
]


def export_text(rows: list[tuple[str, ...]], status: dict[str, str] | None = None) -> str:
    lines = [f"{e},{f},{la},{m},{d},{(status or {}).get(e, 'Active')},2020-01-01,\n" for e, f, la, m, d in rows]
    return HEADER + "".join(lines)


@dataclass
class Env:
    rt: Runtime
    ctx: ServiceContext
    client: TestClient[Any, Any]
    peer: ScimPeer
    reader: PeerReader
    export: Path

    async def active(self, eid: str) -> bool | None:
        u = await self.reader.find(eid, "")
        return None if u is None else bool(u.get("active", True))

    def count(self, table: Any, *where: Any) -> int:
        with self.rt.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def settled(env: Env, tag: str) -> None:
    """A barrier instead of a sleep: an Okta event for nobody, published now. The processor
    takes every pending event in one pass, so once this one has its outcome, every request
    answered before it has been applied and planned; once the outbox is empty too, whatever
    those plans queued has been pushed. What the test asserts after this is final."""
    uid = f"barrier-{tag}"
    r = await post_okta(env, okta_body((uid, "user.lifecycle.deactivate", "nobody@acme.example"),
                                       at=dt.datetime.now(dt.UTC)))
    assert r.status == 200

    async def done() -> bool:
        return (Inbox(env.rt.store).outcomes().get(f"okta:{uid}") is not None
                and env.rt.outbox.open_count() == 0)
    await wait_for(done)
    assert Inbox(env.rt.store).outcomes()[f"okta:{uid}"] == "unmatched"


def make_config(tmp: Path, peer: ScimPeer, **overrides: Any) -> Any:
    os.environ["JML_TEST_OKTA_SECRET"] = OKTA_SECRET
    os.environ["JML_TEST_HR_SECRET"] = HR_SECRET
    os.environ["JML_TEST_SCIM_TOKEN"] = peer.token
    doc: dict[str, Any] = {
        "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
        "sources": {"hris": {"location": str(tmp / "exports"), "format": "csv", "timezone": "UTC"},
                    "okta": {"secret_env": "JML_TEST_OKTA_SECRET"},
                    "webhook": {"secret_env": "JML_TEST_HR_SECRET"}},
        "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 1000},
        "policy": {"username": "{work_email}", "rules": [
            {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"scim": ["All Staff"]}}]},
        "connectors": {"scim": {"type": "scim", "url": peer.url, "token_env": "JML_TEST_SCIM_TOKEN",
                                "concurrency": 8}},
    }
    for key, value in overrides.items():
        doc[key] = {**doc.get(key, {}), **value}
    return from_dict(doc, tmp)


@contextlib.asynccontextmanager
async def running(tmp: Path, **overrides: Any) -> AsyncIterator[Env]:
    with scim2_server() as peer:
        (tmp / "exports").mkdir()
        export = tmp / "exports" / "hr.csv"
        export.write_text(export_text(PEOPLE))
        rt = Runtime(make_config(tmp, peer, **overrides))
        await rt.open_connectors()
        engine = build_engine(rt, poll_interval=0.05)
        outcome = await plan_cycle(rt)
        await engine.run_until_idle(plan_id=outcome.plan_id, timeout=30)
        ctx = ServiceContext(rt, engine)
        app = web.Application()
        add_routes(app, ctx)
        client = TestClient(TestServer(app))
        await client.start_server()
        tasks = [asyncio.create_task(engine.run_forever(ctx.stopping, grace=1)),
                 asyncio.create_task(events.run_event_processor(ctx))]
        env = Env(rt, ctx, client, peer, PeerReader(peer), export)
        assert await env.active("E1") is True
        try:
            yield env
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            await client.close()
            await rt.close()
            rt.store.close()


def okta_body(*evs: tuple[str, str, str], at: dt.datetime | None = None) -> bytes:
    """(uuid, eventType, alternateId) -> an event hook delivery like VENDORS §1's sample."""
    base = at or dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    return json.dumps({"eventType": "com.okta.event_hook", "eventTypeVersion": "1.0", "data": {"events": [
        {"uuid": u, "published": (base + dt.timedelta(milliseconds=i)).isoformat(), "eventType": t,
         "severity": "INFO",
         "actor": {"id": "00uADM1", "type": "User", "alternateId": "admin@acme.example"},
         "target": [{"id": "00uX", "type": "User", "alternateId": who, "displayName": "x"}],
         "outcome": {"result": "SUCCESS"}} for i, (u, t, who) in enumerate(evs)]}}).encode()


async def post_okta(env: Env, body: bytes, secret: str = OKTA_SECRET, **headers: str) -> aiohttp.ClientResponse:
    return await env.client.post("/webhooks/okta", data=body, headers={
        "Authorization": secret, "Content-Type": "application/json", **headers})


async def post_hr(env: Env, doc: dict[str, Any] | bytes, *, secret: str = HR_SECRET, t: int | None = None,
                  header: str | None = None) -> aiohttp.ClientResponse:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    t = int(time.time()) if t is None else t
    sig = header if header is not None else f"t={t},v1={sign(secret, t, body)}"
    return await env.client.post("/webhooks/hr", data=body, headers={
        "X-JML-Signature": sig, "Content-Type": "application/json"})


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running(tmp_path) as e:
        yield e


async def test_okta_verification_handshake(env: Env) -> None:
    r = await env.client.get("/webhooks/okta", headers={"x-okta-verification-challenge": "chal-123",
                                                        "Authorization": OKTA_SECRET})
    assert r.status == 200 and await r.json() == {"verification": "chal-123"}
    r = await env.client.get("/webhooks/okta", headers={"x-okta-verification-challenge": "chal-123"})
    assert r.status == 401  # Okta sends the Authorization value on the verification GET too
    r = await env.client.get("/webhooks/okta", headers={"Authorization": OKTA_SECRET})
    assert r.status == 400


async def test_deactivate_event_deprovisions_once(env: Env) -> None:
    body = okta_body(("u-1", "user.lifecycle.deactivate", "PAT@acme.example"))
    r = await post_okta(env, body)
    assert r.status == 200 and await r.read() == b""
    await wait_for(lambda: _inactive(env, "E1"))
    assert await env.active("E2") is True
    for _ in range(3):  # Okta retries and at-least-once delivery
        assert (await post_okta(env, body)).status == 200
    await settled(env, "dup")
    W = WebhookEventRow.__table__
    assert env.count(W, W.c.id == "okta:u-1") == 1 and env.count(W) == 2  # the event, and the barrier
    assert env.count(PlanRow.__table__, PlanRow.__table__.c.origin == "event") == 1
    state = env.rt.store.load_states(["E1"])["E1"]
    assert state.override is not None and state.override.kind is OverrideKind.IDP_DEACTIVATE
    sent = json.loads(body)["data"]["events"][0]["published"]
    assert state.override.effective_at == dt.datetime.fromisoformat(sent)  # effective when Okta published it
    pushes = [r for r in env.rt.audit.records(subject="E1") if r["kind"] == "push"]
    assert [p["data"]["action"] for p in pushes if p["data"]["plan_id"] != "x"].count("deactivate") == 1


async def _inactive(env: Env, eid: str) -> bool:
    return await env.active(eid) is False


async def test_rejected_okta_requests_change_nothing(env: Env) -> None:
    body = okta_body(("u-2", "user.lifecycle.deactivate", "ana@acme.example"))
    assert (await post_okta(env, body, secret="okta-shared-secret-0002")).status == 401
    assert (await post_okta(env, body, secret=OKTA_SECRET + "0")).status == 401  # compared whole
    assert (await env.client.post("/webhooks/okta", data=body,
                                  headers={"Content-Type": "application/json"})).status == 401
    assert (await post_okta(env, body, **{"Content-Type": "text/plain"})).status == 400
    assert (await post_okta(env, b'{"data": {"events": [{"uuid": 1}]}}')).status == 400
    assert (await post_okta(env, b"{" * 10)).status == 400
    assert (await post_okta(env, b" " * (env.rt.config.server.max_body_bytes + 1))).status == 413
    await settled(env, "rejected")
    assert env.count(WebhookEventRow.__table__) == 1  # the barrier only
    assert await env.active("E2") is True
    assert "deactivate" not in {r["data"]["action"] for r in env.rt.audit.records(subject="E2") if r["kind"] == "push"}


async def test_unmatched_and_reactivation(env: Env) -> None:
    await post_okta(env, okta_body(("u-3", "user.lifecycle.suspend", "bo@acme.example"),
                                   ("u-4", "user.lifecycle.deactivate", "nobody@acme.example")))
    await wait_for(lambda: _inactive(env, "E3"))
    assert Inbox(env.rt.store).outcomes()["okta:u-4"] == "unmatched"
    await post_okta(env, okta_body(("u-5", "user.lifecycle.unsuspend", "bo@acme.example"),
                                   at=dt.datetime.now(dt.UTC)))

    async def active_again() -> bool:
        return await env.active("E3") is True
    await wait_for(active_again)
    assert env.rt.store.load_states(["E3"])["E3"].override is None


async def test_hr_webhooks(env: Env) -> None:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    term = {"id": "hr-1", "type": "termination", "occurred_at": when.isoformat(),
            "person": {"employee_id": "E4", "work_email": "cy@acme.example"}}
    now = int(time.time())
    bad = [
        await post_hr(env, term, secret="wrong-secret"),
        await post_hr(env, term, t=now - 301),  # replayed after the window
        await post_hr(env, term, header="t=1,v1=" + "0" * 64),
        await post_hr(env, term, header=""),
    ]
    assert [r.status for r in bad] == [401, 401, 401, 401]
    assert (await post_hr(env, {**term, "type": "fired"})).status == 400
    assert (await post_hr(env, {**term, "person": {"first_name": "Cy"}})).status == 400  # no employee_id
    assert (await post_hr(env, {**term, "person": {"employee_id": "E4", "hire_date": "03/03/2025"}})).status == 400
    await settled(env, "hr-rejected")
    assert env.count(WebhookEventRow.__table__) == 1 and await env.active("E4") is True  # the barrier only
    r = await post_hr(env, term)
    assert r.status == 200 and (await r.json())["status"] == "accepted"
    await wait_for(lambda: _inactive(env, "E4"))
    state = env.rt.store.load_states(["E4"])["E4"]
    assert state.override is not None and state.override.kind is OverrideKind.HR_TERMINATION
    assert state.person is not None and state.person.termination_date == when.date()
    assert state.person.first_name == "Cy"  # a partial record keeps the stored fields
    r = await post_hr(env, term)
    assert r.status == 200 and (await r.json())["status"] == "duplicate"
    hire = {"id": "hr-2", "type": "hire", "occurred_at": "2025-03-03T12:00:00Z",
            "person": {"employee_id": "E9", "first_name": "Di", "last_name": "Ho", "work_email": "di@acme.example",
                       "status": "Active", "hire_date": "2020-01-01"}}
    assert (await post_hr(env, hire)).status == 200

    async def created() -> bool:
        return await env.active("E9") is True
    await wait_for(created)


async def test_offboard_undo_and_stickiness(env: Env) -> None:
    with pytest.raises(offboard_mod.UnknownEmployee):
        await offboard_mod.offboard(env.rt, "E404", reason="x", actor="hr@acme")
    result = await offboard_mod.offboard(env.rt, "E2", reason="gross misconduct", actor="hr@acme")
    assert not result.held and result.plan_ids
    assert {op.action.value for op in result.operations} >= {"deactivate"}
    assert all(op.priority == 0 for op in result.operations)  # Priority.LEAVER
    env.ctx.wake()
    await wait_for(lambda: _inactive(env, "E2"))
    trail = [r for r in env.rt.audit.records(subject="E2") if r["kind"] == "offboard"]
    assert trail[0]["actor"] == "hr@acme" and trail[0]["data"]["reason"] == "gross misconduct"
    # An unchanged export still saying Active does not undo it, nor does a changed row saying Active.
    rows = [*PEOPLE, ("E5", "Ed", "Wu", "ed@acme.example", "Sales")]
    env.export.write_text(export_text(rows))
    unchanged_row = await plan_cycle(env.rt)
    rows[1] = ("E2", "Ana", "Diaz", "ana@acme.example", "Marketing")
    env.export.write_text(export_text(rows))
    changed_row = await plan_cycle(env.rt)
    for outcome in (unchanged_row, changed_row):
        assert not outcome.held
        assert not [op for op in outcome.operations
                    if op.employee_id == "E2" and op.action.value in ("create", "reactivate", "add_member")]
    assert any(op.employee_id == "E5" for op in unchanged_row.operations)  # the plans did plan something
    env.ctx.wake()

    async def pushed() -> bool:
        return await _exists(env, "E5") and env.rt.outbox.open_count() == 0
    await wait_for(pushed)
    assert await env.active("E2") is False
    undo = await offboard_mod.offboard(env.rt, "E2", reason="mistake", actor="hr@acme", undo=True)
    assert undo.changed and not undo.held
    env.ctx.wake()

    async def back() -> bool:
        return await env.active("E2") is True
    await wait_for(back)


async def _exists(env: Env, eid: str) -> bool:
    return await env.active(eid) is not None


async def test_event_leaver_cap_holds(tmp_path: Path) -> None:
    async with running(tmp_path, guard={"max_event_leavers_per_hour": 1}) as env:
        await post_okta(env, okta_body(("c-1", "user.lifecycle.deactivate", "pat@acme.example")))
        await wait_for(lambda: _inactive(env, "E1"))
        await post_okta(env, okta_body(("c-2", "user.lifecycle.deactivate", "ana@acme.example")))

        async def held() -> bool:
            return any(p.origin == "event" for p in env.rt.outbox.plans(["held"]))
        await wait_for(held)
        plan = next(p for p in env.rt.outbox.plans(["held"]) if p.origin == "event")
        assert "max_event_leavers_per_hour 1" in plan.reasons[0]
        ops = env.rt.outbox.plan_ops(plan.id)
        assert ("E2", "deactivate") in {(q.op.employee_id, q.op.action.value) for q in ops}
        assert {q.state for q in ops} == {"held"}  # nothing of it queued
        await settled(env, "cap")
        assert await env.active("E2") is True


async def test_offboard_cli_pushes_itself(tmp_path: Path) -> None:
    with scim2_server() as peer:
        (tmp_path / "exports").mkdir()
        (tmp_path / "exports" / "hr.csv").write_text(export_text(PEOPLE))
        cfg = make_config(tmp_path, peer)
        rt = Runtime(cfg)
        outcome = await plan_cycle(rt)
        from jml.commands import work

        await work(rt, outcome.plan_id, 30)
        args = argparse.Namespace(employee_id="E404", reason="", at=None, undo=False)
        assert await offboard_mod.offboard_cli(args, cfg) == 2
        args = argparse.Namespace(employee_id="E3", reason="left today", at=None, undo=False)
        assert await offboard_mod.offboard_cli(args, cfg) == 0
        reader = PeerReader(peer)
        u = await reader.find("E3", "")
        assert u is not None and u["active"] is False
        args = argparse.Namespace(employee_id="E3", reason="", at=None, undo=True)
        assert await offboard_mod.offboard_cli(args, cfg) == 0
        u = await reader.find("E3", "")
        assert u is not None and u["active"] is True
        rt.store.close()


async def test_reconcile_repairs_drift_and_reports_orphans(env: Env) -> None:
    user = await env.reader.find("E1", "")
    assert user is not None
    async with aiohttp.ClientSession(headers=env.peer.headers) as s:
        patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                 "Operations": [{"op": "replace", "path": "active", "value": False}]}
        async with s.patch(env.peer.url + f"Users/{user['id']}", json=patch) as r:
            assert r.status in (200, 204)
        orphan = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ghost@acme.example"}
        async with s.post(env.peer.url + "Users", json=orphan) as r:
            assert r.status == 201
    findings = await reconcile.run(env.rt)
    f = findings[0]
    assert [d.record.employee_id for d in f.drift] == ["E1"] and "active" in f.drift[0].kinds
    assert [o.username for o in f.orphans] == ["ghost@acme.example"]
    assert env.rt.store.get_setting("reconcile")["connectors"]["scim"]["orphans"] == 1
    env.ctx.wake()

    async def repaired() -> bool:
        return await env.active("E1") is True
    await wait_for(repaired)
    assert await env.reader.find(None, "ghost@acme.example") is not None  # never deleted by default
    assert not (await reconcile.run(env.rt))[0].drift
