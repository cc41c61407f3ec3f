"""The HR, approver and reviewer runbooks (docs/runbooks) followed as written, against a real
scim2-server: the command line a user runs (`Cli`), and `jml serve` for the pages, read with a
bearer token and posted to as the page's forms post (a bearer needs no CSRF token). Each step
below cites its runbook file and step number; when a runbook changes, the test that follows it
changes with it.

Dated things happen on the real clock: HR's time zone is a zone file written here whose local
midnight is a few seconds away (jml reads it like any zone, through PYTHONTZPATH), so a hire date
or a termination date "tomorrow" arrives while the test runs."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import re
import struct
import threading
import time
import zoneinfo
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from tests.e2e.helpers import Served, http, start_serve, wait_until
from tests.e2e.test_cli import TOKEN_ENV, Cli, people
from tests.e2e.test_reviews_e2e import _groups
from tests.e2e.test_runbooks import LENIENT_GUARD, active, fresh, step
from tests.e2e.test_runbooks import peer as peer  # the module's SCIM server fixture
from tests.integration.test_notify import Mailbox, smtp
from tests.peers import ScimPeer, free_port

__all__ = ["fresh", "smtp"]  # fixtures

ADMIN = "e2e-admin-" + "runbooks-hr-7Hq2Lp9x"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
ALERTS = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"


# -- the clock: HR's zone, with local midnight `seconds` from now ---------------------------------

def _zone(tmp: Path, seconds: float) -> tuple[str, dt.date, dt.datetime]:
    """A fixed-offset zone `Runbook/Soon` (a TZif file under tmp/tz) in which local midnight comes
    `seconds` from now. Returns its name, the local date that begins then and that instant (UTC)."""
    midnight = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).replace(microsecond=0)
    since = midnight.hour * 3600 + midnight.minute * 60 + midnight.second
    offset = -since if since <= 12 * 3600 else 86400 - since  # local time at `midnight` is 00:00:00
    day = (midnight + dt.timedelta(seconds=offset)).date()
    abbr = b"HRT\0"
    tzif = (b"TZif" + b"\0" * 16 + struct.pack(">6l", 0, 0, 0, 0, 1, len(abbr))
            + struct.pack(">lBB", offset, 0, 0) + abbr)
    (tmp / "tz" / "Runbook").mkdir(parents=True, exist_ok=True)
    (tmp / "tz" / "Runbook" / "Soon").write_bytes(tzif)
    return "Runbook/Soon", day, midnight


# -- jml serve on the same config as the command line ---------------------------------------------

def _cli(tmp: Path, peer: ScimPeer, *, tz: str = "Europe/Berlin", poll: str = "1s", **config: Any) -> Cli:
    port = free_port()
    cli = Cli(tmp, peer, server={"listen": f"127.0.0.1:{port}", "admin_token_env": "JML_ADMIN_TOKEN",
                                 "shutdown_grace": "3s", "public_url": f"http://127.0.0.1:{port}"},
              sources={"hris": {"location": "./hr.csv", "profile": "generic", "timezone": tz,
                                "poll_interval": poll}}, **config)
    cli.env.update(JML_ADMIN_TOKEN=ADMIN, PYTHONTZPATH=os.pathsep.join([str(tmp / "tz"), *zoneinfo.TZPATH]))
    return cli


def _serve(cli: Cli) -> Served:
    env = {k: v for k, v in cli.env.items()
           if k in (TOKEN_ENV, "JML_ADMIN_TOKEN", "PYTHONTZPATH") or k.startswith("JML_HOOK")}
    served = start_serve(cli.config, env=env)
    served.wait_ready()
    return served


def _write(cli: Cli, rows: list[dict[str, str]]) -> None:
    """HR's export, replaced at once (the daemon never reads half a file)."""
    final = cli.export
    cli.export = final.with_name(".hr.csv.part")
    try:
        cli.write(rows)
        os.replace(cli.export, final)
    finally:
        cli.export = final


def _text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def _page(served: Served, path: str, token: str = ADMIN) -> str:
    code, body = http(served.url + path.lstrip("/"), headers={"Authorization": f"Bearer {token}"})
    assert code == 200, (path, code, body[:500])
    return body.decode()


def _page_with(served: Served, path: str, needle: str) -> str | None:
    markup = _page(served, path)
    return markup if needle in markup else None


def _section(markup: str, sid: str) -> str:
    """The text of the page's `<section … id="sid">`."""
    m = re.search(rf'<section[^>]*\bid="{sid}"[^>]*>(.*?)</section>', markup, re.S)
    assert m, f"no #{sid} on the page"
    return _text(m.group(1))


def _rows(markup: str, sid: str) -> list[list[str]]:
    """The rows of the table in `<section id="sid">`, each a list of its cells' text."""
    m = re.search(rf'id="{sid}".*?<table[^>]*>(.*?)</table>', markup, re.S)
    assert m, f"no table in #{sid}"
    return [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", m.group(1), re.S) if "<td" in tr]


def _form(served: Served, path: str, fields: dict[str, str], token: str = ADMIN) -> tuple[int, str]:
    """POST a page's form (the redirect it answers with is followed, as a browser does)."""
    code, body = http(served.url + path.lstrip("/"), method="POST", data=urlencode(fields).encode(),
                      headers={"Authorization": f"Bearer {token}",
                               "Content-Type": "application/x-www-form-urlencoded"})
    return code, body.decode()


def _user(cli: Cli, email: str) -> dict[str, Any]:
    return next(u for u in cli.users() if u["userName"] == email)


def _member_of(peer: ScimPeer, email: str) -> set[str]:
    return {g for g, members in _groups(peer).items() if email in members}


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A chat channel's incoming webhook on loopback: the URL and what it was sent."""
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", got
    finally:
        server.shutdown()
        server.server_close()


# -- hr-joiner.md -----------------------------------------------------------------------------------

def test_joiner(tmp_path: Path, fresh: ScimPeer) -> None:
    tz, hire_day, midnight = _zone(tmp_path, 12)
    legacy = f"http://127.0.0.1:{free_port()}/v2/"  # a second app, down: its creates fail
    everyone = {"demo": ["Staff"], "legacy": ["Staff"]}
    cli = _cli(tmp_path, fresh, tz=tz, policy={"username": "{work_email}", "rules": [
        {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": everyone},
        {"name": "eng", "when": {"department": "Engineering"}, "grant": {"demo": ["Eng"]}}]}, connectors={
        "demo": {"type": "scim", "url": fresh.url, "token_env": TOKEN_ENV, "max_attempts": 1},
        "legacy": {"type": "scim", "url": legacy, "token_env": TOKEN_ENV, "max_attempts": 1}})
    rows = people(3)
    # hr-joiner.md step 1: HR enters the new hire: id, names, e-mail, department, manager, hire date, Active.
    assert "hire date, status `Active`" in step("hr-joiner.md", 1)
    rows.append({**people(4)[3], "first_name": "Jo", "last_name": "Joiner", "department": "Engineering",
                 "manager_id": "E001", "hire_date": hire_day.isoformat()})
    # ... and one with a value jml cannot use (step 4).
    rows.append({**people(5)[4], "first_name": "Val", "last_name": "Typo", "work_email": "val.typo(at)example.com"})
    _write(cli, rows)
    with _serve(cli) as served:
        # Step 2: at the next HR read, within the pre-hire window: created inactive and without groups.
        assert "created **inactive and without groups**" in step("hr-joiner.md", 2)
        jo = wait_until(lambda: next((u for u in cli.users() if u["userName"] == "person.n003@example.com"), None),
                        10, what="the pre-hire account")
        assert dt.datetime.now(dt.UTC) < midnight, "the pre-hire account was seen after the hire date began"
        assert jo["active"] is False and _member_of(fresh, "person.n003@example.com") == set()
        # (step 3: before the hire date the page shows them as "prehire", the accounts "disabled")
        assert '"prehire" and the accounts "disabled"' in step("hr-joiner.md", 3)
        prehire = _page(served, "/people/E003")
        assert "jml sees them as prehire" in _text(prehire)
        assert ["demo", "person.n003@example.com", "disabled"] in [r[:3] for r in _rows(prehire, "access")]
        # ... at 00:00 on the hire date (HR's zone) enabled and granted what the rules give.
        wait_until(lambda: _user(cli, "person.n003@example.com")["active"], 20, 0.3, what="enabled on the hire date")
        assert dt.datetime.now(dt.UTC) >= midnight
        wait_until(lambda: _member_of(fresh, "person.n003@example.com") == {"Staff", "Eng"}, 10, 0.3,
                   what="the rules' groups")
        assert _user(cli, "person.n003@example.com")["id"] == jo["id"]  # the same account, enabled

        # Step 3: the person's page (or search by name at /people): Access lists each app with the account,
        # its state and each group with the rule that granted it ("Granted by rule").
        assert '("Granted by rule")' in step("hr-joiner.md", 3) and "/people/<employee id>" in step("hr-joiner.md", 3)
        found = _page(served, "/people?q=jo+joiner")
        assert 'href="/people/E003"' in found and "Jo Joiner" in _text(found)
        page = _page(served, "/people/E003")
        assert "Granted by rule" in _section(page, "access")
        demo = [r for r in _rows(page, "access") if r[0] == "demo"]
        assert {(r[1], r[2], r[3], r[4].split()[0]) for r in demo} == {
            ("person.n003@example.com", "active", "group:Staff", "everyone"),
            ("person.n003@example.com", "active", "group:Eng", "eng")}, demo
        assert ["legacy", "no account"] in [r[:2] for r in _rows(page, "access")]

        # Step 4: Needs attention on the status page: a value jml cannot use is set aside, HR fixes it in the
        # HR system and the next read creates the accounts; "Joiner … has no account in …" is an app that
        # refused or was down: its "What to do" line, then Ops presses Retry.
        text = step("hr-joiner.md", 4)
        assert "HR row set aside" in text and "Joiner … has no account in …" in text and "**Retry #…**" in text
        status = wait_until(lambda: _page_with(served, "/", "has no account in legacy"), 20, 0.5,
                            what="the failed joiner on the status page")
        attention = _section(status, "attention")
        assert "HR row set aside" in attention and "val.typo(at)example.com" in attention
        assert "HR: correct work_email for Val Typo (E004) in the HR system" in attention
        assert "Joiner Jo Joiner (E003) has no account in legacy" in attention, attention
        item = re.search(r'<li class="attention-item[^"]*" data-kind="failed_joiner">(?:(?!</li>).)*'
                         r"Jo Joiner \(E003\).*?</li>", status, re.S)
        assert item and "What to do: Ops: check legacy is up" in _text(item.group(0)), attention
        assert re.search(r">Retry #\d+</button>", item.group(0))
        rows[4]["work_email"] = "val.typo@example.com"  # HR's correction
        _write(cli, rows)
        wait_until(lambda: any(u["userName"] == "val.typo@example.com" and u["active"] for u in cli.users()), 15,
                   0.3, what="the corrected joiner's account")
        assert "HR row set aside" not in _section(_page(served, "/"), "attention")
        assert served.stop() == 0


# -- hr-mover.md ------------------------------------------------------------------------------------

RULES = [{"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"demo": ["Staff"]}},
         {"name": "eng", "when": {"department": "Engineering"}, "grant": {"demo": ["Eng"]}},
         {"name": "sales", "when": {"department": "Sales"}, "grant": {"demo": ["Sales Team"]}}]


def test_mover(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = _cli(tmp_path, fresh, policy={"username": "{work_email}", "rules": RULES})
    rows = people(4)  # E001 and E002 in Engineering
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    ana = _user(cli, "person.n001@example.com")
    assert _member_of(fresh, ana["userName"]) == {"Staff", "Eng"}

    # hr-mover.md step 1: HR changes the record: department, job title, manager.
    assert "department, job title, manager" in step("hr-mover.md", 1)
    rows[1].update(department="Sales", job_title="Account Executive", manager_id="E000")
    _write(cli, rows)
    # Step 3 (Ops): `jml plan` shows what the next read would change, with the reason for each change.
    assert "`jml plan` (Ops) shows what the next read" in step("hr-mover.md", 3)
    r = cli.run("plan")
    assert r.returncode == 0, r.stderr
    why = [line for line in r.stdout.splitlines() if "why: mover: department Engineering → Sales" in line]
    assert any("group:Sales Team" in line for line in why) and any("group:Eng" in line for line in why), r.stdout
    assert _member_of(fresh, ana["userName"]) == {"Staff", "Eng"}  # a plan applies nothing
    with _serve(cli) as served:
        # Step 2: the next HR read plans the difference: attributes updated, new groups added, old removed.
        assert "groups the old" in step("hr-mover.md", 2)
        wait_until(lambda: _member_of(fresh, ana["userName"]) == {"Staff", "Sales Team"}, 15, 0.3,
                   what="the mover's groups")
        moved = _user(cli, ana["userName"])
        assert moved["id"] == ana["id"] and moved.get("title") == "Account Executive"
        # Step 3: the person's page shows the new groups under Access with the rule behind each.
        assert '**Access** section with the rule behind each ("Granted by rule")' in step("hr-mover.md", 3)
        page = _page(served, "/people/E001")
        assert "Granted by rule" in _section(page, "access")
        access = _rows(page, "access")
        assert {(r[3], r[4].split()[0]) for r in access if r[2] == "active"} == {
            ("group:Staff", "everyone"), ("group:Sales Team", "sales")}, access
        assert any(r[2:4] == ["removed", "group:Eng"] for r in access), access
        # Step 4: a change that should not have happened: corrected in HR, the next read puts the access back.
        assert "the next read puts" in step("hr-mover.md", 4)
        rows[1].update(department="Engineering", job_title="Engineer", manager_id="")
        _write(cli, rows)
        wait_until(lambda: _member_of(fresh, ana["userName"]) == {"Staff", "Eng"}, 15, 0.3, what="the access back")
        assert _user(cli, ana["userName"]).get("title") == "Engineer"
        # ... access beyond the rules is asked for separately (Access request: tested below).
        assert "(approver-access-request.md)" in step("hr-mover.md", 4)
        assert served.stop() == 0


# -- hr-leaver.md -----------------------------------------------------------------------------------

def test_leaver(tmp_path: Path, fresh: ScimPeer) -> None:
    tz, day, midnight = _zone(tmp_path, 14)
    cli = _cli(tmp_path, fresh, tz=tz, guard=LENIENT_GUARD,
               lifecycle={"termination_time": "00:00:01", "delete_after": "6s"}, sla={"deprovision": "10m"})
    rows = people(4)
    _write(cli, rows)
    email = "person.n001@example.com"
    with _serve(cli) as served:
        wait_until(lambda: _member_of(fresh, email) == {"Staff", "Eng"}, 15, 0.3, what="the accounts and groups")
        # hr-leaver.md step 1: HR enters a future termination date: a scheduled leaver, nothing happens until
        # then. E001 keeps the status Active; E002's status is Terminated early: the access the rules give only
        # to active people goes at the next read, the account stays.
        assert "*scheduled* leaver: nothing happens until then" in step("hr-leaver.md", 1)
        assert "a status `Terminated` entered early already takes away" in step("hr-leaver.md", 1)
        rows[1].update(termination_date=day.isoformat())
        rows[2].update(status="Terminated", termination_date=day.isoformat())
        written = dt.datetime.now(dt.UTC).replace(microsecond=0)
        _write(cli, rows)
        early = "person.n002@example.com"
        wait_until(lambda: _member_of(fresh, early) == {"Eng"}, 10, 0.3, what="the early Terminated read")
        assert dt.datetime.now(dt.UTC) < midnight, "the scheduled leavers were read after their date began"
        assert "jml sees them as active" in _text(_page(served, "/people/E001"))
        assert active(cli)[email] is True and _member_of(fresh, email) == {"Staff", "Eng"}
        assert active(cli)[early] is True
        # Step 2: at the termination date, lifecycle.termination_time in HR's zone: deactivated, groups removed;
        # the SLA clock starts at that effective time.
        assert "`lifecycle.termination_time`" in step("hr-leaver.md", 2)
        effective = midnight + dt.timedelta(seconds=1)
        wait_until(lambda: not any(active(cli).get(x) for x in (email, early)), 20, 0.3, what="the leavers deactivated")
        assert dt.datetime.now(dt.UTC) >= effective
        wait_until(lambda: _member_of(fresh, email) | _member_of(fresh, early) == set(), 10, 0.3,
                   what="the leavers' groups removed")
        for eid in ("E001", "E002"):
            code, progress = served.get_json(f"/api/v1/people/{eid}/progress", BEARER)
            assert code == 200
            deadline = dt.datetime.fromisoformat(progress["connectors"][0]["deadline"])
            if eid == "E001":
                assert deadline == effective + dt.timedelta(minutes=10), (eid, progress)
            else:  # Terminated entered early: the clock runs from when jml first saw that status (DESIGN)
                assert written + dt.timedelta(minutes=10) <= deadline < effective + dt.timedelta(minutes=10), \
                    (eid, progress)
        # Step 3: the page shows "jml sees them as: leaver", each account "disabled"; on the status page the
        # person moves from Leavers in flight to Verified in the last hour once the app was read back.
        assert '"jml sees them as: leaver"' in step("hr-leaver.md", 3)
        page = _text(_page(served, "/people/E001"))
        assert "jml sees them as leaver" in page
        assert ["demo", email, "disabled"] in [r[:3] for r in _rows(_page(served, "/people/E001"), "access")]
        assert "from **Leavers in flight** to **Verified in the last hour**" in step("hr-leaver.md", 3)
        status = wait_until(lambda: _page_with(served, "/", "Person N001"), 10, 0.3, what="the leaver on /")
        status = wait_until(lambda: (m := _page(served, "/")) and "Person N001" in _section(m, "verified") and m,
                            20, 0.5, what="the leaver verified")
        assert "Person N001" not in _section(status, "leavers")
        # ... after lifecycle.delete_after the account is deleted; the page says "removed" with its plan.
        assert "`lifecycle.delete_after`" in step("hr-leaver.md", 2)
        wait_until(lambda: email not in active(cli), 20, 0.3, what="the account deleted")
        def deleted_row() -> list[str] | None:
            return next((r for r in _rows(_page(served, "/people/E001"), "access")
                         if r[2:4] == ["removed", "account deleted"]), None)
        row = wait_until(deleted_row, 10, 0.3, what='"removed" on the page')
        assert row[4].startswith("removed (plan "), row

        # Step 4: must go now: Offboard now (its own runbook; the button is on every active person's page).
        assert "[Offboard now](hr-offboard-now.md)" in step("hr-leaver.md", 4)
        assert "Offboard now…" in _page(served, "/people/E003")
        # Step 5: past the deadline the alert JmlLeaverPendingPastSla fires, on the metrics jml exports.
        assert "`JmlLeaverPendingPastSla`" in step("hr-leaver.md", 5)
        alerts = {a["alert"]: a for g in yaml.safe_load(ALERTS.read_text())["groups"] for a in g["rules"]}
        rule = alerts["JmlLeaverPendingPastSla"]
        assert rule["annotations"]["runbook_url"] == "docs/runbooks/ops-sla-breach.md"
        metrics = served.get("/metrics")[1].decode()
        for name in re.findall(r"jml_\w+", rule["expr"]):
            assert f"{name}{{" in metrics, name
        assert served.stop() == 0


# -- hr-rehire.md -----------------------------------------------------------------------------------

def test_rehire(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = _cli(tmp_path, fresh, guard=LENIENT_GUARD)
    rows = people(4)
    _write(cli, rows)
    ana, ben = "person.n001@example.com", "person.n002@example.com"
    with _serve(cli) as served:
        wait_until(lambda: _member_of(fresh, ben) == {"Staff", "Eng"} and len(cli.users()) == 4, 15, 0.3,
                   what="the accounts")
        before = {u["userName"]: u["id"] for u in cli.users()}
        # E001 left through HR; E002 was taken out with Offboard now (the page's form, confirmed).
        rows[1].update(status="Terminated", termination_date=(_today() - dt.timedelta(days=1)).isoformat())
        _write(cli, rows)
        code, body = _form(served, "/people/E002/offboard", {"reason": "dismissed; HR-1200", "confirm": "yes"})
        assert code == 200, body
        wait_until(lambda: not any(active(cli)[x] for x in (ana, ben)), 15, 0.3, what="both deactivated")
        # hr-rehire.md step 1: an unchanged export still saying Active (E002's) never undoes a leaver.
        assert "never undoes a leaver" in step("hr-rehire.md", 1)
        time.sleep(2.5)  # two more HR reads (poll_interval 1s) of the same export
        assert active(cli)[ben] is False
        # Step 1: HR gives the person (same employee id) status Active and the new hire date.
        rows[1].update(status="Active", hire_date=_today().isoformat())
        rows[2].update(hire_date=_today().isoformat())
        _write(cli, rows)
        # Step 2: at the next HR read the same account is reactivated in every app and the rules grant access.
        assert "the same account is reactivated" in step("hr-rehire.md", 2)
        wait_until(lambda: _member_of(fresh, ana) == {"Staff", "Eng"} and active(cli)[ana], 15, 0.3,
                   what="the rehire reactivated with the rules' groups")
        assert {u["userName"]: u["id"] for u in cli.users()} == before  # never two live accounts
        # Step 3: taken out with Offboard now: the new hire date lifts the offboarding too (History says so);
        # Undo the offboarding is not needed (and not offered).
        assert "the new hire date lifts the offboarding too" in step("hr-rehire.md", 3)
        wait_until(lambda: _member_of(fresh, ben) == {"Staff", "Eng"} and active(cli)[ben], 15, 0.3,
                   what="the offboarded rehire reactivated")
        page = _page(served, "/people/E002")
        assert "rehire (leaver → active)" in _section(page, "history")
        assert "Undo the offboarding" not in page
        # Step 4: the page shows "jml sees them as: active" and each account "active" again.
        assert '"jml sees them as: active"' in step("hr-rehire.md", 4)
        for eid, email in (("E001", ana), ("E002", ben)):
            page = _page(served, f"/people/{eid}")
            assert "jml sees them as active" in _text(page)
            assert {tuple(r[:4]) for r in _rows(page, "access") if r[2] != "removed"} == {
                ("demo", email, "active", "group:Staff"), ("demo", email, "active", "group:Eng")}
        assert served.stop() == 0


# -- hr-leave-of-absence.md -------------------------------------------------------------------------

def test_leave_of_absence(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = _cli(tmp_path, fresh, guard=LENIENT_GUARD)
    rows = people(4)
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    # hr-leave-of-absence.md step 1: HR sets the status to Leave.
    assert "status to `Leave`" in step("hr-leave-of-absence.md", 1)
    rows[1]["status"] = "Leave"
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    # Step 2: never a leaver; with `keep` (the default) nothing changes.
    assert "`lifecycle.leave_of_absence: keep` (the default)" in step("hr-leave-of-absence.md", 2)
    assert active(cli)["person.n001@example.com"] is True
    assert _member_of(fresh, "person.n001@example.com") == {"Staff", "Eng"}
    # ... with `suspend` the accounts are deactivated, groups kept.
    assert "with `suspend` the accounts are deactivated (groups kept)" in step("hr-leave-of-absence.md", 2)
    doc = yaml.safe_load(cli.config.read_text(encoding="utf-8"))
    doc["lifecycle"] = {"leave_of_absence": "suspend"}
    cli.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    rows[2]["status"] = "Leave"
    cli.write(rows)
    assert cli.run("sync").returncode == 0
    assert active(cli)["person.n002@example.com"] is False
    assert _member_of(fresh, "person.n002@example.com") == {"Staff", "Eng"}
    with _serve(cli) as served:
        # Step 4: the page shows "jml sees them as: active" (keep) or "suspended", and each account.
        assert '"jml sees them as: active" (keep) or "suspended"' in step("hr-leave-of-absence.md", 4)
        kept, suspended = _page(served, "/people/E001"), _page(served, "/people/E002")
        assert "jml sees them as active" in _text(kept) and "jml sees them as suspended" in _text(suspended)
        assert ["demo", "person.n001@example.com", "active"] in [r[:3] for r in _rows(kept, "access")]
        assert ["demo", "person.n002@example.com", "disabled"] in [r[:3] for r in _rows(suspended, "access")]
        # Step 3: back to Active: with suspend, reactivated at the next HR read.
        assert "reactivated at the next HR read" in step("hr-leave-of-absence.md", 3)
        rows[2]["status"] = "Active"
        _write(cli, rows)
        wait_until(lambda: active(cli)["person.n002@example.com"], 15, 0.3, what="the returner reactivated")
        assert "jml sees them as active" in _text(_page(served, "/people/E002"))
        assert served.stop() == 0


def _today() -> dt.date:
    return dt.datetime.now(zoneinfo.ZoneInfo("Europe/Berlin")).date()


# -- approver-held-plan.md --------------------------------------------------------------------------

def test_approver_held_plan(tmp_path: Path, fresh: ScimPeer, hook: tuple[str, list[dict[str, Any]]]) -> None:
    hook_url, told = hook
    cli = _cli(tmp_path, fresh, guard={"max_deprovision_percent": 5, "max_shrink_percent": 10,
                                       "approvals_required": 2},
               notifications={"slack_webhook_url_env": "JML_HOOK_URL"})
    cli.env["JML_HOOK_URL"] = hook_url
    made = cli.run("token", "create", "approver-1", "--role", "approver")
    assert made.returncode == 0, made.stderr
    approver = made.stdout.split()[0]
    rows = people(6)
    _write(cli, rows)
    with _serve(cli) as served:
        wait_until(lambda: len(cli.users()) == 6, 15, 0.3, what="six accounts")
        for r in rows[:3]:  # half the company leaves: the guard holds the plan
            r.update(status="Terminated", termination_date=(_today() - dt.timedelta(days=1)).isoformat())
        _write(cli, rows)
        # approver-held-plan.md step 1: told in chat "jml: plan <id> is held and needs approval", with the
        # guard's reason and a link to the status page's Held plans section (/#held).
        assert '"jml: plan <id> is held and needs approval"' in step("approver-held-plan.md", 1)
        msg = wait_until(lambda: next((m["text"] for m in told if "is held and needs approval" in m["text"]), None),
                         15, 0.3, what="the held-plan notice")
        plan_id = re.search(r"jml: plan ([0-9a-f]{12}) is held and needs approval", msg).group(1)  # type: ignore[union-attr]
        assert "max_deprovision_percent" in msg and f"<{served.url}#held>" in msg, msg
        # Step 2: signed in, the Held plans section shows the plan's reasons, how many deprovisions it holds
        # and, under First operations, the people each touches.
        assert "(open **First operations**)" in step("approver-held-plan.md", 2)
        page = _page(served, "/", approver)
        held = _section(page, "held")
        assert plan_id in held and "max_deprovision_percent" in held and "deactivate 3" in held, held
        assert "First operations" in held and all(f"E00{i}" in held for i in range(3)), held
        # Step 3: while the approver checks with HR nothing is applied.
        assert "check with HR" in step("approver-held-plan.md", 3)
        assert all(active(cli).values())
        # Step 5: not real or unsure: do not approve; Ops discard it (an approver has no Discard button, Ops has).
        assert "tell Ops, who discard it" in step("approver-held-plan.md", 5)
        discard = f'action="/plans/{plan_id}/discard"'
        assert discard not in page and discard in _page(served, "/")
        # Step 4: press Approve plan <id>: "Approvals N of M" while more approvers are needed; then the command
        # line instead: `jml approve <plan id>`, the second approver: applied.
        assert "press **Approve plan <id>**" in step("approver-held-plan.md", 4)
        assert f"Approve plan {plan_id}" in held
        code, body = _form(served, f"/plans/{plan_id}/approve", {}, approver)
        assert code == 200, body
        assert "Approvals 1 of 2" in _section(body, "held"), _section(body, "held")
        assert all(active(cli).values())
        assert "`jml approve <plan id>`" in step("approver-held-plan.md", 4)
        r = cli.run("approve", plan_id)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_until(lambda: [active(cli)[f"person.n00{i}@example.com"] for i in range(6)] == [False] * 3 + [True] * 3,
                   15, 0.3, what="the approved plan applied")
        assert served.stop() == 0


# -- approver-access-request.md ---------------------------------------------------------------------

CATALOGUE = {"demo": {"group:Prod Admins": {"owner": "bob@example.com", "risk": "high", "max_duration": "7d"},
                      "group:Billing": {"owner": "bob@example.com", "risk": "low", "max_duration": "30d"}}}


def test_approver_access_request(tmp_path: Path, fresh: ScimPeer, hook: tuple[str, list[dict[str, Any]]],
                                 smtp: tuple[Mailbox, int]) -> None:
    hook_url, told = hook
    mailbox, smtp_port = smtp
    cli = Cli(tmp_path, fresh, access={"catalogue": CATALOGUE, "jit": {"max_duration": "8h", "roles": ["operator"]}},
              notifications={"slack_webhook_url_env": "JML_HOOK_URL", "smtp": {
                  "host": "127.0.0.1", "port": smtp_port, "starttls": False, "sender": "jml@example.com"}})
    cli.env["JML_HOOK_URL"] = hook_url
    rows = people(3)
    for row, (first, mgr) in zip(rows, [("ana", "E001"), ("mia", ""), ("bob", "")], strict=True):
        row.update(first_name=first.title(), work_email=f"{first}@example.com", manager_id=mgr,
                   department="Engineering")
    cli.write(rows)
    assert cli.run("sync").returncode == 0

    # approver-access-request.md step 1: `jml access catalogue` (owner, risk, maximum duration, birthright or not;
    # `--offline` reads the config only).
    assert "`jml access catalogue`" in step("approver-access-request.md", 1)
    r = cli.run("access", "catalogue", "--offline")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "Prod Admins" in x)
    assert line.split() == ["demo", "group:Prod", "Admins", "high", "bob@example.com", "7d", "no", "no", "no"], line
    staff = next(x for x in r.stdout.splitlines() if "group:Staff" in x).split()
    assert staff[-3] == "yes", staff  # birthright: the rules give it
    # Step 2: `jml access request <employee id> <app> "<entitlement>" --reason --for 7d --as <e-mail>`: the id
    # (ar-…) and how many approvals it needs.
    assert '--for 7d --as <your work e-mail>`' in step("approver-access-request.md", 2)
    assert "(`ar-…`) and how many approvals it needs" in step("approver-access-request.md", 2)
    r = cli.run("access", "request", "E000", "demo", "group:Prod Admins", "--reason", "incident 42", "--for", "7d",
                "--as", "ana@example.com")
    assert r.returncode == 0, r.stderr
    rid = re.search(r"\b(ar-[0-9a-f]+)", r.stdout).group(1)  # type: ignore[union-attr]
    assert "2 approval(s) needed" in r.stdout
    # Step 3: the approvers are told by mail (the owner, and for a high risk the manager) and in the webhook's
    # channel, with a link to the person's page; they list what waits with `jml access list --state pending`.
    assert "`jml access list --state pending`" in step("approver-access-request.md", 3)
    assert "by mail (to the owner and, by risk, the person's manager)" in step("approver-access-request.md", 3)
    assert any(rid in m["text"] and "/people/E000" in m["text"] for m in told), told
    mails = [(set(to), f"{msg['Subject']}\n{msg.get_payload(decode=True).decode()}") for to, msg in mailbox.messages]
    mailed = [(to, body) for to, body in mails if rid in body]
    assert mailed, [(to, body[:300]) for to, body in mails]
    assert {"bob@example.com", "mia@example.com"} <= set().union(*(to for to, _ in mailed)), mailed
    assert all("/people/E000" in body for _, body in mailed), mailed
    r = cli.run("access", "list", "--state", "pending")
    assert r.returncode == 0 and rid in r.stdout, r.stdout + r.stderr
    # Step 4: `jml access approve <ar-id> --as <e-mail>`: while another approval is needed it says so, exit 3;
    # the last approval grants it at once (the command waits for the push and prints the result).
    assert "exits 3" in step("approver-access-request.md", 4)
    r = cli.run("access", "approve", rid, "--as", "mia@example.com")
    assert r.returncode == 3 and "1 of 2" in r.stdout, r.stdout + r.stderr
    assert "Prod Admins" not in _member_of(fresh, "ana@example.com")
    r = cli.run("access", "approve", rid, "--as", "bob@example.com")
    assert r.returncode == 0 and "result: done" in r.stdout, r.stdout + r.stderr
    assert "Prod Admins" in _member_of(fresh, "ana@example.com")
    # Step 5: refuse: `jml access deny <ar-id> --as <e-mail> --reason "<why>"`.
    assert "`jml access deny <ar-id>" in step("approver-access-request.md", 5)
    r = cli.run("access", "request", "E000", "demo", "group:Billing", "--reason", "month end", "--as",
                "ana@example.com")
    other = re.search(r"\b(ar-[0-9a-f]+)", r.stdout).group(1)  # type: ignore[union-attr]
    r = cli.run("access", "deny", other, "--as", "bob@example.com", "--reason", "not needed")
    assert r.returncode == 0 and "denied" in r.stdout, r.stdout + r.stderr
    # Step 6: end it early: `jml access revoke`: pushed and read back from the app (`jml access expire`).
    assert "`jml access revoke <ar-id>" in step("approver-access-request.md", 6)
    r = cli.run("access", "revoke", rid, "--as", "bob@example.com", "--reason", "incident closed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Prod Admins" not in _member_of(fresh, "ana@example.com")
    assert "`jml access expire` on demand" in step("approver-access-request.md", 6)
    r = cli.run("access", "expire")
    assert r.returncode == 0 and "1 removal(s) verified" in r.stdout, r.stdout + r.stderr
    # Step 7: break-glass: `jml access jit <app> "<entitlement>" --hours 2 --reason --as`: granted at once,
    # announced loudly (log, notification).
    assert '--hours 2 --reason "<incident>"' in step("approver-access-request.md", 7)
    told.clear()
    r = cli.run("access", "jit", "demo", "group:Ops", "--hours", "2", "--reason", "INC-7 database down", "--as",
                "bob@example.com")
    assert r.returncode == 0, r.stdout + r.stderr
    jit = re.search(r"\b((?:jit|ar)-[0-9a-f]+)", r.stdout).group(1)  # type: ignore[union-attr]
    assert "BREAK-GLASS" in r.stderr and "Ops" in _member_of(fresh, "bob@example.com")
    assert any("INC-7" in m["text"] for m in told), told
    # Step 8: the alert JmlBreakGlassAccess; `jml access list --state active` (who, what, why, until when);
    # `jml access revoke <jit-id> --reason`.
    assert "`JmlBreakGlassAccess`" in step("approver-access-request.md", 8)
    alerts = {a["alert"]: a for g in yaml.safe_load(ALERTS.read_text())["groups"] for a in g["rules"]}
    assert alerts["JmlBreakGlassAccess"]["annotations"]["runbook_url"] == "docs/runbooks/approver-access-request.md"
    r = cli.run("access", "list", "--state", "active")
    [line] = [x for x in r.stdout.splitlines() if x.strip()]  # the revoked and the denied requests are not active
    assert re.match(rf"{jit}\s+active\s+E002\s+demo:group:Ops\s+until \d{{4}}-", line), r.stdout
    assert "as=bob@example.com" in line and "reason: INC-7 database down" in line, line
    assert rid not in r.stdout and other not in r.stdout
    r = cli.run("access", "revoke", jit, "--reason", "incident over")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Ops" not in _member_of(fresh, "bob@example.com")


# -- reviewer-access-review.md ----------------------------------------------------------------------

def _scim_post(peer: ScimPeer, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    code, body = http(peer.url + path, method="POST", data=json.dumps(doc).encode(),
                      headers={**peer.headers, "Content-Type": "application/scim+json"})
    assert code == 201, body
    out: dict[str, Any] = json.loads(body)
    return out


def test_reviewer_access_review(tmp_path: Path, fresh: ScimPeer) -> None:
    cli = _cli(tmp_path, fresh, guard=LENIENT_GUARD, reviews={"default_reviewer": "sec@example.com"},
               reconcile={"schedule": "2s"})
    rows = people(4)
    for r in rows[1:]:
        r["manager_id"] = "E000"  # Person N000 is everyone's HR manager
    _write(cli, rows)
    boss = "person.n000@example.com"
    with _serve(cli) as served:
        wait_until(lambda: _member_of(fresh, "person.n003@example.com") == {"Staff"}, 15, 0.3, what="the accounts")
        # Access someone gave by hand in the app: no rule and no request explains it; reconciliation finds it.
        _scim_post(fresh, "Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                     "displayName": "Shadow Admins",
                                     "members": [{"value": _user(cli, "person.n002@example.com")["id"]}]})
        wait_until(lambda: served.get_json("/api/v1/status", BEARER)[1]["unexplained"]["count"] == 1, 20, 0.5,
                   what="the unexplained access found")

        # reviewer-access-review.md step 1: `jml review start --by manager` (`--due 14d`, `--name "Q4 2026
        # review"`); the unexplained access found in the apps is part of it.
        assert "`jml review start --by manager`" in step("reviewer-access-review.md", 1)
        r = cli.run("review", "start", "--by", "manager", "--due", "14d", "--name", "Q4 2026 review")
        assert r.returncode == 0, r.stderr
        m = re.match(r"campaign (\d+) started: Q4 2026 review, (\d+) item\(s\), 1 unexplained", r.stdout)
        assert m, r.stdout
        cid, total = m.group(1), int(m.group(2))

        # Step 2: Reviews (/reviews) and the campaign (/reviews/<id>): Progress, Items with why each person has
        # the access (the rule, or "found in the app"), the last change and the state.
        assert "(`/reviews/<id>`)" in step("reviewer-access-review.md", 2)
        assert "Q4 2026 review" in _text(_page(served, "/reviews"))
        page = _page(served, f"/reviews/{cid}")
        assert "Progress" in _text(page) and "Items" in _text(page)
        items_html = page[page.index("<h2>Items</h2>"):]
        rows_seen = [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
                     for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", items_html, re.S) if "<td" in tr]
        shadow = [x for x in rows_seen if x[2] == "group:Shadow Admins"]
        assert len(shadow) == 1 and "found in the app" in shadow[0][3] and shadow[0][5] == boss, shadow
        assert any(x[2] == "group:Staff" and "rule" in x[3] for x in rows_seen), rows_seen
        # ... you see only your own items, never your own access (the command line's --reviewer, and --as).
        assert "never your own access" in step("reviewer-access-review.md", 2)
        r = cli.run("review", "show", cid, "--reviewer", boss, "--json")
        assert r.returncode == 0, r.stderr
        mine = json.loads(r.stdout)["items"]
        assert mine and {i["reviewer"] for i in mine} == {boss} and "E000" not in {i["employee_id"] for i in mine}
        by = {(i["employee_id"], i["entitlement"]): i["item"] for i in mine}

        # Step 3: a reason in the "reason" box, then Keep or Revoke (the page's form) …
        assert 'press **Keep** or **Revoke**' in step("reviewer-access-review.md", 3)
        item = by[("E002", "group:Shadow Admins")]
        assert re.search(rf'name="item" value="{item}">.*?name="reason".*?value="keep">Keep</button>.*?'
                         r'value="revoke"[^>]*>Revoke</button>', page, re.S)
        code, after = _form(served, f"/reviews/{cid}/decide", {"item": str(item), "decision": "revoke",
                                                               "reason": "nobody asked for it"})
        assert code == 200, after
        code, after = _form(served, f"/reviews/{cid}/decide", {"item": str(by[("E003", "group:Staff")]),
                                                               "decision": "keep", "reason": "still in the team"})
        assert code == 200, after
        # … or the command line: `jml review decide <id> <item id>… --revoke --reason "<why>" --as <e-mail>`.
        assert "`jml review show <id> --reviewer <your work e-mail>`" in step("reviewer-access-review.md", 3)
        r = cli.run("review", "decide", cid, str(by[("E001", "group:Eng")]), "--revoke", "--reason", "moved to support",
                    "--as", boss)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 item(s) decided: revoke" in r.stdout, r.stdout
        own = re.search(r"<td>Person N000</td>(?:(?!</tr>).)*?name=\"item\" value=\"(\d+)\"", page, re.S)
        assert own, "no item of Person N000's own access on the page"
        r = cli.run("review", "decide", cid, own.group(1), "--keep", "--as", boss)
        assert r.returncode != 0 and "refused" in r.stderr, r.stdout + r.stderr  # never your own access

        # Step 4: a revocation goes through the guard and the engine at once and is read back from the app; it
        # stays away (the rules do not put it back); `jml review verify <id>` reads it back on demand.
        assert "`jml review verify <id>`" in step("reviewer-access-review.md", 4)
        wait_until(lambda: "Shadow Admins" not in _member_of(fresh, "person.n002@example.com")
                   and "Eng" not in _member_of(fresh, "person.n001@example.com"), 20, 0.3, what="the revocations")
        r = cli.run("review", "verify", cid)
        assert r.returncode == 0 and "; not yet: 0" in r.stdout, r.stdout + r.stderr  # (the daemon read them first)
        rows[1]["job_title"] = "Support Engineer"  # the next HR read re-plans E001: the rules do not put Eng back
        _write(cli, rows)
        wait_until(lambda: _user(cli, "person.n001@example.com").get("title") == "Support Engineer", 15, 0.3,
                   what="the next HR read")
        assert _member_of(fresh, "person.n001@example.com") == {"Staff"}

        # Step 5: `jml review list` (decided / total per campaign), the Progress table, the metrics.
        assert "`jml review list`" in step("reviewer-access-review.md", 5)
        r = cli.run("review", "list")
        assert re.search(rf"^\s*{cid}\s+Q4 2026 review\s+by manager\s+3/{total} decided", r.stdout, re.M), r.stdout
        assert re.search(rf"<td>{re.escape(boss)}</td><td>3/\d+</td>", _page(served, f"/reviews/{cid}"))
        metrics = served.get("/metrics")[1].decode()
        assert f'jml_review_items{{campaign="{cid}",state="revoked"}} 2.0' in metrics

        # Step 6: Evidence (CSV) / (JSON) on the campaign page (the link followed here), or `jml review export <id>
        # --format csv`; each decision carries its audit record's seq and hash; `jml audit verify` proves the
        # trail intact.
        assert "on the campaign page **Evidence (CSV)**" in step("reviewer-access-review.md", 6)
        page = _page(served, f"/reviews/{cid}")
        link = re.search(r'<a href="([^"]+)">Evidence \(CSV\)</a>', page)
        assert link and "Evidence (JSON)" in page, "no evidence links on the campaign page"
        evidence = _page(served, html.unescape(link.group(1)))
        decided = [x for x in csv.DictReader(io.StringIO(evidence)) if x["decision"]]
        assert len(decided) == 3 and all(x["audit_seq"] and x["audit_hash"] for x in decided), evidence[:800]
        assert all(x["verified_at"] for x in decided if x["decision"] == "revoke"), evidence[:800]
        r = cli.run("audit", "verify")
        assert r.returncode == 0 and "audit trail intact" in r.stdout, r.stdout + r.stderr
        assert served.stop() == 0
