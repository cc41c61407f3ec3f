"""The audit trail on SQLite and PostgreSQL: an append-only hash chain; `jml audit export`
and `jml audit verify [FILE]` catch an edited record, a deleted middle record and a cut tail
(in an export and in the database); and what jml does lands in it — every HR change, every
plan with its rules and policy hash, approvals, pushes and offboards."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from jml import approvals, cli
from jml import config as config_mod
from jml.audit import GENESIS, canonical, chain
from jml.runtime import Runtime
from jml.store.audit import AuditLog
from jml.store.repo import Store
from jml.sync import plan_cycle
from tests.peers import ScimPeer

TOKEN_ENV = "JML_TEST_AUDIT_SCIM_TOKEN"
FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "employment_type", "status",
          "hire_date", "termination_date"]
T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


def row(eid: str, name: str, *, dept: str = "Engineering", status: str = "Active", term: str = "") -> dict[str, str]:
    return {"employee_id": eid, "first_name": name, "last_name": "Test", "work_email": f"{name.lower()}@example.com",
            "department": dept, "employment_type": "Employee", "status": status, "hire_date": "2020-01-06",
            "termination_date": term}


class Env:
    def __init__(self, tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str],
                 peer_url: str = "http://127.0.0.1:9/v2/") -> None:
        self.tmp = tmp_path
        self.capsys = capsys
        self.export = tmp_path / "hr.csv"
        doc = {
            "state": {"url": db_url},
            "sources": {"hris": {"location": str(self.export), "format": "csv", "profile": "generic",
                                 "timezone": "Europe/Berlin"}},
            "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100},
            "policy": {"username": "{work_email}", "rules": [
                {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"demo": ["All Staff"]}},
                {"name": "engineering", "when": {"department": "Engineering"}, "grant": {"demo": ["Engineering"]}},
            ]},
            "connectors": {"demo": {"type": "scim", "url": peer_url, "token_env": TOKEN_ENV,
                                    "max_attempts": 1, "retry_budget": "2s"}},
        }
        self.config = tmp_path / "jml.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.cfg = config_mod.load(self.config)
        self.store = Store(db_url)
        self.rt = Runtime(self.cfg, store_override=self.store)

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--config", str(self.config), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def write(self, rows: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        self.export.write_text(buf.getvalue(), encoding="utf-8")

    def fill(self, n: int = 6) -> None:
        log = AuditLog(self.store)
        for i in range(n):
            log.append("test", {"i": i, "note": f"record {i}"}, now=T0 + dt.timedelta(minutes=i), subject=f"E{i}")

    def export_lines(self, *args: str) -> list[str]:
        code, out, err = self.cli("audit", "export", *args)
        assert code == 0, err
        return out.splitlines()

    def verify_file(self, lines: list[str]) -> tuple[int, str, str]:
        path = self.tmp / "export.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.cli("audit", "verify", str(path))

    def kinds(self) -> list[str]:
        return [r["kind"] for r in AuditLog(self.store).records()]


@pytest.fixture
def env(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Env]:
    e = Env(tmp_path, db_url, capsys)
    try:
        yield e
    finally:
        e.store.close()


# ---- the chain -------------------------------------------------------------------------
def test_append_only_chain(env: Env) -> None:
    env.fill(5)
    log = AuditLog(env.store)
    recs = list(log.records())
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    prev = GENESIS
    for r in recs:
        assert r["prev_hash"] == prev
        assert r["hash"] == chain(prev, canonical(r["seq"], r["at"], r["kind"], r["actor"], r["subject"], r["data"]))
        prev = r["hash"]
    assert log.head() == (5, prev)
    assert log.verify().ok
    # appending more keeps every earlier record as it was
    log.append_many([("test", {"i": 5}, "jml", None), ("test", {"i": 6}, "jml", None)], now=T0)
    assert list(log.records())[:5] == recs
    assert log.verify().ok and log.verify().count == 7


def test_secrets_never_reach_the_trail(env: Env) -> None:
    from jml.redact import register_secret

    register_secret("s3cr3t-token-value-123")
    AuditLog(env.store).append("push", {"error": "401 with Bearer s3cr3t-token-value-123"}, now=T0)
    [rec] = AuditLog(env.store).records()
    assert "s3cr3t-token-value-123" not in json.dumps(rec)


# ---- exports ---------------------------------------------------------------------------
def test_export_then_verify_passes(env: Env) -> None:
    env.fill()
    lines = env.export_lines()
    assert len(lines) == 7 and json.loads(lines[-1]) == {"head": {"count": 6, "hash": AuditLog(env.store).head()[1]}}
    code, out, _ = env.verify_file(lines)
    assert code == 0 and "intact: 6 records" in out


def test_export_since_verifies_on_its_own(env: Env) -> None:
    env.fill()
    lines = env.export_lines("--since", (T0 + dt.timedelta(minutes=3)).isoformat())
    assert [json.loads(x).get("seq") for x in lines[:-1]] == [4, 5, 6]
    assert env.verify_file(lines)[0] == 0


def test_edited_record_in_an_export_fails(env: Env) -> None:
    env.fill()
    lines = env.export_lines()
    rec = json.loads(lines[2])
    rec["data"]["note"] = "nothing happened here"
    lines[2] = json.dumps(rec)
    code, _, err = env.verify_file(lines)
    assert code == 1 and "record 3" in err and "edited" in err


def test_rehashed_edit_in_an_export_fails_at_the_next_record(env: Env) -> None:
    env.fill()
    lines = env.export_lines()
    rec = json.loads(lines[2])
    rec["data"]["note"] = "forged"
    rec["hash"] = chain(rec["prev_hash"], canonical(rec["seq"], rec["at"], rec["kind"], rec["actor"], rec["subject"],
                                                    rec["data"]))
    lines[2] = json.dumps(rec)
    code, _, err = env.verify_file(lines)
    assert code == 1 and "record 4" in err


def test_deleted_middle_record_in_an_export_fails(env: Env) -> None:
    env.fill()
    lines = env.export_lines()
    del lines[3]
    code, _, err = env.verify_file(lines)
    assert code == 1 and "BROKEN" in err


def test_cut_tail_of_an_export_fails_thanks_to_the_head_line(env: Env) -> None:
    env.fill()
    lines = env.export_lines()
    cut = lines[:4] + lines[-1:]  # records 5 and 6 gone, the head line kept
    code, _, err = env.verify_file(cut)
    assert code == 1 and "deleted from the end" in err
    # without the head line a cut tail cannot be seen: verify says so
    code, _, err = env.verify_file(lines[:4])
    assert code == 0 and "no head line" in err


def test_verify_of_an_unreadable_export(env: Env) -> None:
    env.fill(2)
    lines = env.export_lines()
    lines.insert(1, "{not json")
    assert env.verify_file(lines)[0] == 1
    assert env.cli("audit", "verify", str(env.tmp / "missing.jsonl"))[0] == 2


# ---- the database ----------------------------------------------------------------------
def test_database_verify_passes_then_catches_an_edited_row(env: Env) -> None:
    env.fill()
    code, out, _ = env.cli("audit", "verify")
    assert code == 0 and "6 records" in out
    with env.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit SET data = :d WHERE seq = 3"), {"d": json.dumps({"i": 99})})
    code, _, err = env.cli("audit", "verify")
    assert code == 1 and "record 3" in err


def test_database_verify_catches_deleted_newest_rows(env: Env) -> None:
    env.fill()
    with env.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit WHERE seq >= 5"))
    code, _, err = env.cli("audit", "verify")
    assert code == 1 and "deleted from the end" in err


def test_database_verify_catches_a_deleted_middle_row(env: Env) -> None:
    env.fill()
    with env.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit WHERE seq = 2"))
    code, _, err = env.cli("audit", "verify")
    assert code == 1 and "gap" in err


# ---- what lands in the trail -------------------------------------------------------------
@pytest.fixture
def live(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str], scim_peer: ScimPeer,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv(TOKEN_ENV, scim_peer.token)
    e = Env(tmp_path, db_url, capsys, peer_url=scim_peer.url)
    try:
        yield e
    finally:
        e.store.close()


def _records(env: Env, kind: str) -> list[dict[str, Any]]:
    return [r for r in AuditLog(env.store).records() if r["kind"] == kind]


def test_trail_records_hr_changes_plans_pushes_approvals_and_offboards(live: Env) -> None:
    env = live
    env.write([row("E1", "Ana"), row("E2", "Ben", dept="Sales")])
    code, _, err = env.cli("sync")
    assert code == 0, err
    hr = {r["subject"]: r["data"] for r in _records(env, "hr_change")}
    assert hr["E1"]["kind"] == "joiner" and hr["E2"]["kind"] == "joiner"
    [plan] = _records(env, "plan")
    assert plan["data"]["policy_hash"] == env.rt.policy.fingerprint()
    [ops] = _records(env, "plan_operations")
    assert ops["data"]["plan_id"] == plan["data"]["plan_id"]
    rules = {(o["person"], o["target"]): o["rule"] for o in ops["data"]["operations"] if o["person"] and o["target"]}
    assert rules == {("E1", "group:All Staff"): "everyone", ("E1", "group:Engineering"): "engineering",
                     ("E2", "group:All Staff"): "everyone"}
    pushes = _records(env, "push")
    assert {(p["subject"], p["data"]["action"]) for p in pushes if p["subject"]} == {
        ("E1", "create"), ("E1", "add_member"), ("E2", "create"), ("E2", "add_member")}
    assert all(p["data"]["result"] == "success" and p["data"]["plan_id"] == plan["data"]["plan_id"] for p in pushes)
    n_add = [p for p in pushes if p["subject"] == "E1" and p["data"]["action"] == "add_member"]
    assert sorted(p["data"]["detail"]["rule"] for p in n_add) == ["engineering", "everyone"]

    # A mover (Ben to Engineering) held by a strict guard, then approved.
    doc = yaml.safe_load(env.config.read_text(encoding="utf-8"))
    doc["guard"] = {"max_deprovision_percent": 0, "max_deprovision_count": 0}
    env.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env.write([row("E1", "Ana", status="Terminated", term="2026-01-05"), row("E2", "Ben")])
    code, out, _ = env.cli("sync")
    assert code == 3 and "HELD" in out
    held = [r for r in _records(env, "plan") if r["data"]["held"]]
    assert len(held) == 1 and held[0]["data"]["reasons"]
    assert {r["subject"] for r in _records(env, "hr_change")} >= {"E1", "E2"}
    code, _, err = env.cli("approve", held[0]["data"]["plan_id"])
    assert code == 0, err
    [approval] = _records(env, "approval")
    me = approvals.cli_approver().actor  # the OS user at the CLI
    assert approval["data"]["plan_id"] == held[0]["data"]["plan_id"] and approval["actor"] == me
    assert ("E1", "deactivate") in {(p["subject"], p["data"]["action"]) for p in _records(env, "push")}

    # HR's offboard-now.
    code, _, err = env.cli("offboard", "E2", "--reason", "left today")
    assert code in (0, 3), err
    [off] = _records(env, "offboard")
    assert off["subject"] == "E2" and off["data"]["reason"] == "left today" and off["actor"] == me
    code, _, _ = env.cli("audit", "verify")
    assert code == 0


def test_plan_cycle_records_hr_change_reasons(live: Env) -> None:
    env = live
    env.write([row("E1", "Ana")])
    asyncio.run(plan_cycle(env.rt))
    env.write([row("E1", "Ana", status="Terminated", term="2026-01-05")])
    asyncio.run(plan_cycle(env.rt))
    changes = [r["data"] for r in _records(env, "hr_change") if r["subject"] == "E1"]
    assert [c["kind"] for c in changes] == ["joiner", "leaver"]
    assert changes[1]["reason"] == "HR status Terminated" and changes[1]["effective_termination"]
