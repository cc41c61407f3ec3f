"""The deprovision SLA clock end to end against a real scim2-server, on SQLite and PostgreSQL:
it starts at the HR effective termination (time-zone aware), stops only when the app's
read-back shows the account deprovisioned, re-plans a leaver the app still grants, counts a
breach once, predicts a breach from the queue, and feeds `status` and `report sla`.

The clock is the test's: `self.now` is what jml sees. The app's state is read directly
from the server over HTTP, not through the connector.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import text

from connectors.base import ApplyResult
from jml import config as config_mod
from jml import metrics, reports, sla
from jml.context import ServiceContext
from jml.model import Action
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.status import snapshot
from jml.store.outbox import QueuedOp
from jml.sync import plan_cycle
from tests.peers import ScimPeer

BERLIN = ZoneInfo("Europe/Berlin")
TOKEN_ENV = "JML_TEST_SLA_SCIM_TOKEN"
FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "employment_type", "status",
          "hire_date", "termination_date"]
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def utc(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=dt.UTC)  # type: ignore[misc]


def row(eid: str, name: str, *, status: str = "Active", term: str = "", dept: str = "Engineering") -> dict[str, str]:
    return {"employee_id": eid, "first_name": name, "last_name": "Test", "work_email": f"{name.lower()}@example.com",
            "department": dept, "employment_type": "Employee", "status": status, "hire_date": "2020-01-06",
            "termination_date": term}


def sample(name: str, **labels: str) -> float:
    v = metrics.REGISTRY.get_sample_value(name, labels)
    return float(v or 0.0)


class App:
    """The scim2-server, read and changed with plain HTTP (an admin acting in the app)."""

    def __init__(self, peer: ScimPeer) -> None:
        self.peer = peer

    def call(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(self.peer.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={**self.peer.headers, "Content-Type": "application/scim+json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def user(self, username: str) -> dict[str, Any]:
        found = self.call("GET", f'Users?filter=userName%20eq%20%22{username}%22')["Resources"]
        assert len(found) == 1
        return dict(found[0])

    def groups_of(self, username: str) -> set[str]:
        uid = self.user(username)["id"]
        return {g["displayName"] for g in self.call("GET", "Groups?count=1000").get("Resources", [])
                if any(m.get("value") == uid for m in g.get("members") or [])}

    def add_group(self, name: str, username: str) -> None:
        self.call("POST", "Groups", {"schemas": [GROUP], "displayName": name,
                                     "members": [{"value": self.user(username)["id"]}]})

    def set_active(self, username: str, active: bool) -> None:
        uid = self.user(username)["id"]
        self.call("PATCH", f"Users/{uid}", {"schemas": [PATCH],
                                            "Operations": [{"op": "replace", "path": "active", "value": active}]})


class Env:
    def __init__(self, tmp_path: Path, db_url: str, peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(TOKEN_ENV, peer.token)
        self.app = App(peer)
        self.export = tmp_path / "hr.csv"
        # Monday 23 November 2026, 17:03 in Berlin (CET, UTC+1).
        self.now = utc(2026, 11, 23, 16, 3)
        doc = {
            "state": {"url": db_url},
            "sources": {"hris": {"location": str(self.export), "format": "csv", "profile": "generic",
                                 "timezone": "Europe/Berlin"}},
            "lifecycle": {"termination_time": "17:00", "missing_after": 2},
            "sla": {"deprovision": "10m"},
            "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100},
            "policy": {"username": "{work_email}", "rules": [
                {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"demo": ["All Staff"]}},
                {"name": "engineering", "when": {"department": "Engineering"}, "grant": {"demo": ["Engineering"]}},
            ]},
            # the demo app's own SLA: 5 minutes (overrides sla.deprovision)
            "connectors": {"demo": {"type": "scim", "url": peer.url, "token_env": TOKEN_ENV, "sla": "5m",
                                    "max_attempts": 2, "retry_budget": "5s", "rate_limit": 50}},
        }
        path = tmp_path / "jml.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.cfg = config_mod.load(path)
        self.rt = Runtime(self.cfg, clock=lambda: self.now)

    def write(self, rows: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        self.export.write_text(buf.getvalue(), encoding="utf-8")

    def plan(self) -> str | None:
        outcome = asyncio.run(plan_cycle(self.rt))
        assert not outcome.held, outcome.reasons
        return outcome.plan_id

    def work(self, before: list[Any] | None = None) -> None:
        """The workers until idle; `before` hooks run ahead of the SLA hook."""
        async def run() -> None:
            await self.rt.open_connectors()
            try:
                engine = build_engine(self.rt, poll_interval=0.05)
                engine.after_success[:0] = before or []
                await engine.run_until_idle(timeout=60)
            finally:
                await self.rt.close()
        asyncio.run(run())

    def tick(self) -> None:
        async def run() -> None:
            await self.rt.open_connectors()
            try:
                await sla.tick(ServiceContext(self.rt, build_engine(self.rt)))
            finally:
                await self.rt.close()
        asyncio.run(run())

    def clocks(self) -> list[sla.Clock]:
        return sla.clocks(self.rt)

    def audit(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rt.audit.records() if r["kind"] == kind]

    def join(self, *people: dict[str, str]) -> None:
        self.write(list(people))
        self.plan()
        self.work()


@pytest.fixture
def env(tmp_path: Path, db_url: str, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    e = Env(tmp_path, db_url, scim_peer, monkeypatch)
    try:
        yield e
    finally:
        e.rt.store.close()


def test_clock_starts_at_termination_in_hr_time_zone_and_stops_at_verified_read_back(env: Env) -> None:
    env.join(row("E1", "Ana"), row("E2", "Ben"))
    assert env.app.groups_of("ana@example.com") == {"All Staff", "Engineering"}
    duration_before = sample("jml_deprovision_duration_seconds_count", connector="demo")
    sum_before = sample("jml_deprovision_duration_seconds_sum", connector="demo")
    breaches_before = sample("jml_deprovision_sla_breaches_total", connector="demo")

    # HR: Ana's last day is today; termination_time 17:00 Berlin = 16:00Z. jml reads it at 17:03.
    env.write([row("E1", "Ana", term="2026-11-23"), row("E2", "Ben")])
    env.plan()
    [clock] = env.clocks()
    assert (clock.connector, clock.employee_id) == ("demo", "E1")
    assert clock.started_at == dt.datetime(2026, 11, 23, 17, 0, tzinfo=BERLIN) == utc(2026, 11, 23, 16, 0)
    assert clock.deadline == utc(2026, 11, 23, 16, 5)  # the connector's 5m, not the global 10m
    assert clock.verified_at is None
    [lv] = sla.in_flight(env.rt, env.now)
    assert lv["person"] == "E1" and lv["state"] == "queued" and lv["time_left"] == "2m"
    assert lv["seconds_left"] == 120 and lv["predicted_breach"] is False

    env.now = utc(2026, 11, 23, 16, 4)  # the pushes and the read-back happen "at" 17:04 Berlin
    env.work()
    user = env.app.user("ana@example.com")
    assert user["active"] is False and env.app.groups_of("ana@example.com") == set()
    [clock] = env.clocks()
    assert clock.verified_at == utc(2026, 11, 23, 16, 4) and clock.breached is False
    assert sample("jml_deprovision_duration_seconds_count", connector="demo") == duration_before + 1
    assert sample("jml_deprovision_duration_seconds_sum", connector="demo") == pytest.approx(sum_before + 240)
    assert sample("jml_deprovision_sla_breaches_total", connector="demo") == breaches_before
    [verified] = env.audit("deprovision_verified")
    assert verified["subject"] == "E1" and verified["data"]["seconds"] == 240 and not verified["data"]["breached"]
    assert sla.in_flight(env.rt, env.now) == []
    assert snapshot(env.rt)["leavers_in_flight"] == []
    env.tick()
    assert sample("jml_deprovisions_pending", connector="demo") == 0
    assert sample("jml_deprovision_oldest_pending_seconds", connector="demo") == 0

    out = io.StringIO()
    assert reports.sla_report(env.rt, out, month="2026-11") == 0
    text = out.getvalue()
    assert "1 leaver(s), 1 deprovision(s): 1 met, 0 breached, 0 pending" in text
    line = next(x for x in text.splitlines() if x.startswith("E1"))
    assert "2026-11-23T17:00:00+01:00" in line and "2026-11-23T17:04:00+01:00" in line
    assert line.split()[-1] == "met" and "4m" in line
    assert reports.sla_report(env.rt, io.StringIO(), month="2026-10") == 0


def test_breach_is_marked_by_tick_and_counted_once(env: Env) -> None:
    env.join(row("E1", "Ana"))
    before = sample("jml_deprovision_sla_breaches_total", connector="demo")
    env.write([row("E1", "Ana", term="2026-11-23")])
    env.plan()
    # Paused: nothing is pushed, and the leaver is flagged before the deadline passes.
    env.rt.store.set_setting("paused_connectors", ["demo"])
    env.tick()
    [lv] = sla.in_flight(env.rt, env.now)
    assert lv["state"] == "paused" and lv["predicted_breach"] is True
    assert sample("jml_deprovisions_predicted_breach", connector="demo") == 1
    assert sample("jml_deprovisions_pending", connector="demo") == 1
    assert sample("jml_deprovision_oldest_pending_seconds", connector="demo") == 180
    assert [r["subject"] for r in env.audit("sla_predicted_breach")] == ["E1"]
    assert sample("jml_deprovision_sla_breaches_total", connector="demo") == before

    env.now = utc(2026, 11, 23, 16, 6)  # past the 16:05 deadline
    env.tick()
    env.tick()
    assert env.clocks()[0].breached is True
    assert sample("jml_deprovision_sla_breaches_total", connector="demo") == before + 1
    assert sample("jml_deprovisions_predicted_breach", connector="demo") == 0  # a breach now, not a prediction
    assert sample("jml_deprovision_oldest_pending_seconds", connector="demo") == 360
    [lv] = sla.in_flight(env.rt, env.now)
    assert lv["breached"] is True and lv["time_left"] == "overdue by 1m"

    env.rt.store.set_setting("paused_connectors", [])
    env.now = utc(2026, 11, 23, 16, 9)
    env.work()
    [clock] = env.clocks()
    assert clock.verified_at == utc(2026, 11, 23, 16, 9) and clock.breached
    assert sample("jml_deprovision_sla_breaches_total", connector="demo") == before + 1  # not twice
    assert len(env.audit("sla_breach")) == 1
    out = io.StringIO()
    reports.sla_report(env.rt, out, month="2026-11")
    assert "0 met, 1 breached" in out.getvalue()


def test_app_still_granting_access_keeps_the_clock_running_and_replans(env: Env) -> None:
    env.join(row("E1", "Ana"))
    # An admin added Ana to a group in the app, outside jml: jml's leaver plan does not know it.
    env.app.add_group("Shadow Admins", "ana@example.com")
    failed_before = sample("jml_deprovision_verifications_total", connector="demo", outcome="not_deprovisioned")
    env.write([row("E1", "Ana", term="2026-11-23")])
    env.plan()
    env.work()
    # The first read-back found the group: flagged, re-planned, pushed, then verified.
    [unverified] = env.audit("deprovision_unverified")
    assert unverified["subject"] == "E1" and "still holds group:Shadow Admins" in unverified["data"]["problems"]
    plan_id = unverified["data"]["plan_id"]
    ops = env.rt.outbox.plan_ops(plan_id)
    assert [(q.op.action, q.op.detail.get("group"), q.state) for q in ops] == [
        (Action.REMOVE_MEMBER, "group:Shadow Admins", "done")]
    assert env.rt.outbox.plan(plan_id).origin == "reverify"  # type: ignore[union-attr]
    assert env.app.groups_of("ana@example.com") == set()
    assert sample("jml_deprovision_verifications_total", connector="demo",
                  outcome="not_deprovisioned") == failed_before + 1
    [clock] = env.clocks()
    assert clock.verified_at is not None


def test_reactivated_in_the_app_is_not_verified_and_replans_at_most_once_a_minute(env: Env) -> None:
    env.join(row("E1", "Ana"))
    # Someone re-enables the account in the app right after every deactivation jml pushes.
    async def reenable(q: QueuedOp, _r: ApplyResult) -> None:
        if q.op.action is Action.DEACTIVATE:
            await asyncio.to_thread(env.app.set_active, "ana@example.com", True)

    env.write([row("E1", "Ana", term="2026-11-23")])
    env.plan()
    env.work(before=[reenable])
    [clock] = env.clocks()
    assert clock.verified_at is None  # the request was sent and succeeded: not enough
    assert env.app.user("ana@example.com")["active"] is True
    # first read-back: re-planned (a second deactivate); second read-back within the minute: flagged only
    reverify = [p for p in env.rt.outbox.plans() if p.origin == "reverify"]
    assert len(reverify) == 1
    assert [r["data"]["plan_id"] is not None for r in env.audit("deprovision_unverified")] == [True, False]
    [lv] = sla.in_flight(env.rt, env.now)
    assert lv["state"] == "not_deprovisioned" and "account still active" in lv["last_check"]

    # A minute later tick() checks again; this time the app keeps it off.
    env.now += dt.timedelta(seconds=61)
    env.tick()
    assert len([p for p in env.rt.outbox.plans() if p.origin == "reverify"]) == 2
    env.work()
    [clock] = env.clocks()
    assert clock.verified_at == env.now and clock.breached is False
    assert env.app.user("ana@example.com")["active"] is False


def test_prediction_from_queue_depth_and_rate_limit(env: Env) -> None:
    people = [row(f"E{i}", f"P{i}") for i in range(1, 5)]
    env.join(*people)
    # The app takes 1 write/s. Four leavers at once, each with three operations (deactivate,
    # two group removals): the n-th is done after 3n writes plus one operation's latency.
    demo = env.cfg.connectors["demo"].model_copy(update={"rate_limit": 1.0})
    env.rt = Runtime(env.cfg.model_copy(update={"connectors": {"demo": demo}}), clock=lambda: env.now)
    env.write([row(p["employee_id"], p["first_name"], term="2026-11-23") for p in people])
    env.now = utc(2026, 11, 23, 16, 4)
    env.plan()
    flights = sla.in_flight(env.rt, env.now)
    assert [f["operations_ahead"] for f in flights] == [3, 6, 9, 12]
    assert not any(f["predicted_breach"] for f in flights)  # 60 s left: all make it
    # 7.5 s before the deadline only the first two can (3 s and 6 s, plus well under 1.5 s latency).
    env.now = utc(2026, 11, 23, 16, 4, 52, 500000)
    flights = sla.in_flight(env.rt, env.now)
    assert [f["predicted_breach"] for f in flights] == [False, False, True, True]
    env.tick()
    assert sample("jml_deprovisions_predicted_breach", connector="demo") == 2
    assert sample("jml_deprovisions_pending", connector="demo") == 4
    assert sorted(c.employee_id for c in env.clocks() if c.predicted_breach) == ["E3", "E4"]


def test_corrected_termination_date_cancels_the_clock(env: Env) -> None:
    env.join(row("E1", "Ana"))
    env.write([row("E1", "Ana", term="2026-11-23")])
    env.plan()
    # The leaver's work is cancelled before it ran (wrong termination date), and HR corrects the row.
    [queued] = [p for p in env.rt.outbox.plans() if p.state == "queued"]
    with env.rt.store.engine.begin() as conn:
        conn.execute(text("UPDATE operation SET state = 'cancelled' WHERE plan_id = :p"), {"p": queued.id})
    env.write([row("E1", "Ana", term="2026-12-31")])
    env.plan()
    env.tick()
    [clock] = env.clocks()
    assert clock.cancelled and clock.verified_at is None
    assert sla.in_flight(env.rt, env.now) == []
    assert [r["subject"] for r in env.audit("sla_cancelled")] == ["E1"]
    out = io.StringIO()
    reports.sla_report(env.rt, out, month="2026-11")
    assert "1 cancelled" in out.getvalue()


def test_held_plan_leaver_clock_starts_at_the_termination_and_is_predicted_to_breach(env: Env) -> None:
    env.join(*[row(f"E{i}", f"P{i}") for i in range(1, 4)])
    cfg = env.cfg.model_copy(update={"guard": env.cfg.guard.model_copy(update={"max_deprovision_count": 0})})
    env.rt = Runtime(cfg, clock=lambda: env.now)
    env.write([row("E1", "P1", term="2026-11-23"), row("E2", "P2"), row("E3", "P3")])
    outcome = asyncio.run(plan_cycle(env.rt))
    assert outcome.held
    [clock] = env.clocks()
    # the held plan does not record the person, but the clock still starts at HR's 17:00 Berlin
    assert clock.started_at == utc(2026, 11, 23, 16, 0)
    [lv] = sla.in_flight(env.rt, env.now)
    assert lv["state"] == "held" and lv["predicted_breach"] is True
    env.tick()
    assert sample("jml_plans_held") == 1
    assert sample("jml_deprovisions_predicted_breach", connector="demo") == 1


def test_leavers_are_verified_in_one_batch_each_once(env: Env) -> None:
    """The hook only notes who finished; verify_batch reads them all back together and stops
    every clock with one audit record each. A person with work still open is left for later."""
    people = [row(f"E{i}", f"P{i}") for i in range(1, 7)]
    env.join(*people)
    env.write([row(f"E{i}", f"P{i}", term="2026-11-23") for i in range(1, 6)] + [people[5]])
    env.plan()
    keys = [("demo", f"E{i}") for i in range(1, 6)]
    assert asyncio.run(sla.verify_batch(env.rt, keys)) == 0  # their operations are still queued

    async def verify_nothing_during_work() -> None:
        await env.rt.open_connectors()
        try:
            engine = build_engine(env.rt, poll_interval=0.05)
            engine.after_success.clear()  # the pushes only; the read-back is done below
            await engine.run_until_idle(timeout=60)
            assert await sla.verify_batch(env.rt, [*keys, ("demo", "E6")]) == 5
            assert await sla.verify_batch(env.rt, keys) == 0  # already stopped: counted once
        finally:
            await env.rt.close()

    asyncio.run(verify_nothing_during_work())
    assert all(c.verified_at == env.now for c in env.clocks()) and len(env.clocks()) == 5
    assert sorted(r["subject"] for r in env.audit("deprovision_verified")) == [f"E{i}" for i in range(1, 6)]
    assert env.rt.audit.verify().ok
