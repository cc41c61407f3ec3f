"""Issue 14 finding 2: one event must not stall the inbox.

An HR event with `occurred_at` 9999-12-31 was accepted, then overflowed while processed
(its termination date at 23:59 in a zone west of UTC is in year 10000), and every later
event — terminations included — waited behind it forever. Now: times are checked at intake
(a clear 400); an event that still fails while processed is quarantined alone, with its
error, shown by `jml status` (text and --json) and the `jml_events_quarantined` gauge, and
the rest go on; the age of the oldest unprocessed event is a gauge and fails /readyz past
`server.inbox_stall_after`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jml import health, metrics
from jml import status as status_mod
from jml.context import ServiceContext
from jml.store.inbox import Inbox
from jml.store.inbox import W as inbox_table
from jml.webhooks import HrEvent
from tests.integration.test_events import Env, okta_body, post_hr, post_okta, running, wait_for

POISON_AT = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.UTC)


def _west(tmp: Path) -> dict[str, Any]:
    return {"sources": {"hris": {"location": str(tmp / "exports"), "format": "csv",
                                 "timezone": "America/New_York"}}}


def _term(eid: str, when: str, **person: str) -> dict[str, Any]:
    return {"id": f"term-{eid}-{when[:4]}", "type": "termination", "occurred_at": when,
            "person": {"employee_id": eid, **person}}


@pytest.mark.parametrize("when", ["9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z", "3000-01-01T00:00:00+00:00",
                                  "1900-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "yesterday", "+275760-09-13"])
async def test_hr_event_times_out_of_range_are_refused_at_intake(tmp_path: Path, when: str) -> None:
    async with running(tmp_path, **_west(tmp_path)) as env:
        r = await post_hr(env, _term("E4", when))
        assert r.status == 400, await r.text()
        assert "occurred_at" in (await r.json())["error"]


async def test_person_dates_and_okta_times_are_checked_at_intake(tmp_path: Path) -> None:
    async with running(tmp_path, **_west(tmp_path)) as env:
        now = dt.datetime.now(dt.UTC).isoformat()
        for field in ("termination_date", "hire_date"):
            r = await post_hr(env, _term("E4", now, **{field: "9999-12-31"}))
            assert r.status == 400 and field in (await r.json())["error"], await r.text()
        for published in ("9999-12-31T23:00:00Z", "0001-01-01T00:00:00Z", "2026-01-01T00:00:00"):
            body = json.loads(okta_body(("u-x", "user.lifecycle.deactivate", "cy@acme.example")))
            body["data"]["events"][0]["published"] = published
            r = await post_okta(env, json.dumps(body).encode())
            assert r.status == 400, (published, await r.text())
            assert "published" in (await r.json())["error"]
        assert env.count(inbox_table) == 0


async def test_one_poisoned_event_leaves_the_next_hundred_processed(tmp_path: Path) -> None:
    async with running(tmp_path, **_west(tmp_path)) as env:
        # Stored as the old intake stored it: processing it overflows (year 10000 in UTC).
        Inbox(env.rt.store).add_hr(HrEvent("poison", "termination", POISON_AT, {"employee_id": "E3"}),
                                          env.rt.clock())
        started = time.monotonic()
        for i in range(0, 99, 33):
            await post_okta(env, okta_body(*[(f"n-{j}", "user.lifecycle.deactivate", f"nobody{j}@acme.example")
                                             for j in range(i, i + 33)]))
        r = await post_hr(env, {"id": "t-E4", "type": "termination", "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                                "person": {"employee_id": "E4"}})
        assert r.status == 200

        async def all_done() -> bool:
            out = Inbox(env.rt.store).outcomes()
            return (all(out.get(f"okta:n-{j}") for j in range(99)) and bool(out.get("hr:t-E4"))
                    and await env.active("E4") is False)
        await wait_for(all_done, timeout=20)
        assert time.monotonic() - started < 20
        # The poisoned event is quarantined alone, with its error, and changed nothing.
        doc = status_mod.snapshot(env.rt)
        quarantined = doc["events"]["quarantined"]
        assert [q["id"] for q in quarantined] == ["hr:poison"]
        assert "OverflowError" in quarantined[0]["error"]
        assert doc["events"]["pending"] == 0
        assert env.rt.store.load_states(["E3"])["E3"].override is None
        assert await env.active("E3") is True
        text = status_mod.render_text(json.loads(json.dumps(doc)))
        assert "quarantined" in text and "hr:poison" in text
        rendered = metrics.render().decode()
        assert "jml_events_quarantined 1.0" in rendered
        assert "jml_events_oldest_pending_seconds 0.0" in rendered


class _Lease:
    started = True
    leader = True


async def test_readyz_fails_when_the_inbox_stalls(tmp_path: Path) -> None:
    async with running(tmp_path, server={"inbox_stall_after": "5m"}) as env:
        ctx = ServiceContext(env.rt, env.ctx.engine)  # no event processor behind this one
        ctx.source_ok_at["hris"] = env.rt.clock()
        app = web.Application()
        health.add_routes(app, ctx, _Lease())
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            r = await client.get("/readyz")
            body = await r.json()
            assert r.status == 200 and body["checks"]["inbox"]["ok"] is True, body
            env.ctx.stopping.set()  # the running processor stops: nothing drains the inbox now
            await asyncio.sleep(0.2)
            old = env.rt.clock() - dt.timedelta(minutes=6)
            Inbox(env.rt.store).add_hr(HrEvent("late", "change", old, {"employee_id": "E2"}), old)
            r = await client.get("/readyz")
            body = await r.json()
            assert r.status == 503, body
            inbox = body["checks"]["inbox"]
            assert inbox["ok"] is False and inbox["oldest_pending_seconds"] >= 360 and inbox["pending"] == 1
            assert inbox["stall_after"] == 300
            rendered = (await (await client.get("/metrics")).read()).decode()
            line = next(x for x in rendered.splitlines() if x.startswith("jml_events_oldest_pending_seconds "))
            assert float(line.split()[1]) >= 360
        finally:
            await client.close()


async def test_status_cli_shows_quarantined_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running(tmp_path, **_west(tmp_path)) as env:
        Inbox(env.rt.store).add_hr(HrEvent("poison", "termination", POISON_AT, {"employee_id": "E3"}),
                                          env.rt.clock())
        await wait_for(lambda: _quarantined(env), timeout=15)
        from jml.commands import status as status_cmd

        capsys.readouterr()
        assert await status_cmd(argparse.Namespace(json=True), env.rt.config) == 0
        doc = json.loads(capsys.readouterr().out)
        for key in ("now", "connectors", "paused", "held_plans", "dead_letters", "leavers_in_flight", "source"):
            assert key in doc  # the contract's shape, extended
        assert doc["events"]["quarantined"][0]["id"] == "hr:poison"
        assert await status_cmd(argparse.Namespace(json=False), env.rt.config) == 0
        assert "hr:poison" in capsys.readouterr().out


async def _quarantined(env: Env) -> bool:
    return bool(status_mod.snapshot(env.rt).get("events", {}).get("quarantined"))
