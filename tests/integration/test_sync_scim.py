"""The whole pipeline against a real scim2-server on loopback: HR export -> plan_cycle ->
outbox -> engine -> SCIM, and the CLI's sync/plan/approve/discard/retry/status in-process.

Expectations are computed here, from the CSV and the rules written in this file, never
from jml.policy. Writes are counted by a VendorProxy between jml and the server; the
server's state is read directly from the server, not through the proxy or the connector.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import functools
import io
import json
import random
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiohttp import web

from jml import cli, commands
from jml import config as config_mod
from jml.runtime import Runtime
from jml.store.repo import Store
from jml.sync import PlanOutcome, plan_cycle
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.proxy import VendorProxy

# The project's own seeded export generator (as the benchmarks use it), inside the repository.
GEN_HRIS = Path(__file__).resolve().parents[2] / "bench" / "gen_hris.py"
BERLIN = ZoneInfo("Europe/Berlin")
TOKEN_ENV = "JML_TEST_SCIM_TOKEN"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
FIELDS = ["employee_id", "first_name", "last_name", "preferred_name", "work_email", "department", "cost_center",
          "job_title", "manager_id", "location", "country", "employment_type", "status", "hire_date",
          "termination_date", "github_username"]

# The rules, written twice on purpose: once as jml config, once as the test's own expectation.
RULES = [
    {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"demo": ["All Staff"]}},
    {"name": "engineering", "when": {"department": ["Engineering", "Data Science"]},
     "grant": {"demo": ["Engineering"]}},
    {"name": "contractors", "when": {"employment_type": "Contractor"}, "grant": {"demo": ["Contractors"]}},
]


def expected_groups(row: dict[str, str]) -> set[str]:
    """Grants once employed: a pre-hire whose hire date came is granted as the employee they now are."""
    out = set()
    if row["status"] in ("Active", "Leave", "Pre-hire"):
        out.add("All Staff")
    if row["department"] in ("Engineering", "Data Science"):
        out.add("Engineering")
    if row["employment_type"] == "Contractor":
        out.add("Contractors")
    return out


def berlin(day: str, hhmm: str = "09:00") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=BERLIN)


# ---- the harness --------------------------------------------------------------------

class CountingProxy(VendorProxy):
    """Forwards everything; `reject_creates` answers a permanent 400 to user creation."""

    reject_creates: str | None = None

    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        if self.reject_creates and request.method == "POST" and request.path.rstrip("/").endswith("/Users"):
            return web.json_response({"schemas": [ERROR], "status": "400", "scimType": "invalidValue",
                                      "detail": self.reject_creates}, status=400)
        return None


class Server:
    """Reads the scim2-server's state directly (not through the proxy)."""

    def __init__(self, peer: ScimPeer) -> None:
        self.peer = peer

    def _get(self, path: str) -> Any:
        req = urllib.request.Request(self.peer.url + path, headers=self.peer.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def post_user(self, body: dict[str, Any]) -> dict[str, Any]:
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], **body}
        req = urllib.request.Request(self.peer.url + "Users", data=json.dumps(body).encode(), method="POST",
                                     headers={**self.peer.headers, "Content-Type": "application/scim+json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201
            return dict(json.loads(r.read()))

    def users(self) -> list[dict[str, Any]]:
        return list(self._get("Users?count=1000").get("Resources", []))

    def by_name(self) -> dict[str, dict[str, Any]]:
        users = self.users()
        names = [u["userName"] for u in users]
        assert len(names) == len(set(names)), "duplicate userNames on the server"
        return {u["userName"]: u for u in users}

    def groups(self) -> dict[str, set[str]]:
        """group displayName -> member userNames."""
        ids = {u["id"]: u["userName"] for u in self.users()}
        out: dict[str, set[str]] = {}
        for g in self._get("Groups?count=1000").get("Resources", []):
            out[g["displayName"]] = {ids.get(m["value"], m["value"]) for m in g.get("members") or []}
        return out

    def groups_of(self, username: str) -> set[str]:
        return {g for g, members in self.groups().items() if username in members}


def row(eid: str, first: str, last: str, *, dept: str = "Engineering", status: str = "Active",
        hire: str = "2020-01-06", term: str = "", email: str | None = None, etype: str = "Employee",
        title: str = "Engineer", **extra: str) -> dict[str, str]:
    return {"employee_id": eid, "first_name": first, "last_name": last, "preferred_name": "",
            "work_email": email or f"{first.lower()}.{last.lower()}@example.com", "department": dept,
            "cost_center": "CC-100", "job_title": title, "manager_id": "", "location": "Berlin", "country": "DE",
            "employment_type": etype, "status": status, "hire_date": hire, "termination_date": term,
            "github_username": "", **extra}


class Env:
    def __init__(self, tmp_path: Path, db_url: str, peer: ScimPeer, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str], overrides: dict[str, Any] | None = None) -> None:
        self.tmp = tmp_path
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        self.server = Server(peer)
        self.proxy = CountingProxy(peer.url.removesuffix("/v2/"))
        self.proxy.start()
        self.export = tmp_path / "hr.csv"
        self.now = berlin("2026-11-23")
        monkeypatch.setenv(TOKEN_ENV, peer.token)
        doc: dict[str, Any] = {
            "state": {"url": db_url},
            "sources": {"hris": {"location": str(self.export), "format": "csv", "profile": "generic",
                                 "timezone": "Europe/Berlin"}},
            "lifecycle": {"prehire_days": 3, "delete_after": "30d", "leave_of_absence": "keep", "missing_after": 2,
                          "termination_time": "23:59"},
            "guard": {"max_deprovision_percent": 50, "max_deprovision_count": 100, "max_shrink_percent": 10},
            "policy": {"username": "{work_email}", "protected": ["breakglass@example.com"], "rules": RULES},
            "connectors": {"demo": {"type": "scim", "url": self.proxy.url + "v2/", "token_env": TOKEN_ENV,
                                    "concurrency": 8, "max_attempts": 2, "retry_budget": "5s"}},
        }
        for path, value in (overrides or {}).items():  # "connectors.demo.concurrency": 1
            *parents, key = path.split(".")
            node = doc
            for p in parents:
                node = node.setdefault(p, {})
            node[key] = value
        self.config_path = tmp_path / "jml.yaml"
        self.config_path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        self.cfg = config_mod.load(self.config_path)
        # The CLI builds its own Runtime: give it the test's clock.
        monkeypatch.setattr(commands, "Runtime", functools.partial(Runtime, clock=lambda: self.now))

    def close(self) -> None:
        self.proxy.stop()

    def runtime(self) -> Runtime:
        return Runtime(self.cfg, clock=lambda: self.now)

    def write(self, rows: list[dict[str, str]], fields: list[str] | None = None) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields or list(rows[0]) if rows else FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        self.export.write_text(buf.getvalue(), encoding="utf-8")

    def sync(self) -> PlanOutcome:
        """One cycle through the library: plan_cycle, then the workers until idle."""
        async def run() -> PlanOutcome:
            rt = self.runtime()
            try:
                outcome = await plan_cycle(rt)
                if not outcome.held:
                    await commands.work(rt, outcome.plan_id, timeout=60)
            finally:
                rt.store.close()
            return outcome
        return asyncio.run(run())

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--config", str(self.config_path), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def writes(self) -> int:
        return len(self.proxy.writes())

    def store(self) -> Store:
        return Store(self.cfg.state.url)


@pytest.fixture(scope="module")
def shared_peer() -> Iterator[ScimPeer]:
    """One scim2-server for the module (starting one costs seconds); emptied before each test."""
    with scim2_server() as peer:
        yield peer


def _empty(peer: ScimPeer) -> None:
    server = Server(peer)
    for kind in ("Groups", "Users"):
        for res in server._get(f"{kind}?count=1000").get("Resources", []):
            req = urllib.request.Request(f"{peer.url}{kind}/{res['id']}", method="DELETE", headers=peer.headers)
            with urllib.request.urlopen(req, timeout=10):
                pass
    assert server.users() == [] and server._get("Groups").get("Resources", []) == []


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, shared_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Iterator[Env]:
    overrides = getattr(request, "param", {})
    _empty(shared_peer)
    e = Env(tmp_path, sqlite_url, shared_peer, monkeypatch, capsys, overrides)
    try:
        yield e
    finally:
        e.close()


def assert_matches_export(server: Server, rows: list[dict[str, str]], today: dt.date,
                          leavers_with_accounts: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """The server holds exactly the accounts the export and the rules call for."""
    want: dict[str, tuple[bool, set[str], dict[str, str]]] = {}
    for r in rows:
        hire = dt.date.fromisoformat(r["hire_date"])
        term = dt.date.fromisoformat(r["termination_date"]) if r["termination_date"] else None
        if (r["status"] == "Terminated" and (term is None or term <= today)) or (term is not None and term < today):
            if r["employee_id"] in leavers_with_accounts:
                want[r["work_email"]] = (False, set(), r)
            continue
        if hire > today:
            if hire - dt.timedelta(days=3) <= today:
                want[r["work_email"]] = (False, set(), r)  # pre-hire: inactive, no grants
            continue
        want[r["work_email"]] = (True, expected_groups(r), r)
    users = server.by_name()
    assert set(users) == set(want)
    groups = server.groups()
    for name, (active, grps, r) in want.items():
        u = users[name]
        first = r["preferred_name"] or r["first_name"]
        assert u["active"] is active, name
        assert u["externalId"] == r["employee_id"]
        assert u["name"]["givenName"] == first and u["name"]["familyName"] == r["last_name"]
        assert u["displayName"] == f"{first} {r['last_name']}"
        assert u.get("title") == r["job_title"]
        assert [e["value"] for e in u["emails"]] == [r["work_email"]]
        assert u[ENTERPRISE]["department"] == r["department"]
        assert u[ENTERPRISE]["employeeNumber"] == r["employee_id"]
        have = {g for g, members in groups.items() if name in members}
        assert have == grps, (name, r["status"], r["department"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def gen_hris(*args: str) -> None:
    subprocess.run([sys.executable, str(GEN_HRIS), *args], check=True, capture_output=True)


# ---- 300 people, three days -------------------------------------------------------------

def test_three_days_of_a_300_person_export(env: Env, tmp_path: Path) -> None:
    day0, day1 = tmp_path / "day0.csv", tmp_path / "day1.csv"
    gen_hris("--people", "300", "--seed", "7", "--today", "2026-11-23", "--out", str(day0))
    rows0 = read_csv(day0)
    assert len(rows0) == 300
    env.export.write_bytes(day0.read_bytes())
    env.now = berlin("2026-11-23")
    out = env.sync()
    assert not out.held and out.rows == 300
    assert_matches_export(env.server, rows0, dt.date(2026, 11, 23))
    assert env.cli("status")[0] == 0

    # Day 1: joiners, movers, leavers (gen_hris --from, as HR would send it).
    gen_hris("--from", str(day0), "--seed", "8", "--today", "2026-11-24", "--joiners", "0.02", "--movers", "0.05",
             "--leavers", "0.02", "--out", str(day1))
    rows1 = read_csv(day1)
    before = {r["employee_id"]: r for r in rows0}
    joiners = [r for r in rows1 if r["employee_id"] not in before]
    leavers = {r["employee_id"] for r in rows1 if r["status"] == "Terminated"}
    movers = [r for r in rows1 if r["employee_id"] in before and r["employee_id"] not in leavers
              and r["department"] != before[r["employee_id"]]["department"]]
    assert joiners and leavers and movers
    ids_before = {u["userName"]: u["id"] for u in env.server.users()}
    env.export.write_bytes(day1.read_bytes())
    env.now = berlin("2026-11-24")
    out = env.sync()
    assert not out.held, out.reasons
    assert_matches_export(env.server, rows1, dt.date(2026, 11, 24), leavers_with_accounts=leavers)
    users = env.server.by_name()
    for r in joiners:
        assert users[r["work_email"]]["active"] is True
    for eid in leavers:
        email = next(r["work_email"] for r in rows1 if r["employee_id"] == eid)
        assert users[email]["id"] == ids_before[email] and users[email]["active"] is False
        assert env.server.groups_of(email) == set()
    changed_groups = [r for r in movers if expected_groups(r) != expected_groups(before[r["employee_id"]])]
    assert changed_groups, "the seed should move someone across the Engineering line"
    for r in movers:
        assert users[r["work_email"]]["id"] == ids_before[r["work_email"]]  # same account, moved

    # Day 1 again: the same file re-read, then the same people in a new file (rows reordered):
    # nothing to write.
    writes = env.writes()
    assert env.sync().unchanged
    shuffled = list(rows1)
    random.Random(3).shuffle(shuffled)
    env.write(shuffled, FIELDS)
    out = env.sync()
    assert not out.unchanged and out.operations == [] and out.missing == []
    assert env.writes() == writes
    assert env.cli("sync")[0] == 0 and env.writes() == writes


# ---- lifecycle cases -------------------------------------------------------------------------

def test_rehire_reactivates_the_same_account(env: Env) -> None:
    team = [row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim", dept="Sales"), row("E3", "Cy", "Ng")]
    env.write(team)
    env.sync()
    ana = env.server.by_name()["ana.silva@example.com"]
    assert ana["active"] and env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering"}

    env.now = berlin("2026-11-24")
    env.write([row("E1", "Ana", "Silva", status="Terminated", term="2026-11-24"), *team[1:]])
    env.sync()
    gone = env.server.by_name()["ana.silva@example.com"]
    assert gone["id"] == ana["id"] and gone["active"] is False
    assert env.server.groups_of("ana.silva@example.com") == set()

    env.now = berlin("2026-12-07")
    env.write([row("E1", "Ana", "Silva", hire="2026-12-07", dept="Data Science"), *team[1:]])
    env.sync()
    users = env.server.by_name()
    back = users["ana.silva@example.com"]
    assert back["id"] == ana["id"] and back["active"] is True
    assert env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering"}
    assert len(users) == 3


def test_existing_accounts_are_adopted_not_duplicated(env: Env) -> None:
    by_name = env.server.post_user({"userName": "ana.silva@example.com", "active": True})
    by_ext = env.server.post_user({"userName": "b.kim.old@example.com", "externalId": "E2", "active": False})
    env.write([row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim", dept="Sales")])
    env.sync()
    users = env.server.by_name()
    assert set(users) == {"ana.silva@example.com", "bob.kim@example.com"}
    assert users["ana.silva@example.com"]["id"] == by_name["id"]
    assert users["ana.silva@example.com"]["externalId"] == "E1"
    assert users["bob.kim@example.com"]["id"] == by_ext["id"]  # matched by externalId, renamed
    assert users["bob.kim@example.com"]["active"] is True
    assert env.server.groups_of("bob.kim@example.com") == {"All Staff"}
    assert [s for s in env.proxy.seen if s.status >= 400] == []


@pytest.mark.parametrize("env", [{"policy.username": "{login}"}], indirect=True)
def test_username_with_quote_and_backslash_round_trips(env: Env) -> None:
    fresh, existing = 'o"brien\\dev', 'x\\"y"z\\'
    pre = env.server.post_user({"userName": existing, "active": False})
    env.write([row("E1", "Ana", "Silva", login=fresh), row("E2", "Bob", "Kim", login=existing),
               row("E3", "Cy", "Ng", login="plain")])
    env.sync()
    users = env.server.by_name()
    assert set(users) == {fresh, existing, "plain"}
    assert users[fresh]["externalId"] == "E1"
    assert users[existing]["id"] == pre["id"] and users[existing]["externalId"] == "E2"  # found by escaped filter
    assert users[existing]["active"] is True
    assert env.server.groups_of(fresh) == {"All Staff", "Engineering"}
    # Every filter the connector sent was accepted by the server (escaped, not rejected).
    assert [s for s in env.proxy.seen if s.status >= 400] == []
    filters = [s.query for s in env.proxy.seen if "filter=" in s.query]
    assert filters

    # A move and a leave address the same accounts.
    env.now = berlin("2026-11-24")
    env.write([row("E1", "Ana", "Silva", login=fresh, dept="Sales"),
               row("E2", "Bob", "Kim", login=existing, status="Terminated", term="2026-11-24"),
               row("E3", "Cy", "Ng", login="plain")])
    env.sync()
    users = env.server.by_name()
    assert set(users) == {fresh, existing, "plain"}
    assert env.server.groups_of(fresh) == {"All Staff"}
    assert users[existing]["active"] is False and env.server.groups_of(existing) == set()


def test_prehire_account_is_created_inactive_and_enabled_at_local_midnight_on_the_hire_date(env: Env) -> None:
    # Sales: no rule names her department, only the status rule (written for Active) covers her.
    env.write([row("E1", "Ana", "Silva", status="Pre-hire", hire="2026-11-26"),
               row("E3", "Cy", "Ng", status="Pre-hire", hire="2026-11-26", dept="Sales"), row("E2", "Bob", "Kim")])
    env.now = berlin("2026-11-22", "23:59")  # the pre-hire window opens at 2026-11-23 00:00 Berlin
    env.sync()
    assert "ana.silva@example.com" not in env.server.by_name()

    env.now = berlin("2026-11-23", "00:01")
    assert env.sync().unchanged  # same export: only the dated transition is planned
    ana = env.server.by_name()["ana.silva@example.com"]
    assert ana["active"] is False and env.server.groups_of("ana.silva@example.com") == set()
    assert env.server.by_name()["cy.ng@example.com"]["active"] is False

    env.now = berlin("2026-11-25", "23:58")
    env.sync()
    assert env.server.by_name()["ana.silva@example.com"]["active"] is False

    # 00:05 in Berlin on the hire date is still the day before in UTC: the local date counts.
    env.now = berlin("2026-11-26", "00:05")
    assert env.now.astimezone(dt.UTC).date() == dt.date(2026, 11, 25)
    writes = env.writes()
    env.sync()
    assert env.writes() > writes
    ana2 = env.server.by_name()["ana.silva@example.com"]
    assert ana2["id"] == ana["id"] and ana2["active"] is True
    # HR's export still says Pre-hire on day one: she is granted as the employee she now is.
    assert env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering"}
    assert env.server.by_name()["cy.ng@example.com"]["active"] is True
    assert env.server.groups_of("cy.ng@example.com") == {"All Staff"}


@pytest.mark.parametrize("env", [{"lifecycle.leave_of_absence": "keep"}, {"lifecycle.leave_of_absence": "suspend"}],
                         indirect=True, ids=["keep", "suspend"])
def test_leave_of_absence_keep_or_suspend(env: Env) -> None:
    mode = env.cfg.lifecycle.leave_of_absence
    env.write([row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim", dept="Sales")])
    env.sync()
    ana = env.server.by_name()["ana.silva@example.com"]
    env.write([row("E1", "Ana", "Silva", status="Leave"), row("E2", "Bob", "Kim", dept="Sales")])
    writes = env.writes()
    out = env.sync()
    assert not any(op.action.value in ("deactivate", "delete") for op in out.operations) or mode == "suspend"
    on_leave = env.server.by_name()["ana.silva@example.com"]
    assert on_leave["id"] == ana["id"]
    if mode == "keep":
        assert on_leave["active"] is True and env.writes() == writes
    else:
        assert on_leave["active"] is False
    assert env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering"}

    env.write([row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim", dept="Sales")])
    env.sync()
    back = env.server.by_name()["ana.silva@example.com"]
    assert back["id"] == ana["id"] and back["active"] is True


def test_protected_account_is_never_deactivated_and_the_skip_is_audited(env: Env) -> None:
    team = [row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim"), row("E3", "Cy", "Ng")]
    admin = row("E9", "Break", "Glass", email="breakglass@example.com", dept="IT")
    env.write([*team, admin])
    env.sync()
    env.now = berlin("2026-11-24")
    env.write([*team, {**admin, "status": "Terminated", "termination_date": "2026-11-24"}])
    out = env.sync()
    assert any("protected" in s for s in out.skipped)
    assert env.server.by_name()["breakglass@example.com"]["active"] is True
    # Past delete_after: still neither deactivated nor deleted.
    env.now = berlin("2027-01-05")
    env.sync()
    assert env.server.by_name()["breakglass@example.com"]["active"] is True
    rt = env.runtime()
    skips = [r for r in rt.audit.records(subject="E9") if r["kind"] == "skip"]
    assert skips, "the protected skip must be in the audit trail"
    # Its grants stay too: a break-glass account stripped of its admin groups is no break-glass.
    assert {s["data"]["reason"] for s in skips} == {"protected account: not deactivated",
                                                     "protected account: not deleted",
                                                     "protected account: kept 1 grant(s)"}
    assert all(s["data"]["connector"] == "demo" for s in skips)
    assert rt.audit.verify().ok


@pytest.mark.parametrize("env", [{"guard.max_shrink_percent": 30}], indirect=True)
def test_missing_person_is_reported_after_one_export_and_deprovisioned_after_two(env: Env) -> None:
    team = [row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim"), row("E3", "Cy", "Ng"), row("E4", "Dee", "Ode")]
    env.write(team)
    env.sync()
    writes = env.writes()
    env.write(team[:3])
    out = env.sync()
    assert out.missing == ["E4"] and out.operations == []
    assert env.writes() == writes
    assert env.server.by_name()["dee.ode@example.com"]["active"] is True
    assert env.sync().unchanged  # a re-read of the same export does not make anyone more missing
    assert env.server.by_name()["dee.ode@example.com"]["active"] is True
    assert env.runtime().store.person_index()["E4"].missing_count == 1

    env.write([*team[:2], {**team[2], "job_title": "Staff Engineer"}])  # a second, distinct export
    out = env.sync()
    assert not out.held  # 1 of 4 is within this config's 50%: through the guard
    assert {(op.action.value, op.employee_id) for op in out.operations if op.action.value == "deactivate"} == {
        ("deactivate", "E4")}
    dee = env.server.by_name()["dee.ode@example.com"]
    assert dee["active"] is False and env.server.groups_of("dee.ode@example.com") == set()


@pytest.mark.parametrize("env", [{"guard.max_shrink_percent": 30}], indirect=True)
def test_a_missing_person_back_in_the_export_unchanged_is_no_longer_missing(env: Env) -> None:
    """Their row is byte for byte the one read before (its hash known: not parsed again), yet
    they are planned: their missing count goes back to 0 and the next absence counts from one."""
    team = [row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim"), row("E3", "Cy", "Ng"), row("E4", "Dee", "Ode")]
    env.write(team)
    env.sync()
    env.write(team[:3])
    assert env.sync().missing == ["E4"]
    assert env.runtime().store.person_index()["E4"].missing_count == 1
    env.write([*team[1:], team[0]])  # E4 back, unchanged (the rows in another order: another file)
    out = env.sync()
    assert out.missing == [] and out.operations == []
    assert env.runtime().store.person_index()["E4"].missing_count == 0
    env.write([team[0], team[1], team[3]])  # E3 gone once: reported, not deprovisioned
    out = env.sync()
    assert out.missing == ["E3"] and out.operations == []
    assert env.server.by_name()["dee.ode@example.com"]["active"] is True


def test_conversion_new_employee_id_adopts_the_account(env: Env) -> None:
    env.write([row("C1", "Ana", "Silva", etype="Contractor"), row("E2", "Bob", "Kim")])
    env.sync()
    ana = env.server.by_name()["ana.silva@example.com"]
    assert env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering", "Contractors"}
    env.now = berlin("2026-11-24")
    env.write([row("C1", "Ana", "Silva", etype="Contractor", status="Terminated", term="2026-11-23"),
               row("E7", "Ana", "Silva", hire="2026-11-24"), row("E2", "Bob", "Kim")])
    env.sync()
    users = env.server.by_name()
    assert set(users) == {"ana.silva@example.com", "bob.kim@example.com"}
    now_ana = users["ana.silva@example.com"]
    assert now_ana["id"] == ana["id"] and now_ana["externalId"] == "E7" and now_ana["active"] is True
    assert env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering"}
    accounts = env.runtime().store.load_accounts()
    assert ("demo", "C1") not in accounts and accounts[("demo", "E7")].remote_id == ana["id"]
    writes = env.writes()
    env.write([row("E7", "Ana", "Silva", hire="2026-11-24"), row("C1", "Ana", "Silva", etype="Contractor",
               status="Terminated", term="2026-11-23"), row("E2", "Bob", "Kim")])
    env.sync()
    assert env.writes() == writes


# ---- the guard and the CLI -----------------------------------------------------------------

@pytest.mark.parametrize("env", [{"guard.max_deprovision_percent": 5}], indirect=True)
def test_truncated_export_is_held_then_approved_or_discarded(env: Env) -> None:
    team = [row(f"E{i:02d}", "Person", f"N{i:02d}", dept="Sales" if i % 2 else "Engineering") for i in range(40)]
    env.write(team)
    assert env.cli("sync")[0] == 0
    before = env.server.by_name()
    assert len(before) == 40
    writes = env.writes()

    env.write(team[:20])  # HR's export cut in half
    assert env.cli("sync", "--dry-run")[0] == 3
    code, out, _ = env.cli("sync")
    assert code == 3 and "HELD" in out and "shrank" in out
    assert env.writes() == writes
    code, out, _ = env.cli("status", "--json")
    doc = json.loads(out)
    assert code == 0 and len(doc["held_plans"]) == 1
    held_id = doc["held_plans"][0]["plan_id"]
    assert any("shrank from 40 to 20" in r for r in doc["held_plans"][0]["reasons"])
    code, out, _ = env.cli("status")
    assert held_id in out
    env.cli("sync")  # the same export again: still held, still nothing pushed
    assert env.writes() == writes
    assert [p["plan_id"] for p in json.loads(env.cli("status", "--json")[1])["held_plans"]] == [held_id]

    # Approving a truncated export vouches for it: it is read as HR's truth, so the absent
    # people are reported missing (not deprovisioned, missing_after is 2) and nothing is pushed.
    code, out, err = env.cli("approve", held_id)
    assert code == 0, err
    code, out, err = env.cli("sync")
    assert code == 0, err
    assert "missing from this export" in err
    assert env.writes() == writes
    assert json.loads(env.cli("status", "--json")[1])["held_plans"] == []
    index = env.runtime().store.person_index()
    assert index["E30"].missing_count == 1 and index["E05"].missing_count == 0
    assert all(u["active"] for u in env.server.users())

    # The next distinct export still lacks them: now they are leavers, and 50% of the
    # accounts is far past the guard: held again. Discard drops it.
    env.write([{**r, "job_title": "Lead"} if r["employee_id"] == "E00" else r for r in team[:20]])
    code, out, _ = env.cli("sync")
    assert code == 3 and "max_deprovision_percent" in out
    assert env.writes() == writes
    doc = json.loads(env.cli("status", "--json")[1])
    assert len(doc["held_plans"]) == 1 and doc["held_plans"][0]["summary"].get("deactivate") == 20
    second = doc["held_plans"][0]["plan_id"]
    assert env.cli("approve", held_id)[0] == 2  # the first one is no longer held
    code, out, _ = env.cli("discard", second)
    assert code == 0 and "discarded" in out
    assert env.writes() == writes
    assert json.loads(env.cli("status", "--json")[1])["held_plans"] == []
    assert all(u["active"] for u in env.server.users())
    assert env.cli("sync")[0] == 0 and env.writes() == writes  # a discarded export is not re-planned
    assert env.runtime().audit.verify().ok


def test_dead_letter_then_retry(env: Env) -> None:
    env.proxy.reject_creates = "userName violates the tenant naming policy (ticket 4711)"
    env.write([row("E1", "Ana", "Silva"), row("E2", "Bob", "Kim", dept="Sales")])
    code, out, err = env.cli("sync")
    assert code == 1
    assert "tenant naming policy" in err
    assert env.server.users() == []
    code, out, _ = env.cli("status")
    assert code == 0 and "dead letters" in out and "tenant naming policy (ticket 4711)" in out
    doc = json.loads(env.cli("status", "--json")[1])
    creates = [d for d in doc["dead_letters"] if d["action"] == "create"]
    assert {d["person"] for d in creates} == {"E1", "E2"}
    assert all("tenant naming policy (ticket 4711)" in d["error"] for d in creates)
    assert doc["connectors"]["demo"]["dead"] >= 2

    env.proxy.reject_creates = None  # the app's admin fixed the policy
    code, out, err = env.cli("retry", "--all")
    assert code == 0, err
    users = env.server.by_name()
    assert set(users) == {"ana.silva@example.com", "bob.kim@example.com"}
    assert env.server.groups_of("ana.silva@example.com") == {"All Staff", "Engineering"}
    assert env.server.groups_of("bob.kim@example.com") == {"All Staff"}
    doc = json.loads(env.cli("status", "--json")[1])
    assert doc["dead_letters"] == [] and doc["connectors"]["demo"]["dead"] == 0
    writes = env.writes()
    assert env.cli("sync")[0] == 0 and env.writes() == writes


@pytest.mark.parametrize("env", [{"sources.hris.timezone": "America/Los_Angeles"}], indirect=True)
@pytest.mark.parametrize("field", ["termination_date", "hire_date"])
def test_a_date_at_the_end_of_time_west_of_utc_is_a_quarantined_row_not_a_crash(env: Env, field: str) -> None:
    """9999-12-31 at 23:59 in Los Angeles is in year 10000 in UTC (OverflowError): the row is
    quarantined with file, row and field like any bad row; the rest of the export proceeds."""
    rows = [row("E1", "Ana", "Smith"), row("E2", "Bo", "Lee", **{field: "9999-12-31"}),
            row("E3", "Cy", "Park", status="Terminated", term="9999-12-31")]
    rows[2][field] = "9999-12-31"
    env.write(rows)
    outcome = env.sync()
    assert not outcome.held
    assert len(outcome.quarantined) == 2, outcome.quarantined
    for line, rownum in zip(sorted(outcome.quarantined), (3, 4), strict=True):
        assert line.startswith(f"{env.export.name}, row {rownum}, field {field}: out of range: 9999-12-31"), line
    assert set(env.server.by_name()) == {"ana.smith@example.com"}
    code, out, err = env.cli("plan", "--json")
    assert code == 0, err
    assert json.loads(out)["operations"] == []
