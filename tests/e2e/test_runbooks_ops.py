"""More ops runbooks (docs/runbooks) followed as written: a poisoned webhook event, an SLA breach,
a stale HR source, a connector's errors and retention, through the command line (and, where a
runbook needs the daemon, `jml serve`) against a real scim2-server. Each step cites its runbook
file and step number, like tests/e2e/test_runbooks.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tests.e2e.helpers import http, jml_bin, person, scim_users, start_serve, wait_until, write_config, write_export
from tests.e2e.test_cli import FIELDS, Cli, people
from tests.e2e.test_cli import peer as peer  # the module's SCIM server fixture
from tests.e2e.test_purge import _dump, _found
from tests.e2e.test_runbooks import LENIENT_GUARD, active, fresh, step
from tests.peers import ScimPeer, free_port

__all__ = ["fresh", "peer"]  # fixtures, imported to be used here

ADMIN = "runbook-admin-token"
HR_SECRET = "runbook-hr-secret"


def _jml(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([jml_bin(), "--config", str(cfg), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cfg.parent, timeout=120)


def _status_json(cfg: Path, env: dict[str, str]) -> dict[str, Any]:
    r = _jml(cfg, env, "status", "--json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _api_status(served: Any) -> dict[str, Any]:
    """The daemon's status document (what `jml status --json` prints), for waiting on it cheaply."""
    status, doc = served.get_json("/api/v1/status", {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200, doc
    return dict(doc)


def _by_eid(peer: ScimPeer) -> dict[str, dict[str, Any]]:
    return {str(u.get("externalId")): u for u in scim_users(peer.url, peer.token)}


def _metric(body: bytes, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` with these labels (None: no such sample)."""
    found = None
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(got.get(k) == v for k, v in labels.items()):
            found = (found or 0.0) + float(value)
    return found


def _section(page: str, section_id: str) -> str:
    m = re.search(rf'<section class="card" id="{section_id}">(.*?)</section>', page, re.S)
    assert m, f"the status page has no section {section_id}"
    return m.group(1)


# ---- ops-poisoned-event.md -----------------------------------------------------------------
POISON_AT = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.UTC)


def test_poisoned_event(tmp_path: Path, fresh: ScimPeer) -> None:
    write_export(tmp_path / "exports", "hr.csv", [person(i) for i in range(1, 4)])
    # HR's zone is west of UTC: the poisoned termination (9999-12-31, 23:59 local) is in year 10000 in UTC.
    cfg = write_config(tmp_path, scim_url=fresh.url, hris={"timezone": "America/New_York"},
                       extra={"guard": LENIENT_GUARD})
    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    doc["sources"]["webhook"] = {"secret_env": "HR_SECRET"}
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"SCIM_TOKEN": fresh.token, "HR_SECRET": HR_SECRET, "JML_ADMIN_TOKEN": ADMIN}
    with start_serve(cfg, env) as served:
        served.wait_ready()
        wait_until(lambda: len(_by_eid(fresh)) == 3, 30, what="the export provisioned")
        # An event that fails while processed: stored as an earlier jml's intake stored it (today's intake
        # refuses a time out of range, so no sender can post this one any more), for E0000001's termination.
        from jml.store.inbox import Inbox
        from jml.store.repo import Store
        from jml.webhooks import HrEvent, sign

        store = Store(f"sqlite:///{tmp_path / 'jml.db'}", migrate_schema=False)
        Inbox(store).add_hr(HrEvent("poison", "termination", POISON_AT, {"employee_id": "E0000001"}),
                            dt.datetime.now(dt.UTC))
        store.engine.dispose()
        # ...and a sound termination for E0000002 after it.
        raw = json.dumps({"id": "term-2", "type": "termination", "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                          "person": {"employee_id": "E0000002"}}).encode()
        t = int(time.time())
        status, body = served.post("/webhooks/hr", raw, {"Content-Type": "application/json",
                                                         "X-JML-Signature": f"t={t},v1={sign(HR_SECRET, t, raw)}"})
        assert status == 200, body
        wait_until(lambda: _api_status(served)["events"]["quarantined"], 30, 0.2, "the event set aside")

        # Seen as: `jml status`'s events line counts "set aside (quarantined) N"; Needs attention names the event;
        # the metric jml_events_quarantined.
        text = _jml(cfg, env, "status").stdout
        assert re.search(r"webhook events: .*set aside \(quarantined\) 1\b", text), text
        assert "Webhook event hr:poison set aside (quarantined)" in text
        assert _metric(served.get("/metrics")[1], "jml_events_quarantined") == 1.0

        # ops-poisoned-event.md step 1: `jml status --json`: events.quarantined[] with id, source, error; the log
        # has "webhook event quarantined" with the same event_id and the traceback.
        assert "`jml status --json`" in step("ops-poisoned-event.md", 1)
        quarantined = _status_json(cfg, env)["events"]["quarantined"]
        assert [(q["id"], q["source"]) for q in quarantined] == [("hr:poison", "hr")]
        assert "OverflowError" in quarantined[0]["error"]
        logged = [r for r in served.log_records() if r.get("event") == "webhook event quarantined"]
        assert [r.get("event_id") for r in logged] == ["hr:poison"], served.logs()[-3000:]
        assert "Traceback" in logged[0].get("exception", "")
        # Step 2: nothing else is blocked: the termination after it went on.
        assert "nothing else is blocked" in step("ops-poisoned-event.md", 2)
        wait_until(lambda: _by_eid(fresh)["E0000002"].get("active") is False, 30, 0.2, "the next termination")
        assert _api_status(served)["events"]["pending"] == 0
        # Step 3: the change it carried was not applied (E0000001 still has access): Offboard now.
        assert "not** applied" in step("ops-poisoned-event.md", 3)
        assert "Offboard now" in step("ops-poisoned-event.md", 3)
        assert _by_eid(fresh)["E0000001"].get("active") is True
        r = _jml(cfg, env, "offboard", "E0000001", "--reason", "termination webhook set aside; HR-77")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: _by_eid(fresh)["E0000001"].get("active") is False, 30, 0.2, "the offboarded leaver")
        assert _by_eid(fresh)["E0000003"].get("active") is True
        # Step 4: what engineering gets: the event id, as status shows it, is the one on the log line.
        assert "event id and the log line" in step("ops-poisoned-event.md", 4)
        assert logged[0]["event_id"] == quarantined[0]["id"]
        assert served.stop() == 0


# ---- ops-sla-breach.md ---------------------------------------------------------------------
def test_sla_breach(tmp_path: Path, fresh: ScimPeer) -> None:
    exports = tmp_path / "exports"
    rows = [person(i) for i in range(1, 4)]
    write_export(exports, "hr-1.csv", rows)
    cfg = write_config(tmp_path, scim_url=fresh.url, hris={"timezone": "UTC"},
                       extra={"guard": LENIENT_GUARD, "sla": {"deprovision": "3s"}})
    env = {"SCIM_TOKEN": fresh.token, "JML_ADMIN_TOKEN": ADMIN}
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    with start_serve(cfg, env) as served:
        served.wait_ready()
        wait_until(lambda: len(_by_eid(fresh)) == 3, 30, what="the export provisioned")
        # The app is in maintenance (its connector paused) when a leaver comes: the deadline passes.
        assert _jml(cfg, env, "pause", "demo").returncode == 0
        wait_until(lambda: _metric(served.get("/metrics")[1], "jml_connector_paused", connector="demo") == 1.0,
                   15, 0.2, "the daemon to take the pause")
        rows[0] = {**rows[0], "status": "Terminated", "termination_date": dt.datetime.now(dt.UTC).date().isoformat()}
        write_export(exports, "hr-2.csv", rows)
        missed = re.compile(r"^\s+E0000001\s+demo\s+deadline .* MISSED, overdue by .*; (\w+)$", re.M)
        wait_until(lambda: any(lv["person"] == "E0000001" and lv["breached"]
                               for lv in _api_status(served)["leavers_in_flight"]), 30, 0.2, "the deadline missed")
        text = _jml(cfg, env, "status").stdout

        # ops-sla-breach.md step 1: `jml status`, "leavers in flight": `<employee id> <connector> deadline … MISSED,
        # overdue by …; <state>`; the status page's Needs attention names the person, with why and what to do.
        assert "MISSED, overdue by" in step("ops-sla-breach.md", 1)
        assert "leavers in flight:" in text
        state = missed.search(text)
        assert state is not None
        assert "First1 Last1 (E0000001) is past the deprovision deadline in demo" in text
        status, body = served.get("/", bearer)
        assert status == 200
        page = body.decode()
        assert "E0000001" in _section(page, "leavers")
        attention = _section(page, "attention")
        assert "is past the deprovision deadline in demo" in attention and "paused connector" in attention
        # Step 2: unblock it by its state: `paused` -> Paused connector.
        assert "`paused` — the app's connector is paused" in step("ops-sla-breach.md", 2)
        assert state.group(1) == "paused"
        # Step 3: the person must lose access now and the app cannot be reached through jml: the access is
        # removed by hand in the app's admin console; the clock runs on until jml's own operations have gone
        # through (here: the connector resumed, ops-paused-connector.md), which verifies it.
        assert "by hand in the app's admin console" in step("ops-sla-breach.md", 3)
        assert "resumed" in step("ops-sla-breach.md", 3)
        account = _by_eid(fresh)["E0000001"]
        req = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                          "Operations": [{"op": "replace", "path": "active", "value": False}]}).encode()
        assert http(f"{fresh.url}Users/{account['id']}", method="PATCH", data=req,
                    headers={**fresh.headers, "Content-Type": "application/scim+json"})[0] in (200, 204)
        assert _by_eid(fresh)["E0000001"].get("active") is False
        assert any(lv["person"] == "E0000001" for lv in _api_status(served)["leavers_in_flight"]), \
            "the clock runs on until jml's operations have gone through"
        assert _jml(cfg, env, "resume", "demo").returncode == 0
        # Step 4: the leaver leaves Leavers in flight and appears in Verified in the last hour.
        assert "**Verified in the last hour**" in step("ops-sla-breach.md", 4)

        def verified() -> str | None:
            page = served.get("/", bearer)[1].decode()
            return page if "E0000001" in _section(page, "verified") else None
        page = wait_until(verified, 30, 0.5, "the deprovision verified")
        assert "E0000001" not in _section(page, "leavers")
        assert "leavers in flight" not in _jml(cfg, env, "status").stdout
        # The breach was counted (JmlDeprovisionSlaBreached: increase(jml_deprovision_sla_breaches_total) > 0).
        assert _metric(served.get("/metrics")[1], "jml_deprovision_sla_breaches_total", connector="demo") == 1.0
        # Step 5: `jml report sla --month <YYYY-MM>` lists the breach with its cause.
        assert "`jml report sla --month <YYYY-MM>`" in step("ops-sla-breach.md", 5)
        month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
        r = _jml(cfg, env, "report", "sla", "--month", month)
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("E0000001"))
        assert re.search(r"\bbreached\s+paused_connector$", line), r.stdout
        assert "1 breached" in r.stdout
        assert served.stop() == 0


def test_sla_breach_dead_letter(tmp_path: Path, fresh: ScimPeer) -> None:
    """ops-sla-breach.md step 2's `dead_letter`, through the command line alone (no daemon)."""
    cli = Cli(tmp_path, fresh, guard=LENIENT_GUARD, sla={"deprovision": "1s"})
    rows = people(4)
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    doc = yaml.safe_load(cli.config.read_text(encoding="utf-8"))
    good_url = doc["connectors"]["demo"]["url"]
    doc["connectors"]["demo"]["url"] = f"http://127.0.0.1:{free_port()}/v2/"  # the app is unreachable
    cli.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    # Today in the source's time zone (Europe/Berlin): a UTC date is yesterday there between 23:00 and
    # 24:00 UTC, and a leaver dated yesterday was late before jml saw them (hr_data_late, not app_errors).
    today = dt.datetime.now(ZoneInfo("Europe/Berlin")).date()
    rows[1].update(status="Terminated", termination_date=today.isoformat())
    cli.write(rows)
    assert cli.run("sync").returncode == 1  # dead-lettered
    # Step 1: `jml status`: the leaver's line, MISSED; step 2: its state, `dead_letter` -> Dead letter.
    text = cli.run("status").stdout
    assert re.search(r"^\s+E001\s+demo\s+deadline .* MISSED, overdue by .*; dead_letter$", text, re.M), text
    assert "`dead_letter`" in step("ops-sla-breach.md", 2) and "(ops-dead-letter.md)" in step("ops-sla-breach.md", 2)
    assert re.search(r"#\d+ demo deactivate E001: ", text), text
    # ops-dead-letter.md steps 3-4: the cause fixed, `jml retry --all`; the deprovision is verified.
    doc["connectors"]["demo"]["url"] = good_url
    cli.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert cli.run("retry", "--all").returncode == 0
    assert active(cli)["person.n001@example.com"] is False
    # Step 5: `jml report sla`: the breach with its cause, app_errors.
    r = cli.run("report", "sla", "--month", dt.datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Y-%m"))
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("E001"))
    assert re.search(r"\bbreached\s+app_errors$", line), r.stdout


# ---- ops-source-stale.md -------------------------------------------------------------------
def test_source_stale(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = Cli(tmp_path, fresh, guard=LENIENT_GUARD)

    def stale_after(value: str) -> None:  # an hour in production (JmlSourceStale); seconds here
        doc = yaml.safe_load(cli.config.read_text(encoding="utf-8"))
        doc["sources"]["hris"]["stale_after"] = value
        cli.config.write_text(yaml.safe_dump(doc), encoding="utf-8")

    stale_after("1s")
    rows = people(4)
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    # The drop goes wrong: the export is no longer where jml reads it; then HR's next export is cut short.
    (tmp_path / "hr.csv").rename(tmp_path / "elsewhere.csv")
    assert cli.run("sync").returncode == 2
    time.sleep(1.1)

    # ops-source-stale.md step 1: `jml status`: the "HR source:" line shows the last read, the last good read
    # and the last error; Needs attention: a stale source.
    assert '"HR source:" line' in step("ops-source-stale.md", 1)
    text = cli.run("status").stdout
    assert re.search(r"^HR source: STALE; last read .* \(accepted\), last good \d{4}-\d\d-\d\d .*, 4 rows$", text,
                     re.M), text
    assert re.search(r"^  last error \(\d{4}-\d\d-\d\d \d\d:\d\d \w+\): .*hr\.csv: not found$", text, re.M), text
    assert "The HR source is stale" in text
    # Step 2: the cause is fixed: the drop (sources.hris.location) holds the export again...
    assert "`sources.hris.location`" in step("ops-source-stale.md", 2)
    (tmp_path / "elsewhere.csv").rename(tmp_path / "hr.csv")
    # ...an export rejected as a whole (a column missing) is fixed by HR re-exporting it.
    assert "re-exporting" in step("ops-source-stale.md", 2)
    rows[1].update(status="Terminated", termination_date="2026-12-01")
    cli.write(rows, fields=[f for f in FIELDS if f != "status"])
    assert cli.run("sync").returncode == 3
    text = cli.run("status").stdout
    assert "HR source: last export REJECTED" in text and "missing required columns: status" in text, text
    assert active(cli)["person.n001@example.com"] is True  # nothing in it was applied
    # Step 4 (meanwhile): an urgent leaver goes without the source: Offboard now.
    assert "works without the source" in step("ops-source-stale.md", 4)
    r = cli.run("offboard", "E002", "--reason", "urgent while the HR source is broken; HR-88")
    assert r.returncode == 0, r.stdout + r.stderr
    assert active(cli)["person.n002@example.com"] is False
    cli.write(rows)  # HR's re-export
    # Step 3: read it now: `jml sync`.
    assert "`jml sync`" in step("ops-source-stale.md", 3)
    stale_after("10m")  # (not 1s: this slow machine takes a second or more to start `jml status`)
    assert cli.run("sync").returncode == 0
    text = cli.run("status").stdout
    assert re.search(r"^HR source: fresh; last read .* \(accepted\)", text, re.M), text
    assert "last error" not in text and "stale" not in text.lower(), text
    assert active(cli)["person.n001@example.com"] is False  # the leaver in the re-export is seen


# ---- ops-connector-errors.md ---------------------------------------------------------------
def test_connector_errors(tmp_path: Path, fresh: ScimPeer) -> None:
    exports = tmp_path / "exports"
    rows = [person(i) for i in range(1, 4)]
    write_export(exports, "hr-1.csv", rows)
    token = tmp_path / "scim-token"
    token.write_text("a-token-the-app-refuses\n", encoding="utf-8")
    cfg = write_config(tmp_path, scim_url=fresh.url, extra={"guard": LENIENT_GUARD})
    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    doc["connectors"]["demo"] = {"type": "scim", "url": fresh.url, "token_file": str(token), "max_attempts": 1}
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {"JML_ADMIN_TOKEN": ADMIN}
    with start_serve(cfg, env) as served:
        served.wait_ready()
        wait_until(lambda: len(_api_status(served)["dead_letters"]) >= 3, 30, 0.2, "the creates dead-lettered")
        assert _by_eid(fresh) == {}
        # JmlConnectorErrorRate: attempts that ended dead, counted per connector.
        assert (_metric(served.get("/metrics")[1], "jml_operations_total", connector="demo", outcome="dead")
                or 0) >= 3

        # ops-connector-errors.md step 1: `jml check` reaches the connector and says what the server answered.
        assert "`jml check`" in step("ops-connector-errors.md", 1)
        r = _jml(cfg, env, "check")
        assert r.returncode == 1
        assert re.search(r"^demo: PROBLEM: .*token was rejected.*\(HTTP 401\)", r.stdout, re.M), r.stdout
        assert "`PROBLEM: …`" in step("ops-connector-errors.md", 1) and "exits 1" in step("ops-connector-errors.md", 1)
        # Step 2: `jml status`: the dead letters with their errors; Needs attention: the reason and what to do.
        assert "`jml status` (dead letters with their errors)" in step("ops-connector-errors.md", 2)
        text = _jml(cfg, env, "status").stdout
        dead = re.findall(r"^  #(\d+) demo create (E\d+): .*401", text, re.M)
        assert sorted(e for _, e in dead) == ["E0000001", "E0000002", "E0000003"], text
        assert re.search(r"Joiner First1 Last1 \(E0000001\) has no account in demo.*\n"
                         r"     why: demo refused jml's credentials .*\n"
                         r"     do:  Ops: check the demo token", text), text
        dead_count = len(_api_status(served)["dead_letters"])
        # Step 3: pause its connector so work waits instead of failing: `jml pause <name>`.
        assert "`jml pause <name>`" in step("ops-connector-errors.md", 3)
        r = _jml(cfg, env, "pause", "demo")
        assert r.returncode == 0 and "demo paused" in r.stdout
        # A running daemon takes a pause from the command line within seconds (the page's button at once).
        assert "within a few seconds" in step("ops-connector-errors.md", 3)
        wait_until(lambda: _metric(served.get("/metrics")[1], "jml_connector_paused", connector="demo") == 1.0,
                   15, 0.2, "the daemon to take the pause")
        write_export(exports, "hr-2.csv", [*rows, person(4)])  # a joiner meanwhile
        try:
            wait_until(lambda: _api_status(served)["connectors"]["demo"]["pending"] >= 1, 30, 0.2, "the joiner queued")
        except AssertionError as e:  # say what the daemon did instead
            log = "\n".join(ln for ln in served.logs().splitlines() if "aiohttp.access" not in ln)
            raise AssertionError(f"{e}\nstatus: {json.dumps(_api_status(served))[:3000]}\nlog: {log[-6000:]}") from e
        time.sleep(1.5)  # the daemon would have pushed it by now, had it not been paused
        status = _api_status(served)
        assert status["connectors"]["demo"]["pending"] >= 1 and len(status["dead_letters"]) == dead_count
        # Step 4: credentials refused: rotate the token; the `*_file` secret is re-read when it changes.
        assert "`*_file` secret is re-read when it changes" in step("ops-connector-errors.md", 4)
        token.write_text(fresh.token + "\n", encoding="utf-8")
        os.utime(token, (time.time() + 5, time.time() + 5))  # a new mtime, whatever the filesystem's resolution
        r = _jml(cfg, env, "check")
        assert r.returncode == 0 and "PROBLEM" not in r.stdout and "FAIL" not in r.stdout, r.stdout
        assert re.search(r"^demo: dialect ", r.stdout, re.M), r.stdout
        # ...then back to the Paused connector runbook: `jml resume demo`; the daemon (still running, with the
        # token it read before) pushes the waiting joiner with the rotated token.
        r = _jml(cfg, env, "resume", "demo")
        assert r.returncode == 0 and "demo resumed" in r.stdout
        wait_until(lambda: _by_eid(fresh).get("E0000004", {}).get("active") is True, 30, 0.2, "the joiner pushed")
        # Step 5: put the failed ones back: Dead letter, step 4: `jml retry --all`.
        assert "[Dead letter](ops-dead-letter.md), step 4" in step("ops-connector-errors.md", 5)
        assert "`jml retry --all`" in step("ops-dead-letter.md", 4)
        r = _jml(cfg, env, "retry", "--all")
        assert r.returncode == 0, r.stderr
        assert f"{dead_count} operation(s) back in the outbox" in r.stdout
        wait_until(lambda: len(_by_eid(fresh)) == 4, 30, 0.2, "every account created")
        assert all(u.get("active") is not False for u in _by_eid(fresh).values())
        wait_until(lambda: _api_status(served)["dead_letters"] == [], 30, 0.2, "no dead letter left")
        assert served.stop() == 0


# ---- ops-retention.md ----------------------------------------------------------------------
def test_retention(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = Cli(tmp_path, fresh, guard=LENIENT_GUARD, retention={"leavers_after": "400d", "events_after": "90d"})
    db = tmp_path / "jml.db"
    rows = people(4)
    rows[1].update(first_name="Ottilie", last_name="Brennwald", work_email="ottilie.brennwald@example.com")
    gone = ["Ottilie", "Brennwald", "ottilie.brennwald@example.com"]
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    rows[1].update(status="Terminated", termination_date="2024-03-29")  # gone longer than 400 days
    rows[2].update(status="Terminated", termination_date="2026-11-30")  # a recent leaver: not due
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    with sqlite3.connect(db) as conn:  # an old webhook event (past events_after) and a recent one
        for eid, at in (("hr:old", "2025-06-01 10:00:00.000000"), ("hr:new", "2026-12-01 10:00:00.000000")):
            conn.execute("INSERT INTO webhook_event (id, source, received_at, payload, processed_at, outcome) "
                         "VALUES (?, 'hr', ?, ?, ?, 'done')", (eid, at, json.dumps({"note": f"payload {eid}"}), at))
    assert _found(db, gone), "the leaver's data is in the store before"
    before_export = tmp_path / "before.jsonl"
    before_export.write_text(cli.run("audit", "export").stdout, encoding="utf-8")

    # ops-retention.md step 1: `jml purge --dry-run`: "would erase the personal data of N leaver(s): <employee
    # ids>", the rows per table, the old webhook events. Nothing changes.
    assert "`jml purge --dry-run`" in step("ops-retention.md", 1)
    before = _dump(db)
    r = cli.run("purge", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would erase the personal data of 1 leaver(s): E001" in r.stdout, r.stdout
    assert re.search(r"^  person: 1 row\(s\)$", r.stdout, re.M) and re.search(r"^  account: \d+ row\(s\)$",
                                                                                 r.stdout, re.M), r.stdout
    assert "would erase the payload of 1 old webhook event(s)" in r.stdout
    assert _dump(db) == before
    # Step 2: `jml purge`: the leaver's names, e-mail addresses and usernames leave every table; the employee id
    # stays; the old event loses its payload.
    assert "`jml purge`" in step("ops-retention.md", 2)
    r = cli.run("purge")
    assert r.returncode == 0, r.stderr
    assert "erased the personal data of 1 leaver(s): E001" in r.stdout, r.stdout
    assert _found(db, gone) == []
    assert _found(db, ["person.n002@example.com"]) and _found(db, ["person.n003@example.com"])  # not due
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM person WHERE employee_id='E001'").fetchone() == ("Terminated",)
        payloads = dict(conn.execute("SELECT id, payload FROM webhook_event"))
    assert "payload hr:old" not in str(payloads["hr:old"]) and "payload hr:new" in str(payloads["hr:new"])
    # Step 3: `jml audit verify` still says intact; an `erasure` record names who ran it, the employee ids, how
    # many rows and which records it rewrote, with their hashes.
    assert "`jml audit verify` still says intact" in step("ops-retention.md", 3)
    r = cli.run("audit", "verify")
    assert r.returncode == 0 and "intact" in r.stdout, r.stdout + r.stderr
    after_export = tmp_path / "after.jsonl"
    after_export.write_text(cli.run("audit", "export").stdout, encoding="utf-8")
    trail = [json.loads(line) for line in after_export.read_text(encoding="utf-8").splitlines()]
    erasure = [rec for rec in trail if rec.get("kind") == "erasure"]
    assert len(erasure) == 1
    data = erasure[0]["data"]
    assert erasure[0]["actor"].startswith("cli user=") and data["employee_ids"] == ["E001"]
    assert data["rows"]["person"] == 1 and data["audit_records"] > 0
    rewritten = {rec["seq"]: rec["hash"] for rec in trail if "_erased" in json.dumps(rec.get("data"))}
    assert rewritten and {e["seq"]: e["hash"] for e in data["records"]} == rewritten
    # Step 4: an export taken before or after still verifies with `jml audit verify <file>`; editing an erased
    # record is still detected.
    assert "`jml audit verify <file>`" in step("ops-retention.md", 4)
    for export in (before_export, after_export):
        assert cli.run("audit", "verify", str(export)).returncode == 0, export
    lines = after_export.read_text(encoding="utf-8").splitlines()
    i = next(n for n, line in enumerate(lines) if '"_erased"' in line)
    rec = json.loads(lines[i])
    rec["subject"] = "E999"
    lines[i] = json.dumps(rec)
    (tmp_path / "edited.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = cli.run("audit", "verify", str(tmp_path / "edited.jsonl"))
    assert r.returncode == 1 and f"record {rec['seq']}" in r.stdout + r.stderr, r.stdout + r.stderr
    # Step 5: a row HR still sends unchanged is ignored; a row HR changes brings the data back, and the next purge
    # erases it again.
    assert "the next purge erases it again" in step("ops-retention.md", 5)
    assert cli.run("sync").returncode == 0
    assert _found(db, gone) == []
    rows[1].update(job_title="Former Engineer")
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    assert _found(db, ["Brennwald"])
    r = cli.run("purge")
    assert r.returncode == 0 and "erased the personal data of 1 leaver(s): E001" in r.stdout, r.stdout
    assert _found(db, gone) == []
