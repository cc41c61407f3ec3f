"""Revert on the page and the API (issue 18): the preview changes nothing, the button plans it
through the guard (held here: it gives one of two demo accounts back), the asker cannot
approve it, someone else can, and then the person's mistaken offboard is lifted."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from jml.approvals import Approver, approve
from jml.event_plan import plan_event
from jml.model import Override, OverrideKind
from jml.runtime import Runtime
from tests.integration.test_web import BEARER, NOW, _login, _rt, client  # noqa: F401  (client: the fixture)


def _applied_offboard(rt: Runtime) -> str:
    """E100 offboarded by mistake; its plan applied (recorded as the engine records success)."""
    rt.store.set_override("E100", Override(OverrideKind.OFFBOARD, NOW, "wrong person", "hr@acme"), NOW)
    (out,) = plan_event(rt, {"E100": False}, {}, NOW, origin="offboard")
    assert out.plan_id is not None and out.operations
    queued = rt.outbox.plan_ops(out.plan_id)
    rt.outbox.mark_running([q.id for q in queued], NOW)
    rt.store.record_results([(q.op, None, NOW) for q in queued])
    rt.outbox.mark_done_many([(q.id, NOW) for q in queued])
    assert rt.outbox.finish_plans(NOW) == [out.plan_id]
    return out.plan_id


async def test_preview_page_button_api_and_four_eyes(client: TestClient[Any, Any]) -> None:  # noqa: F811
    rt = _rt(client)
    pid = _applied_offboard(rt)
    assert not rt.store.load_accounts(["E100"])[("demo", "E100")].active

    r = await client.post(f"/api/v1/plans/{pid}/revert", headers=BEARER)  # no body: a preview
    assert r.status == 200
    doc = await r.json()
    assert doc["state"] == "preview" and doc["plan_id"] is None and doc["reverts"] == pid
    assert {("demo", "reactivate", "E100"), ("demo", "add_member", "E100"), ("chat", "reactivate", "E100")} <= {
        (o["connector"], o["action"], o["person"]) for o in doc["operations"]}
    assert doc["people_state_restored"] == ["E100"] and doc["guard"]["held"] is True
    assert rt.store.load_states(["E100"])["E100"].override is not None  # nothing changed

    for body, status, needle in [(b'{"dry_run": "no"}', 400, "dry_run"), (b'{"x": 1}', 400, "unknown field"),
                                 (b"[]", 400, "JSON object")]:
        r = await client.post(f"/api/v1/plans/{pid}/revert", data=body, headers=BEARER)
        assert r.status == status and needle in (await r.json())["error"]
    r = await client.post("/api/v1/plans/nope/revert", headers=BEARER)
    assert r.status == 404
    r = await client.post("/api/v1/plans/plan-held-1/revert", headers=BEARER)
    assert r.status == 409 and "nothing of it was applied" in (await r.json())["error"]

    csrf = await _login(client)
    status_page = await (await client.get("/")).text()
    assert f'href="/plans/{pid}/revert"' in status_page  # the page's button, for an operator or admin
    preview = await (await client.get(f"/plans/{pid}/revert")).text()
    assert "Preview: nothing has changed yet" in preview and f"Revert plan {pid}</button>" in preview
    assert "reactivate" in preview

    r = await client.post(f"/plans/{pid}/revert", data={"csrf_token": csrf})
    text = await r.text()
    assert r.status == 200 and "is held for approval by someone else" in text
    new_id = re.search(r"Plan ([0-9a-f]{12}) \(revert of", text)
    assert new_id
    rid = new_id.group(1)
    info = rt.outbox.plan(rid)
    assert info is not None and info.state == "held" and info.origin == f"revert:{pid}"

    r = await client.post(f"/api/v1/plans/{pid}/revert", data=b'{"dry_run": false}', headers=BEARER)
    assert r.status == 409 and "already reverted" in (await r.json())["error"]
    r = await client.post(f"/api/v1/plans/{rid}/approve", headers=BEARER)  # who asked cannot approve it
    assert r.status == 409 and "requested by you" in (await r.json())["error"]
    assert rt.store.load_states(["E100"])["E100"].override is not None

    assert approve(rt, rid, Approver("person:boss", "boss@acme")).done
    assert rt.store.load_states(["E100"])["E100"].override is None  # the offboard is lifted on approval
    assert {q.state for q in rt.outbox.plan_ops(rid)} == {"pending"}
    revert_rec = [a for a in rt.audit.records() if a["kind"] == "revert"]
    assert revert_rec and revert_rec[-1]["actor"].startswith("break-glass via=session")
