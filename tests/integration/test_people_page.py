"""Issue 17, the HR view: accent- and case-blind search with department and status filters and
a browse list; set-aside rows findable; the manager by name; each rule's condition; "Offboard
now" only where it means something; what an offboarding removed; a person's history in order."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml.context import ServiceContext
from jml.model import Action, Lifecycle, Operation, Person, PersonState, Phase, Priority, Status
from jml.runtime import Runtime
from jml.store.repo import PersonSave
from jml.sync import SET_ASIDE_KEY
from jml.web import add_routes
from tests.integration.test_attention import _engine
from tests.integration.test_web import NOW, TOKEN, _config, _seed

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient[Any, Any],
                                                                                       Runtime]]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    rt = Runtime(_config(tmp_path), clock=lambda: NOW)
    _seed(rt)
    grace = Person("E400", Status.ACTIVE, first_name="Grace", last_name="García", work_email="grace@acme.example",
                   department="Engineering", job_title="Engineer", manager_id="E100", hire_date=dt.date(2022, 1, 3))
    rt.store.save_people([PersonSave(PersonState("E400", grace), "hE400", Lifecycle(Phase.ACTIVE))], NOW)
    rt.store.set_setting(SET_ASIDE_KEY, {"file": "hr.csv", "count": 2, "rows": [
        {"file": "hr.csv", "row": 9, "field": "termination_date", "message": "not a date: '31.12.2026'",
         "employee_id": "E400", "name": "Grace García", "email": "grace@acme.example", "seen_at": NOW.isoformat()},
        {"file": "hr.csv", "row": 12, "field": "work_email", "message": "not an e-mail address: 'not an email'",
         "employee_id": "E900", "name": "Zoë Newhire", "email": "not an email", "seen_at": NOW.isoformat()}]})
    # Cy (E300) was deprovisioned in demo: the removal is done and verified.
    rt.outbox.save_plan("plan-cy", [Operation("demo", Action.REMOVE_MEMBER, "E300",
                                              {"username": "cy@acme.example", "group": "All Staff"},
                                              Priority.LEAVER)],
                        held=False, origin="export", reasons=[], summary={"remove_member": 1}, policy_hash=None,
                        export_id=None, now=NOW - dt.timedelta(minutes=3))
    [q] = rt.outbox.plan_ops("plan-cy")
    assert q.id is not None
    rt.outbox.mark_done(q.id, NOW - dt.timedelta(minutes=2))
    rt.audit.append("hr_change", {"kind": "leaver", "phase": "leaver", "previous_phase": "active",
                                  "changes": {"status": ["Active", "Terminated"]}, "reason": "status Terminated"},
                    now=NOW - dt.timedelta(minutes=3), actor="hr", subject="E300")
    app = web.Application()
    add_routes(app, ServiceContext(rt=rt, engine=_engine(rt), started_at=NOW))
    async with TestClient(TestServer(app)) as c:
        yield c, rt
    rt.store.close()


async def test_search_ignores_accents_and_case(client: Any) -> None:
    c, _ = client
    body = await (await c.get("/people?q=grace+garcia", headers=AUTH)).text()
    text = _text(body)
    assert "Grace García" in text and "1 person" in text
    assert "row set aside" in text and "termination_date" in text
    body = await (await c.get("/people?q=GARCÍA", headers=AUTH)).text()
    assert "Grace García" in _text(body)


async def test_filters_and_browse(client: Any) -> None:
    c, _ = client
    text = _text(await (await c.get("/people", headers=AUTH)).text())
    for name in ("Ana Smith", "Bob Jones", "Cy Leaver", "Grace García", "Zoë Newhire"):
        assert name in text, text
    text = _text(await (await c.get("/people?department=Sales", headers=AUTH)).text())
    assert "Bob Jones" in text and "Cy Leaver" in text and "Ana Smith" not in text
    text = _text(await (await c.get("/people?status=leaver", headers=AUTH)).text())
    assert "Cy Leaver" in text and "Bob Jones" not in text
    text = _text(await (await c.get("/people?q=zoe", headers=AUTH)).text())  # only known from a set-aside row
    assert "Zoë Newhire" in text and "work_email" in text
    body = await (await c.get("/people/E900", headers=AUTH)).text()
    assert "not in jml yet" in _text(body) and "not an e-mail address" in _text(body)


async def test_person_page_manager_rule_condition_set_aside(client: Any) -> None:
    c, _ = client
    body = await (await c.get("/people/E400", headers=AUTH)).text()
    text = _text(body)
    assert 'href="/people/E100"' in body and "Ana Smith" in text  # the manager by name
    assert body.index('id="set-aside"') < body.index('id="access"')
    body = await (await c.get("/people/E100", headers=AUTH)).text()
    assert "when department is Engineering" in _text(body)
    assert 'id="offboard-form"' in body


async def test_a_leaver_has_no_offboard_button_and_keeps_what_was_removed(client: Any) -> None:
    c, _ = client
    body = await (await c.get("/people/E300", headers=AUTH)).text()
    text = _text(body)
    assert 'id="offboard-form"' not in body and "Already a leaver" in text
    access = body[body.index('id="access"'):body.index('id="history"')]
    assert "All Staff" in access and "removed" in access
    history = _text(body[body.index('id="history"'):])
    assert "status: Active → Terminated" in history
    assert history.index("hr change") < history.index("remove_member All Staff")
    assert "plan plan-cy" in history
