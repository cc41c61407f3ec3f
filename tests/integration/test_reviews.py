"""Access review campaigns and unexplained access (issue 18) against three real scim2-servers on
loopback: HR export -> sync -> changes made in the apps behind jml's back -> reconcile (managed
groups put back, unmanaged memberships kept and listed) -> a campaign -> decisions (the person
under review refused) -> revocations pushed and read back from the servers -> evidence export
tied to the audit chain, which `jml audit verify` passes.

The servers' state is read directly from the servers, never through jml's connector.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import functools
import io
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from jml import cli, commands, reconcile, reviews
from jml import config as config_mod
from jml.review_items import ACCOUNT
from jml.runtime import Runtime
from jml.sync import plan_cycle, plan_people
from tests.peers import ScimPeer, scim2_server

TOKEN_ENV = "JML_TEST_REVIEW_TOKEN"
APPS = ("wiki", "crm", "tickets")
SECURITY = "security@example.com"
ENG_OWNER = "eng.owner@example.com"
CRM_OWNER = "crm.owner@example.com"
FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "manager_id", "employment_type",
          "status", "hire_date", "termination_date"]
RULES = [
    {"name": "everyone", "when": {"status": "Active"}, "grant": {a: ["All Staff"] for a in APPS}},
    {"name": "engineering", "when": {"department": "Engineering"},
     "grant": {"wiki": ["Engineering"], "tickets": ["Engineering"]}},
    {"name": "sales", "when": {"department": "Sales"}, "grant": {"crm": ["Sales"]}},
]


class Server:
    """One scim2-server, read and changed directly (what an admin does in the app's own console)."""

    def __init__(self, peer: ScimPeer) -> None:
        self.peer = peer

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.peer.url + path, data=data, method=method,
                                     headers={**self.peer.headers, "Content-Type": "application/scim+json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 1
        while True:
            page = self.call("GET", f"{kind}?startIndex={start}&count=500")
            res = page.get("Resources", [])
            out += res
            if not res or len(out) >= int(page.get("totalResults", 0)):
                return out
            start += len(res)

    def users(self) -> dict[str, dict[str, Any]]:
        return {u["userName"]: u for u in self.all("Users")}

    def groups(self) -> dict[str, set[str]]:
        ids = {u["id"]: u["userName"] for u in self.all("Users")}
        return {g["displayName"]: {ids.get(m["value"], m["value"]) for m in g.get("members") or []}
                for g in self.all("Groups")}

    def group_id(self, name: str) -> str | None:
        return next((g["id"] for g in self.all("Groups") if g["displayName"] == name), None)

    def add_members(self, group: str, usernames: list[str]) -> None:
        ids = {u["userName"]: u["id"] for u in self.all("Users")}
        gid = self.group_id(group)
        members = [{"value": ids[n]} for n in usernames]
        if gid is None:
            self.call("POST", "Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                         "displayName": group, "members": members})
            return
        self.call("PATCH", f"Groups/{gid}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                             "Operations": [{"op": "add", "path": "members", "value": members}]})

    def add_user(self, username: str, external_id: str | None = None) -> None:
        extra = {"externalId": external_id} if external_id else {}
        self.call("POST", "Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": username,
                                    "active": True, **extra})

    def empty(self) -> None:
        for kind in ("Groups", "Users"):
            for res in self.all(kind):
                self.call("DELETE", f"{kind}/{res['id']}")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    with ExitStack() as stack:
        yield {a: Server(stack.enter_context(scim2_server())) for a in APPS}


def person(i: int) -> dict[str, str]:
    dept = ("Engineering", "Sales", "Support")[i % 3]
    # e0000 heads everyone's managers; managers e0001..e0010 manage the rest by number.
    manager = "" if i == 0 else ("e0000" if i <= 10 else f"e{1 + i % 10:04d}")
    return {"employee_id": f"e{i:04d}", "first_name": f"F{i}", "last_name": f"L{i}",
            "work_email": f"p{i:04d}@example.com", "department": dept, "manager_id": manager,
            "employment_type": "Employee", "status": "Active", "hire_date": "2020-01-06", "termination_date": ""}


class Env:
    def __init__(self, tmp: Path, servers: dict[str, Server], monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str], people: int,
                 catalogue: dict[str, Any] | None = None) -> None:
        self.tmp, self.servers, self.capsys = tmp, servers, capsys
        self.now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
        token = next(iter(servers.values())).peer.token
        monkeypatch.setenv(TOKEN_ENV, token)
        export = tmp / "hr.csv"
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        self.rows = [person(i) for i in range(people)]
        # A leaver of years ago: in HR, never given an account by jml.
        self.rows.append({**person(9999), "status": "Terminated", "termination_date": "2020-06-30"})
        w.writerows(self.rows)
        export.write_text(buf.getvalue(), encoding="utf-8")
        doc = {
            "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
            "sources": {"hris": {"location": str(export), "format": "csv", "profile": "generic", "timezone": "UTC"}},
            "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100000, "max_shrink_percent": 100},
            "policy": {"username": "{work_email}", "rules": RULES},
            "access": {"catalogue": catalogue or {"wiki": {"Engineering": {"owner": ENG_OWNER}},
                                                  "crm": {"*": {"owner": CRM_OWNER}}}},
            "reviews": {"default_reviewer": SECURITY},
            "connectors": {a: {"type": "scim", "url": s.peer.url, "token_env": TOKEN_ENV, "concurrency": 16,
                               "max_attempts": 2, "retry_budget": "5s"} for a, s in servers.items()},
        }
        self.config_path = tmp / "jml.yaml"
        self.config_path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.cfg = config_mod.load(self.config_path)
        monkeypatch.setattr(commands, "Runtime", functools.partial(Runtime, clock=lambda: self.now))
        monkeypatch.setattr("jml.runtime.Runtime", functools.partial(Runtime, clock=lambda: self.now))

    def runtime(self) -> Runtime:
        return Runtime(self.cfg, clock=lambda: self.now)

    def sync(self) -> None:
        async def run() -> None:
            rt = self.runtime()
            outcome = await plan_cycle(rt)
            assert not outcome.held, outcome.reasons
            await commands.work(rt, outcome.plan_id, timeout=120)
        asyncio.run(run())

    def reconcile(self) -> list[reconcile.Findings]:
        async def run() -> list[reconcile.Findings]:
            rt = self.runtime()
            await rt.open_connectors()
            try:
                found = await reconcile.run(rt)
            finally:
                await rt.close()
            await commands.work(rt, None, timeout=120)
            return found
        return asyncio.run(run())

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--config", str(self.config_path), *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def env(tmp_path: Path, servers: dict[str, Server], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Iterator[Env]:
    for s in servers.values():
        s.empty()
    param = getattr(request, "param", {})
    yield Env(tmp_path, servers, monkeypatch, capsys, param if isinstance(param, int) else param.get("people", 30),
              catalogue=param.get("catalogue") if isinstance(param, dict) else None)


def _decide(rt: Runtime, cid: int, ids: list[int], decision: str, who: reviews.Decider,
            now: dt.datetime) -> reviews.Decided:
    return reviews.decide(rt, cid, ids, decision, who, reason="quarterly review", now=now)


@pytest.mark.parametrize("env", [int(os.environ.get("JML_TEST_REVIEW_PEOPLE", "1000"))], indirect=True)
def test_campaign_over_1000_people_and_3_apps(env: Env) -> None:
    started = time.monotonic()
    env.sync()
    wiki, crm, tickets = (env.servers[a] for a in APPS)
    n = len(env.rows) - 1  # the long-gone leaver has no account
    assert len(wiki.users()) == len(crm.users()) == len(tickets.users()) == n

    # Behind jml's back: three non-engineers put into the managed Engineering group, five people
    # into a group no rule manages, and an account nobody in HR owns.
    intruders = ["p0001@example.com", "p0004@example.com", "p0007@example.com"]  # Sales (i % 3 == 1)
    secret = [f"p{i:04d}@example.com" for i in (3, 6, 9, 12, 15)]
    wiki.add_members("Engineering", intruders)
    wiki.add_members("Secret", secret)
    crm.add_user("ghost@example.com")
    env.reconcile()
    groups = wiki.groups()
    assert not set(intruders) & groups["Engineering"], "a managed group is put back to what the rules say"
    assert groups["Secret"] == set(secret), "an unmanaged group's members are never removed without a review"

    rt = env.runtime()
    unexplained = reviews.unexplained(rt, env.now)
    assert {(u["connector"], u["username"], u["entitlement"]) for u in unexplained} == {
        *(("wiki", s, "group:Secret") for s in secret), ("crm", "ghost@example.com", ACCOUNT)}
    code, out, _ = env.cli("status")
    assert code == 0 and "unexplained access: 6" in out

    code, out, err = env.cli("review", "start", "--by", "app", "--due", "14d", "--name", "Q4 review")
    assert code == 0, err
    cid = int(out.split()[1])
    items = rt.store.reviews.items(cid)
    grants = sum(len(reviews_expected(r)) for r in env.rows if r["status"] == "Active")
    assert len(items) == 3 * n + grants + len(secret) + 1
    by_key = {(it.holding.connector, it.holding.employee_id, it.holding.entitlement): it for it in items}
    assert by_key[("wiki", "e0003", "group:Secret")].why.kind == "none"
    assert by_key[("wiki", "e0003", "group:Engineering")].why.detail["rule"] == "engineering"
    assert by_key[("wiki", "e0003", "group:Engineering")].reviewer == ENG_OWNER
    assert by_key[("crm", "e0002", "group:All Staff")].reviewer == CRM_OWNER
    assert by_key[("tickets", "e0002", ACCOUNT)].reviewer == SECURITY

    # The person under review cannot decide their own item, admin or not; nor can someone else's reviewer.
    own = by_key[("crm", "e0004", "group:Sales")]
    refused = _decide(rt, cid, [own.id], "keep", reviews.Decider("person p0004", "p0004@example.com", "e0004",
                                                                 admin=True), env.now)
    assert refused.refused == {own.id: "nobody may decide on their own access"} and not refused.decided
    other = _decide(rt, cid, [own.id], "keep", reviews.Decider("eng owner", ENG_OWNER), env.now)
    assert other.refused == {own.id: "the item is assigned to another reviewer"}
    code, _, err = env.cli("review", "decide", str(cid), str(own.id), "--keep", "--as", "P0004@example.com")
    assert code == 2 and "own access" in err

    # Revocations: the unexplained memberships and account, 20 rule-granted entitlements, and one
    # account, through the command line (pushed at once, read back from the apps).
    revoke = [by_key[("wiki", f"e{i:04d}", "group:Secret")].id for i in (3, 6, 9, 12, 15)]
    revoke += [it.id for it in items if it.holding.connector == "crm" and not it.holding.employee_id]
    rule_revoked = [f"e{i:04d}" for i in range(n // 10, n // 10 + 20)]
    account_revoked = f"e{n // 2:04d}"
    revoke += [by_key[("tickets", e, "group:All Staff")].id for e in rule_revoked]
    revoke.append(by_key[("crm", account_revoked, ACCOUNT)].id)
    code, out, err = env.cli("review", "decide", str(cid), *map(str, revoke), "--revoke", "--reason", "not needed")
    assert code == 0, out + err
    assert f"revocations verified in the apps: {len(revoke)}; not yet: 0" in out

    # Everything else is kept, each reviewer deciding their own items.
    rt = env.runtime()
    for reviewer, _ in reviews.progress_of(rt, cid).items():
        mine = [it.id for it in rt.store.reviews.items(cid, reviewer=reviewer) if it.decision is None]
        done = _decide(rt, cid, mine, "keep", reviews.Decider(f"reviewer {reviewer}", reviewer), env.now)
        assert not done.refused and len(done.decided) == len(mine)
    campaign = rt.store.reviews.campaign(cid)
    assert campaign is not None and campaign.decided == campaign.total == len(items)

    # The apps, read directly: the revoked things are gone, the kept ones are there.
    assert wiki.groups()["Secret"] == set()
    assert "ghost@example.com" not in crm.users()
    staff = tickets.groups()["All Staff"]
    assert not {f"p{e[1:]}@example.com" for e in rule_revoked} & staff
    assert f"p{n // 10 + 21:04d}@example.com" in staff
    assert crm.users()[f"p{account_revoked[1:]}@example.com"]["active"] is False
    # A denial keeps a revoked rule grant away when the person is planned again (and reconciled).
    outcome = plan_people(rt, {rule_revoked[0]: (True, False)}, {}, rt.store.index_of(rule_revoked[:1]), env.now,
                          origin="test", dry_run=True)
    assert not [op for op in outcome.operations if op.connector == "tickets" and op.action.value == "add_member"]
    # ...and a revoked account stays deactivated (no reactivation, no grants back) though a rule gives it.
    outcome = plan_people(rt, {account_revoked: (True, False)}, {}, rt.store.index_of([account_revoked]), env.now,
                          origin="test", dry_run=True)
    assert not [op for op in outcome.operations if op.connector == "crm"]
    env.reconcile()
    assert not {f"p{e[1:]}@example.com" for e in rule_revoked} & tickets.groups()["All Staff"]
    assert reviews.unexplained(env.runtime(), env.now) == []

    # Evidence: every item with its decision, tied to the audit chain, and the chain verifies.
    code, out, err = env.cli("review", "export", str(cid), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["items"]) == len(items) and all(r["decision"] for r in doc["items"])
    code, out_csv, _ = env.cli("review", "export", str(cid), "--format", "csv")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out_csv)))) == len(items)
    code, trail, _ = env.cli("audit", "export")
    assert code == 0
    (env.tmp / "trail.jsonl").write_text(trail, encoding="utf-8")
    code, out, err = env.cli("audit", "verify", str(env.tmp / "trail.jsonl"))
    assert code == 0 and "audit trail intact" in out, err
    chain = {r["seq"]: r for r in map(json.loads, trail.splitlines()) if "seq" in r}
    for row in doc["items"]:
        rec = chain[row["audit_seq"]]
        assert rec["hash"] == row["audit_hash"] and rec["kind"] == "review_decision"
        assert rec["data"]["item"] == row["item"] and rec["data"]["decision"] == row["decision"]
        assert rec["subject"] == (row["employee_id"] or None)
    revoked_rows = [r for r in doc["items"] if r["decision"] == "revoke"]
    assert len(revoked_rows) == len(revoke) and all(r["state"] == "revoked" for r in revoked_rows)
    assert time.monotonic() - started < 180


def reviews_expected(row: dict[str, str]) -> set[tuple[str, str]]:
    """The rules of this file, written again: (connector, grant) a person holds."""
    out = {(a, "group:All Staff") for a in APPS}
    if row["department"] == "Engineering":
        out |= {("wiki", "group:Engineering"), ("tickets", "group:Engineering")}
    if row["department"] == "Sales":
        out.add(("crm", "group:Sales"))
    return out


@pytest.mark.parametrize("env", [{"people": 30, "catalogue": {"tickets": {"Engineering": {"managed": False}}}}],
                         indirect=True)
def test_unmanaged_group_jml_knows_survives_reconcile_until_a_manager_revokes(env: Env) -> None:
    """tickets' Engineering group is one jml grants (a rule does, so reconcile knew it) but the
    catalogue says `managed: false`: a member added in the app stays through reconcile, is listed
    as unexplained, and goes only when the person's manager revokes it."""
    env.sync()
    wiki, tickets = env.servers["wiki"], env.servers["tickets"]
    sales = "p0001@example.com"  # Sales: no rule gives them Engineering anywhere
    wiki.add_members("Engineering", [sales])
    tickets.add_members("Engineering", [sales])
    # Someone gives the long-gone leaver an account by hand: an HR person's account jml never made.
    tickets.add_user("p9999@example.com", external_id="e9999")
    env.reconcile()
    env.reconcile()  # twice: the second sees the repaired state and still leaves tickets alone
    assert sales not in wiki.groups()["Engineering"], "managed: put back to what the rules say"
    assert sales in tickets.groups()["Engineering"], "unmanaged: never removed without a review decision"
    rt = env.runtime()
    assert sorted((u["connector"], u["employee_id"], u["entitlement"]) for u in reviews.unexplained(rt, env.now)) == [
        ("tickets", "e0001", "group:Engineering"), ("tickets", "e9999", ACCOUNT)]

    code, out, err = env.cli("review", "start", "--by", "manager", "--connector", "tickets")
    assert code == 0, err
    cid = int(out.split()[1])
    items = rt.store.reviews.items(cid)
    assert {it.holding.connector for it in items} == {"tickets"}
    item = next(it for it in items if it.holding.employee_id == "e0001" and it.holding.entitlement ==
                "group:Engineering")
    assert item.reviewer == "p0000@example.com" and item.why.kind == "none" and item.holding.held_by == "app"
    assert next(it for it in items if it.holding.employee_id == "e0000").reviewer == SECURITY  # no manager
    gone = next(it for it in items if it.holding.employee_id == "e9999")
    assert (gone.holding.entitlement, gone.why.kind, gone.reviewer) == (ACCOUNT, "none", "p0010@example.com")
    # Their managers revoke them; the read-back from the app proves them gone.
    done = reviews.decide(rt, cid, [item.id], "revoke", reviews.Decider("manager p0000", "p0000@example.com"),
                          reason="not an engineer", now=env.now)
    assert done.decided == [item.id] and done.plan_id and not done.held
    manual = reviews.decide(rt, cid, [gone.id], "revoke", reviews.Decider("manager p0010", "p0010@example.com"),
                            reason="left in 2020", now=env.now)
    assert manual.decided == [gone.id] and manual.plan_id and not manual.held

    async def push() -> tuple[int, int]:
        await commands.work(rt, None, timeout=60)
        await rt.open_connectors()
        try:
            return await reviews.verify(rt, env.now, cid)
        finally:
            await rt.close()

    assert asyncio.run(push()) == (2, 0)
    assert sales not in tickets.groups()["Engineering"]
    assert "p9999@example.com" not in tickets.users()
    env.reconcile()
    assert sales not in tickets.groups()["Engineering"] and reviews.unexplained(env.runtime(), env.now) == []
    code, out, _ = env.cli("review", "show", str(cid), "--json")
    shown = json.loads(out)
    assert code == 0 and [i["state"] for i in shown["items"] if i["item"] == item.id] == ["revoked"]
