"""The ops runbooks (docs/runbooks) followed as written, through the command line a user runs,
against a real scim2-server. Each step below cites its runbook file and step number; when a
runbook changes, the test that follows it changes with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_cli import Cli, _empty, people
from tests.e2e.test_cli import peer as peer  # the module's SCIM server fixture
from tests.peers import ScimPeer, free_port

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
LENIENT_GUARD = {"max_deprovision_percent": 100, "max_deprovision_count": 100, "max_shrink_percent": 10}


def step(book: str, n: int) -> str:
    """The text of step `n` of a runbook (and a check that the step still exists as cited)."""
    text = (RUNBOOKS / book).read_text(encoding="utf-8")
    m = re.search(rf"^{n}\. (.*?)(?=^\d+[a-z]?\. |\Z)", text, re.S | re.M)
    assert m, f"{book} has no step {n}: the runbook changed, update this test with it"
    return " ".join(m.group(1).split())


def active(cli: Cli) -> dict[str, bool]:
    return {u["userName"]: bool(u.get("active", True)) for u in cli.users()}


@pytest.fixture
def fresh(peer: ScimPeer) -> ScimPeer:
    _empty(peer)
    return peer


def test_dead_letter_retry(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = Cli(tmp_path, fresh, guard=LENIENT_GUARD)
    rows = people(4)
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    # The app becomes unreachable (the connector's url is wrong) while a mover is pushed.
    doc = yaml.safe_load(cli.config.read_text(encoding="utf-8"))
    good_url = doc["connectors"]["demo"]["url"]
    doc["connectors"]["demo"]["url"] = f"http://127.0.0.1:{free_port()}/v2/"
    cli.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    rows[2].update(department="Sales", job_title="Seller")
    cli.write(rows)
    assert cli.run("sync").returncode == 1  # dead-lettered

    # ops-dead-letter.md step 1: `jml status` lists each dead letter as `#<id> <connector> <action> <employee id>: …`.
    assert "jml status" in step("ops-dead-letter.md", 1)
    status = cli.run("status").stdout
    dead = re.findall(r"#(\d+) demo (\w+) E002: ", status)
    assert dead, status
    assert "NEEDS ATTENTION" in status and "failed" in status
    # Step 2/3: the cause (unreachable) is fixed: the connector's url is right again.
    assert "url" in step("ops-dead-letter.md", 3)
    doc["connectors"]["demo"]["url"] = good_url
    cli.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    # Step 4: `jml retry --all` prints "N operation(s) back in the outbox" and pushes them at once.
    assert "`jml retry --all`" in step("ops-dead-letter.md", 4)
    r = cli.run("retry", "--all")
    assert r.returncode == 0, r.stderr
    assert f"{len(dead)} operation(s) back in the outbox" in r.stdout
    # Step 5: `jml status` shows `dead 0` for the connector.
    assert "`dead 0`" in step("ops-dead-letter.md", 5)
    status = cli.run("status").stdout
    assert re.search(r"demo\s+pending\s+0\s+running\s+0\s+dead\s+0", status), status
    titles = {u["userName"]: u.get("title") for u in cli.users()}
    assert titles["person.n002@example.com"] == "Seller"


def test_paused_connector_resume(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = Cli(tmp_path, fresh, guard=LENIENT_GUARD)
    rows = people(4)
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    assert cli.run("pause", "demo").returncode == 0  # maintenance window
    rows[1].update(status="Terminated", termination_date="2026-12-01")
    cli.write(rows)
    assert cli.run("sync").returncode == 1  # the leaver's work waits: pending
    assert active(cli)["person.n001@example.com"] is True

    # ops-paused-connector.md step 1: the connector's line ends with PAUSED; the attention item names it.
    assert "`PAUSED`" in step("ops-paused-connector.md", 1)
    status = cli.run("status").stdout
    assert re.search(r"demo\s+pending\s+\d+.*PAUSED", status), status
    assert "Connector demo is paused" in status
    # Step 2: the audit trail names who paused it (records of kind `pause`).
    assert "`jml audit export`" in step("ops-paused-connector.md", 2)
    trail = [json.loads(line) for line in cli.run("audit", "export").stdout.splitlines()]
    assert any(rec.get("kind") == "pause" and rec.get("actor") == "cli" for rec in trail)
    # Step 3: `jml check` reaches the app.
    assert "`jml check`" in step("ops-paused-connector.md", 3)
    assert cli.run("check").returncode == 0
    # Step 4: `jml resume <name>` prints "<name> resumed".
    assert "`jml resume <name>`" in step("ops-paused-connector.md", 4)
    r = cli.run("resume", "demo")
    assert r.returncode == 0 and "demo resumed" in r.stdout
    # Step 5: no daemon here: `jml sync` pushes the waiting operations.
    assert "`jml sync`" in step("ops-paused-connector.md", 5)
    assert cli.run("sync").returncode == 0
    # Step 6: not PAUSED, pending 0; the leaver is deprovisioned in the app.
    status = cli.run("status").stdout
    assert "PAUSED" not in status and re.search(r"demo\s+pending\s+0\b", status), status
    assert active(cli)["person.n001@example.com"] is False


@pytest.mark.parametrize("decision", ["approve", "discard"])
def test_held_plan(tmp_path: Path, fresh: ScimPeer, decision: str) -> None:
    cli = Cli(tmp_path, fresh)  # the default guard: 5% of the accounts at most
    rows = people(6)
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    for r in rows[:3]:
        r.update(status="Terminated", termination_date="2026-12-01")
    cli.write(rows)
    assert cli.run("sync").returncode == 3  # held

    # ops-held-plan.md step 1: `jml status` lists `<plan id> held <time>: <summary>` and the guard's reason.
    assert "held plans" in step("ops-held-plan.md", 1)
    status = cli.run("status").stdout
    held = re.findall(r"^\s+([0-9a-f]{12})\s+held ", status, re.M)
    assert len(held) == 1, status
    plan_id = held[0]
    assert "max_deprovision_percent" in status
    # Step 2: `jml plan` shows what the next read would change (nothing is applied meanwhile).
    assert "`jml plan`" in step("ops-held-plan.md", 2)
    assert all(active(cli).values())
    if decision == "approve":
        # Step 4: `jml approve <plan id>` prints "plan <id> approved: applying" and applies it at once.
        assert "`jml approve <plan id>`" in step("ops-held-plan.md", 4)
        r = cli.run("approve", plan_id)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"plan {plan_id} approved: applying" in r.stdout
        states = active(cli)
        assert [states[f"person.n00{i}@example.com"] for i in range(6)] == [False] * 3 + [True] * 3
    else:
        # Step 5: bad data: `jml discard <plan id>`; HR fixes the export; the next read plans again.
        assert "`jml discard <plan id>`" in step("ops-held-plan.md", 5)
        r = cli.run("discard", plan_id)
        assert r.returncode == 0 and f"{plan_id} discarded" in r.stdout
        cli.write(people(6))  # HR's corrected export: nobody left
        assert cli.run("sync").returncode == 0
        assert all(active(cli).values())
    # Step 6: `jml status` lists no held plan.
    assert "no held plan" in step("ops-held-plan.md", 6)
    assert not re.findall(r"^\s+[0-9a-f]{12}\s+held ", cli.run("status").stdout, re.M)


def test_offboard_now_and_undo(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = Cli(tmp_path, fresh)
    cli.write(people(4))
    assert cli.run("sync").returncode == 0

    # hr-offboard-now.md step 3, the command line: `jml offboard <employee id> --reason "…"`.
    assert "`jml offboard <employee id> --reason" in step("hr-offboard-now.md", 3)
    r = cli.run("offboard", "E001", "--reason", "dismissed effective immediately; HR-1234")
    assert r.returncode == 0, r.stdout + r.stderr
    # Step 4: every connector deactivates the accounts at once (the command waits for the push).
    assert "at once" in step("hr-offboard-now.md", 4)
    assert active(cli)["person.n001@example.com"] is False
    trail = [json.loads(line) for line in cli.run("audit", "export").stdout.splitlines()]
    assert any(rec.get("kind") == "offboard" and "HR-1234" in json.dumps(rec.get("data")) for rec in trail)
    # Step 6: done by mistake: `jml offboard <employee id> --undo --reason "…"` — re-evaluated from HR.
    assert "--undo" in step("hr-offboard-now.md", 6)
    r = cli.run("offboard", "E001", "--undo", "--reason", "wrong person; HR-1235")
    assert r.returncode == 0, r.stdout + r.stderr
    assert cli.run("sync").returncode == 0
    assert active(cli)["person.n001@example.com"] is True
