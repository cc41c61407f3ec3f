"""Issue 17: a missed deprovision deadline says why — HR data late, a held plan, a paused
connector, the vendor's rate limit, app errors, or jml's own backlog — recorded on the clock
when the breach is counted, in `report sla`, `jml status` and a metric by cause."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from jml import metrics, reports
from jml import status as status_mod
from jml.model import Action, Operation, Priority
from jml.runtime import Runtime
from jml.sla_causes import cause_of
from jml.sla_clocks import clocks, count_breach
from jml.store.tables import SlaClockRow
from tests.integration.test_web import NOW, _config, _seed

SC = SlaClockRow.__table__  # type: ignore[attr-defined]


@pytest.fixture
def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    runtime = Runtime(_config(tmp_path), clock=lambda: NOW)
    _seed(runtime)
    yield runtime
    runtime.store.close()


def _leaver_op(rt: Runtime, plan_id: str, eid: str, connector: str, *, at: dt.datetime, held: bool = False,
               reasons: list[str] | None = None) -> int:
    rt.outbox.save_plan(plan_id, [Operation(connector, Action.DEACTIVATE, eid, {"username": eid}, Priority.LEAVER)],
                        held=held, origin="export", reasons=reasons or [], summary={"deactivate": 1},
                        policy_hash=None, export_id=None, now=at)
    [q] = rt.outbox.plan_ops(plan_id)
    assert q.id is not None
    return q.id


def test_causes(rt: Runtime) -> None:
    deadline = NOW - dt.timedelta(minutes=25)
    started = deadline - dt.timedelta(minutes=5)
    # HR data late: jml first planned the leaver after the deadline.
    _leaver_op(rt, "p-late", "E1", "demo", at=NOW)
    assert cause_of(rt, "demo", "E1", deadline, started) == "hr_data_late"
    # A held plan.
    _leaver_op(rt, "p-held", "E2", "demo", at=started, held=True, reasons=["would deactivate 50%"])
    assert cause_of(rt, "demo", "E2", deadline, started) == "held_plan"
    # The vendor's rate limit.
    op = _leaver_op(rt, "p-429", "E3", "chat", at=started)
    rt.outbox.mark_failed(op, "chat: rate limited (HTTP 429)", dead=False, attempts=3, now=NOW)
    assert cause_of(rt, "chat", "E3", deadline, started) == "vendor_rate_limit"
    # App errors.
    op = _leaver_op(rt, "p-err", "E4", "chat", at=started)
    rt.outbox.mark_failed(op, "chat: refused (HTTP 400): bad request", dead=True, attempts=1, now=NOW)
    assert cause_of(rt, "chat", "E4", deadline, started) == "app_errors"
    # A paused connector.
    _leaver_op(rt, "p-pause", "E5", "chat", at=started)
    rt.store.set_setting("paused_connectors", ["chat"])
    assert cause_of(rt, "chat", "E5", deadline, started) == "paused_connector"
    # Nothing else: queued behind other work.
    _leaver_op(rt, "p-q", "E6", "demo", at=started)
    assert cause_of(rt, "demo", "E6", deadline, started) == "jml_backlog"


def test_a_counted_breach_records_its_cause_everywhere(rt: Runtime) -> None:
    deadline = NOW - dt.timedelta(minutes=2)
    with rt.store.engine.begin() as conn:
        conn.execute(SC.insert(), [{"connector": "demo", "employee_id": "E100", "started_at": deadline
                                    - dt.timedelta(minutes=10), "deadline": deadline, "verified_at": None,
                                    "breached": False, "predicted_breach": False}])
    _leaver_op(rt, "p-held", "E100", "demo", at=deadline - dt.timedelta(minutes=9), held=True,
               reasons=["would deactivate 50% of demo (limit 5%)"])
    before = metrics.sla_breaches_by_cause.labels("demo", "held_plan")._value.get()
    [clock] = [c for c in clocks(rt, open_only=True) if c.employee_id == "E100"]
    count_breach(rt, clock, NOW)
    count_breach(rt, clock, NOW)  # counted once
    assert metrics.sla_breaches_by_cause.labels("demo", "held_plan")._value.get() == before + 1
    [clock] = [c for c in clocks(rt) if c.employee_id == "E100" and c.connector == "demo"]
    assert clock.breach_cause == "held_plan"
    [rec] = [r for r in rt.audit.records(subject="E100") if r["kind"] == "sla_breach"]
    assert rec["data"]["cause"] == "held_plan"
    out = io.StringIO()
    reports.sla_report(rt, out, month="2026-11")
    text = out.getvalue()
    assert "breaches by cause:" in text and "held plan: the deprovision waited for an approval" in text
    assert "held_plan" in text
    rendered = metrics.render().decode()
    assert 'jml_deprovision_sla_breaches_by_cause_total{cause="held_plan",connector="demo"}' in rendered
    doc = status_mod.snapshot(rt)
    breach = next(i for i in doc["attention"] if i["kind"] == "breach" and i["person"] == "E100")
    assert breach["why"].startswith("held plan")


def test_a_breach_counted_after_the_resume_is_still_the_pause(rt: Runtime) -> None:
    """The breach of a leaver whose deadline passed while the connector was paused is often counted
    after the resume (when the deprovision is verified, or by the next tick): still paused_connector."""
    from jml.sla_causes import paused_at, record_pause

    deadline = NOW - dt.timedelta(minutes=25)
    started = deadline - dt.timedelta(minutes=5)
    _leaver_op(rt, "p-was-paused", "E7", "chat", at=started)
    record_pause(rt, "chat", True, started + dt.timedelta(minutes=1))
    record_pause(rt, "chat", False, deadline + dt.timedelta(minutes=3))
    assert rt.store.get_setting("paused_connectors", []) in ([], None)  # not paused now
    assert paused_at(rt, "chat", deadline) and not paused_at(rt, "chat", deadline + dt.timedelta(minutes=4))
    assert cause_of(rt, "chat", "E7", deadline, started) == "paused_connector"
    # Paused only after the deadline had passed: not the cause.
    _leaver_op(rt, "p-late-pause", "E8", "demo", at=started)
    record_pause(rt, "demo", True, deadline + dt.timedelta(minutes=1))
    record_pause(rt, "demo", False, deadline + dt.timedelta(minutes=2))
    assert cause_of(rt, "demo", "E8", deadline, started) == "jml_backlog"
