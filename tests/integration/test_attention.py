"""Issue 17: what needs attention, first, on the status page, in `jml status` and its JSON:
held plans, dead letters in plain words (a failed joiner's HR field), set-aside HR rows,
breaches, a rejected export, paused connectors — each with what to do and, for the roles
allowed, the button. Verified leavers leave "Leavers in flight"."""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml import status as status_mod
from jml.context import ServiceContext
from jml.model import Action, Operation, Priority
from jml.runtime import Runtime
from jml.store.identity import IdentityStore
from jml.store.tables import SlaClockRow
from jml.sync import SET_ASIDE_KEY
from jml.web import add_routes
from jml.web.auth import new_api_token, token_hash
from jml.web.roles import ROLES
from tests.integration.test_web import NOW, TOKEN, _config, _seed

EMAIL_ERROR = ("demo: unexpected ValidationError: 1 validation error for Email\nvalue\n  value is not a valid "
               "email address: An email address must have an @-sign. [type=value_error, input_value='not an email', "
               "input_type=str]")


def _engine(rt: Runtime) -> Any:
    try:
        return importlib.import_module("jml.outbox_workers").build_engine(rt)
    except ImportError:
        return rt.engine()  # type: ignore[attr-defined]


def _seed_attention(rt: Runtime) -> int:
    _seed(rt)
    rt.outbox.save_plan("plan-join-1", [Operation("demo", Action.CREATE, "E200", {"username": "bob"},
                                                  Priority.NORMAL)],
                        held=False, origin="export", reasons=[], summary={"create": 1}, policy_hash=None,
                        export_id=None, now=NOW)
    [q] = rt.outbox.plan_ops("plan-join-1")
    assert q.id is not None
    rt.outbox.mark_failed(q.id, EMAIL_ERROR, dead=True, attempts=1, now=NOW)
    rt.store.set_setting(SET_ASIDE_KEY, {"file": "hr.csv", "count": 1, "rows": [
        {"file": "hr.csv", "row": 17, "field": "termination_date", "message": "not a date: '31.12.2026' "
         "(expected YYYY-MM-DD)", "employee_id": "E777", "name": "Grace García", "email": "grace@acme.example",
         "seen_at": NOW.isoformat()}]})
    rt.store.set_setting("paused_connectors", ["chat"])
    SC = SlaClockRow.__table__  # type: ignore[attr-defined]
    with rt.store.engine.begin() as conn:  # E300 verified in demo a minute ago: not "in flight" any more
        conn.execute(SC.update().where(SC.c.connector == "demo", SC.c.employee_id == "E300")
                     .values(verified_at=NOW - dt.timedelta(minutes=1)))
    return q.id


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient[Any, Any],
                                                                                    dict[str, str], Runtime, int]]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    rt = Runtime(_config(tmp_path), clock=lambda: NOW)
    op_id = _seed_attention(rt)
    store = IdentityStore(rt.store.engine)
    tokens = {}
    for role in ROLES:
        secret = new_api_token()
        assert store.create_token(f"t-{role}", token_hash(secret), [role], created_by="test", now=NOW,
                                  expires_at=None)
        tokens[role] = secret
    application = web.Application()
    add_routes(application, ServiceContext(rt=rt, engine=_engine(rt), started_at=NOW))
    async with TestClient(TestServer(application)) as c:
        yield c, tokens, rt, op_id
    rt.store.close()


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_status_document_lists_what_needs_attention(app: Any) -> None:
    _, _, rt, op_id = app
    doc = status_mod.snapshot(rt)
    kinds = [i["kind"] for i in doc["attention"]]
    assert {"held_plan", "failed_joiner", "set_aside_row", "breach", "paused_connector"} <= set(kinds), kinds
    assert kinds.index("failed_joiner") < kinds.index("held_plan")  # breaches and failures first
    joiner = next(i for i in doc["attention"] if i["kind"] == "failed_joiner")
    assert joiner["title"] == "Joiner Bob Jones (E200) has no account in demo"
    assert "work_email" in joiner["todo"] and "Bob Jones (E200)" in joiner["todo"]
    assert joiner["detail"] == EMAIL_ERROR and joiner["id"] == op_id
    aside = next(i for i in doc["attention"] if i["kind"] == "set_aside_row")
    assert "Row 17 of hr.csv (Grace García (E777)): termination_date not a date" in aside["why"]
    text = status_mod.render_text(doc)
    assert text.splitlines()[1].startswith("NEEDS ATTENTION")
    assert "{" not in text and "PREDICTED BREACH" not in text
    assert "1 deactivate" in text  # the held plan's summary in words, not a dict
    assert "MISSED" in text


async def test_the_page_puts_attention_first_in_plain_words(app: Any) -> None:
    client, tokens, _, op_id = app
    r = await client.get("/", headers={"Authorization": f"Bearer {tokens['operator']}"})
    body = await r.text()
    assert r.status == 200
    assert body.index('id="attention"') < body.index('id="leavers"')
    text = _text(body)
    assert "Joiner Bob Jones (E200) has no account in demo" in text
    assert "HR: correct the work_email field of Bob Jones (E200)" in text
    assert "<details class=\"raw\"><summary>Technical detail</summary>" in body  # raw error one click away
    assert f'action="/operations/{op_id}/discard"' in body and "Retry #" in body
    assert "Resume chat" in text and "Grace García" in text
    # E300 verified in demo: not in flight; still in flight (and breached) in chat.
    leavers = body[body.index('id="leavers"'):body.index('id="held"')]
    assert leavers.count("/people/E300") == 1
    # A viewer sees the same list, without the buttons.
    viewer = await (await client.get("/", headers={"Authorization": f"Bearer {tokens['viewer']}"})).text()
    assert "Joiner Bob Jones (E200) has no account in demo" in _text(viewer)
    i = viewer.find(f'action="/operations/{op_id}/discard"')
    assert i < 0, viewer[i - 1500:i + 200]
    assert 'class="resume"' not in viewer


async def test_an_operator_discards_a_dead_letter_from_the_page(app: Any) -> None:
    client, tokens, rt, op_id = app
    r = await client.post(f"/operations/{op_id}/discard", headers={"Authorization": f"Bearer {tokens['hr']}"},
                           allow_redirects=False)
    assert r.status == 403
    r = await client.post(f"/operations/{op_id}/discard",
                          headers={"Authorization": f"Bearer {tokens['operator']}"}, allow_redirects=False)
    assert r.status == 303, await r.text()
    assert rt.outbox.ops(["dead"]) == []
    [rec] = [x for x in rt.audit.records() if x["kind"] == "discard_operation"]
    assert rec["data"]["operation_id"] == op_id and rec["subject"] == "E200" and "t-operator" in rec["actor"]
    r = await client.post(f"/operations/{op_id}/discard",
                          headers={"Authorization": f"Bearer {tokens['operator']}"}, allow_redirects=False)
    assert r.status == 404


async def test_a_rejected_export_is_not_fresh(app: Any) -> None:
    client, tokens, rt, _ = app
    rt.store.add_export(source="hris", name="hr.csv", checksum="x", etag=None, last_modified=None, columns=(),
                        row_count=0, quarantined=0, status="rejected", reason="missing required columns: status",
                        now=NOW)
    doc = status_mod.snapshot(rt)
    assert doc["source"]["state"] == "rejected"
    item = next(i for i in doc["attention"] if i["kind"] == "export_rejected")
    assert "missing required columns" in item["why"]
    body = await (await client.get("/", headers={"Authorization": f"Bearer {tokens['viewer']}"})).text()
    stats = _text(body[body.index('class="stats"'):body.index('id="attention"')])
    assert "HR source REJECTED" in stats and "fresh" not in stats
    assert "The latest HR export was rejected" in _text(body)


async def test_a_failed_joiners_page_says_what_to_fix(app: Any) -> None:
    client, tokens, _, op_id = app
    body = await (await client.get("/people/E200", headers={"Authorization": f"Bearer {tokens['admin']}"})).text()
    problems = body[body.index('id="problems"'):body.index('id="access"')]
    assert "HR: correct the work_email field of Bob Jones (E200)" in _text(problems)
    assert f"Retry #{op_id}" in problems and f'action="/operations/{op_id}/discard"' in problems
    hr = await (await client.get("/people/E200", headers={"Authorization": f"Bearer {tokens['hr']}"})).text()
    assert "HR: correct the work_email field" in _text(hr) and f"Retry #{op_id}" not in hr
    status = await (await client.get("/", headers={"Authorization": f"Bearer {tokens['viewer']}"})).text()
    assert "Rows set aside" in _text(status) and "1 row(s) of hr.csv" in _text(status)


def test_many_set_aside_rows_are_summarised() -> None:
    from jml.attention import SET_ASIDE_SHOWN, items

    rows = [{"file": "hr.csv", "row": i, "field": "hire_date", "message": "not a date", "employee_id": f"E{i}",
             "name": f"P {i}"} for i in range(2, 40)]
    got = items({"set_aside": {"file": "hr.csv", "count": 500, "rows": rows}})
    assert [i["kind"] for i in got].count("set_aside_row") == SET_ASIDE_SHOWN
    summary = next(i for i in got if i["kind"] == "set_aside_rows")
    assert summary["title"].startswith("500 rows of hr.csv set aside")
