"""Any SCIM 2.0 app (issue 13): three HR days through the whole pipeline against every peer.

Peers: scim2-server, SCIMMY on express, Better Auth's SCIM plugin, django-scim2-server
(tests/scim_peers), and scim2-server behind each quirk of tests/vendor_peers/dialects.py.
Every target is run with the default `type: scim` config, nothing tuned per server. After
each day the server must hold exactly what the export and the rules call for (read on the
server's side, not through jml); a re-plan is empty; no dead letters; no duplicate accounts.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from jml import config as config_mod
from jml.commands import work
from jml.runtime import Runtime
from jml.store.outbox import Outbox
from jml.sync import plan_cycle
from tests.peers import ScimPeer
from tests.scim_peers import ALL_PEERS
from tests.vendor_peers.dialects import QUIRKS, DialectProxy

BERLIN = ZoneInfo("Europe/Berlin")
TOKEN_ENV = "JML_INTEROP_TOKEN"
RULES = [
    {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"app": ["All Staff"]}},
    {"name": "engineering", "when": {"department": "Engineering"}, "grant": {"app": ["Engineering"]}},
    {"name": "sales", "when": {"department": "Sales"}, "grant": {"app": ["Sales"]}},
]
FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "job_title", "manager_id",
          "employment_type", "status", "hire_date", "termination_date"]


def person(eid: str, first: str, last: str, dept: str = "Engineering", title: str = "Engineer",
           status: str = "Active", hire: str = "2020-01-06", term: str = "", manager: str = "") -> dict[str, str]:
    # As HR systems make them (and the generator does): accents folded, apostrophes kept.
    folded = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode().lower()
    local = "".join(c for c in folded if c.isalnum() or c in ".'")
    return {"employee_id": eid, "first_name": first, "last_name": last, "work_email": f"{local}@example.com",
            "department": dept, "job_title": title, "manager_id": manager, "employment_type": "Employee",
            "status": status, "hire_date": hire, "termination_date": term}


def groups_for(row: dict[str, str]) -> set[str]:
    if row["status"] == "Terminated":
        return set()
    return {"All Staff"} | ({"Engineering"} if row["department"] == "Engineering" else set()) \
        | ({"Sales"} if row["department"] == "Sales" else set())


# ---- the server's side, read with plain HTTP (paged, without trusting filters) --------

class View:
    def __init__(self, peer: ScimPeer) -> None:
        self.peer = peer

    def _get(self, path: str, **params: str) -> Any:
        url = self.peer.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, headers={**self.peer.headers, "Accept": "application/scim+json"})
        with urllib.request.urlopen(req, timeout=15) as r:
            return json.loads(r.read())

    def listing(self, kind: str) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        start = 1
        while True:
            try:
                body = self._get(kind, startIndex=str(start), count="100")
            except urllib.error.HTTPError:
                body = self._get(kind, startIndex=str(start))
            page = body.get("Resources") or []
            new = [r for r in page if r["id"] not in out]
            out.update({r["id"]: r for r in new})
            start += len(page)
            if not new or start > int(body.get("totalResults") or 0):
                return list(out.values())

    def users(self) -> dict[str, dict[str, Any]]:
        users = self.listing("Users")
        names = [u["userName"].casefold() for u in users]
        assert len(names) == len(set(names)), f"duplicate accounts: {sorted(names)}"
        return {u["userName"].casefold(): u for u in users}

    def groups(self) -> dict[str, set[str]]:
        """displayName -> member userNames (members listed by id or by userName)."""
        by_id = {u["id"]: u["userName"].casefold() for u in self.listing("Users")}
        out: dict[str, set[str]] = {}
        for g in self.listing("Groups"):
            full = g if "members" in g else self._get(f"Groups/{g['id']}")
            assert g["displayName"] not in out, f"twin groups {g['displayName']!r}"
            out[g["displayName"]] = {by_id.get(m["value"], str(m["value"]).casefold())
                                     for m in full.get("members") or []}
        return out

    def empty(self) -> None:
        for kind in ("Groups", "Users"):
            for r in self.listing(kind):
                req = urllib.request.Request(f"{self.peer.url}{kind}/{r['id']}", method="DELETE",
                                             headers=self.peer.headers)
                urllib.request.urlopen(req, timeout=10).close()

    def create_user(self, body: dict[str, Any]) -> None:
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], **body}
        req = urllib.request.Request(self.peer.url + "Users", data=json.dumps(body).encode(), method="POST",
                                     headers={**self.peer.headers, "Content-Type": "application/scim+json"})
        with urllib.request.urlopen(req, timeout=15) as r:
            assert r.status in (200, 201)


# ---- jml, as configured by a user ------------------------------------------------------

class Jml:
    def __init__(self, tmp: Path, url: str, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(TOKEN_ENV, token)
        self.export = tmp / "hr.csv"
        self.now = dt.datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)
        doc = {
            "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
            "sources": {"hris": {"location": str(self.export), "format": "csv", "profile": "generic",
                                 "timezone": "Europe/Berlin"}},
            "guard": {"max_deprovision_percent": 50, "max_deprovision_count": 100, "max_shrink_percent": 50},
            "policy": {"username": "{work_email}", "rules": RULES},
            "connectors": {"app": {"type": "scim", "url": url, "token_env": TOKEN_ENV, "max_attempts": 3,
                                   "retry_budget": "20s"}},
        }
        path = tmp / "jml.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.cfg = config_mod.load(path)

    def day(self, rows: list[dict[str, str]], when: str) -> None:
        self.now = dt.datetime.fromisoformat(f"{when}T09:00").replace(tzinfo=BERLIN)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        self.export.write_text(buf.getvalue(), encoding="utf-8")

        async def run() -> None:
            rt = Runtime(self.cfg, clock=lambda: self.now)
            try:
                outcome = await plan_cycle(rt)
                assert not outcome.held, outcome
                await work(rt, outcome.plan_id, timeout=120)
            finally:
                await rt.close()
                rt.store.close()
        asyncio.run(run())
        dead = self.dead_letters()
        assert not dead, f"dead letters on {when}:\n" + "\n".join(dead)

    def replan(self) -> int:
        async def run() -> int:
            rt = Runtime(self.cfg, clock=lambda: self.now)
            try:
                outcome = await plan_cycle(rt, dry_run=True)
                return len(outcome.operations)
            finally:
                await rt.close()
                rt.store.close()
        return asyncio.run(run())

    def dead_letters(self) -> list[str]:
        rt = Runtime(self.cfg, clock=lambda: self.now)
        try:
            return [f"{q.op.action.value} {q.op.employee_id}: {q.last_error}" for q in Outbox(rt.store).ops(["dead"])]
        finally:
            rt.store.close()


def assert_converged(view: View, rows: list[dict[str, str]], with_accounts: set[str]) -> None:
    users = view.users()
    groups = view.groups()
    want = {r["work_email"].casefold(): r for r in rows if r["employee_id"] in with_accounts}
    assert set(users) == set(want), "accounts differ from the export"
    for name, r in want.items():
        active = r["status"] != "Terminated"
        assert bool(users[name].get("active", True)) is active, f"{name} active should be {active}"
        held = {g for g, members in groups.items() if name in members}
        assert held == groups_for(r), f"{name} groups {held} != {groups_for(r)}"
        title = users[name].get("title")
        assert title in (None, r["job_title"]), f"{name} title {title!r}"


def three_days(view: View, jml: Jml) -> None:
    staff = [person(f"E{i:03d}", f"Ann{i}", "Lee", "Engineering" if i % 2 else "Sales", manager="E001")
             for i in range(1, 13)]
    staff += [person("E020", "Seán", "O'Brien"), person("E021", 'Jo "JJ"', "Smith", "Sales"),
              person("E022", "Zoë", "D'Angelo\\Back")]
    # An account made by hand before jml: adopted, not duplicated.
    view.create_user({"userName": staff[2]["work_email"], "name": {"givenName": "Ann3", "familyName": "Lee",
                                                                   "formatted": "Ann3 Lee"},
                      "displayName": "Ann3 Lee", "emails": [{"value": staff[2]["work_email"]}], "active": True})
    everyone = {r["employee_id"] for r in staff}
    jml.day(staff, "2026-11-23")
    assert_converged(view, staff, everyone)

    # Day two: movers (title, department and so group, manager), leavers, a joiner.
    staff[0] = {**staff[0], "job_title": "Staff Engineer", "manager_id": "E004"}
    staff[1] = {**staff[1], "department": "Engineering", "job_title": "Engineer II"}
    staff[3] = {**staff[3], "status": "Terminated", "termination_date": "2026-11-23"}
    staff[13] = {**staff[13], "status": "Terminated", "termination_date": "2026-11-24"}
    staff.append(person("E030", "New", "Joiner", "Sales", hire="2026-11-24"))
    everyone.add("E030")
    jml.day(staff, "2026-11-24")
    assert_converged(view, staff, everyone)

    # Day three: a rehire (same account back), another mover, another leaver.
    staff[3] = {**staff[3], "status": "Active", "hire_date": "2026-11-25", "termination_date": ""}
    staff[4] = {**staff[4], "department": "Sales", "job_title": "Account Executive"}
    staff[5] = {**staff[5], "status": "Terminated", "termination_date": "2026-11-25"}
    jml.day(staff, "2026-11-25")
    assert_converged(view, staff, everyone)
    assert jml.dead_letters() == []
    assert jml.replan() == 0, "a re-plan after convergence must be empty"


@pytest.mark.parametrize("peer_name", sorted(ALL_PEERS))
def test_three_hr_days_on_every_peer(peer_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ALL_PEERS[peer_name]() as peer:
        three_days(View(peer), Jml(tmp_path, peer.url, peer.token, monkeypatch))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScimPeer]:
    with ALL_PEERS["scim2-server"]() as peer:
        yield peer


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_three_hr_days_behind_each_quirk(quirk: str, upstream: ScimPeer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    view = View(upstream)
    view.empty()  # the module's server
    with DialectProxy(upstream.url.removesuffix("/v2/"), quirk) as proxy:
        three_days(view, Jml(tmp_path, proxy.url + "v2/", upstream.token, monkeypatch))


def test_dialect_is_remembered_and_shown_by_check(upstream: ScimPeer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """What one run learns is in the store: the next process starts from it (no request
    repeats the lesson) and `jml check` shows it as a warning, not a failure."""
    from jml import cli

    view = View(upstream)
    view.empty()  # the module's server
    with DialectProxy(upstream.url.removesuffix("/v2/"), "filter_ignored") as proxy:
        jml = Jml(tmp_path, proxy.url + "v2/", upstream.token, monkeypatch)
        # An ignored filter shows only when the server holds someone else: Ann is there before
        # Bo's joiner search (one day each), so the lesson does not hang on task timing.
        jml.day([person("E001", "Ann", "Lee")], "2026-11-22")
        jml.day([person("E001", "Ann", "Lee"), person("E002", "Bo", "Kim", "Sales")], "2026-11-23")
        rt = Runtime(jml.cfg)
        try:
            remembered = rt.connector("app").dialect  # type: ignore[attr-defined]
            assert remembered.get("filter:Users:userName") is False or remembered.get("filter:Users:externalId") \
                is False
        finally:
            rt.store.close()
        capsys.readouterr()
        code = cli.main(["--config", str(tmp_path / "jml.yaml"), "check", "--json"])
        report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    app = report["connectors"]["app"]
    assert app["cannot"] == [] and any("paged index" in w for w in app["warnings"]), app
    assert {r["fact"] for r in app["dialect"]} >= {"patch", "etag", "filter"}
    # The status page and `jml status` say it too (one snapshot feeds both).
    code = cli.main(["--config", str(tmp_path / "jml.yaml"), "status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert any("paged index" in w for w in status["connectors"]["app"]["dialect_warnings"]), status


class RefuseUserWrites(DialectProxy):
    """An app that refuses every change to an existing user (403): not something a dialect
    can work around; the person's other steps must still go through."""

    async def check(self, request: Any, body: Any) -> Any:
        from aiohttp import web

        if request.method in ("PATCH", "PUT") and "/Users/" in request.path:
            return web.json_response({"detail": "users are read-only for this token"}, status=403)
        return await super().check(request, body)


def test_a_failed_update_blocks_none_of_the_persons_other_steps(upstream: ScimPeer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    view = View(upstream)
    view.empty()  # the module's server
    rows = [person("E001", "Ann", "Lee", "Sales")]
    with RefuseUserWrites(upstream.url.removesuffix("/v2/"), "page_cap") as proxy:
        jml = Jml(tmp_path, proxy.url + "v2/", upstream.token, monkeypatch)
        jml.day(rows, "2026-11-23")
        rows[0] = {**rows[0], "department": "Engineering", "job_title": "Engineer II"}  # a mover
        with pytest.raises(AssertionError, match="update E001"):
            jml.day(rows, "2026-11-24")
    dead = jml.dead_letters()
    assert len(dead) == 1 and dead[0].startswith("update E001"), dead  # the update alone
    groups = view.groups()
    assert "ann.lee@example.com" in groups["Engineering"] and "ann.lee@example.com" not in groups["Sales"]


@pytest.mark.parametrize("peer_name", sorted(ALL_PEERS))
async def test_delete_on_every_peer_leaves_no_access(peer_name: str) -> None:
    """A planner's delete (after delete_after): gone, or (apps that deactivate on DELETE,
    like django-scim2-server) inactive and said so in the dialect; never still active."""
    from connectors.base import ConnectorContext
    from connectors.scim import ScimConnector
    from jml.config import ScimConnectorConfig
    from jml.model import Action as A
    from jml.model import Operation, Priority

    with ALL_PEERS[peer_name]() as peer:
        cfg = ScimConnectorConfig(type="scim", url=peer.url, token_env="X")
        conn = ScimConnector("app", cfg, ConnectorContext("app", lambda _k: peer.token))
        await conn.open()
        try:
            made = await conn.apply(Operation("app", A.CREATE, "E9", {"username": "del.me@example.com", "active": True,
                                                                      "attributes": {"given_name": "Del",
                                                                                     "family_name": "Me"}},
                                              Priority.NORMAL), None)
            assert made.remote_id
            await conn.apply(Operation("app", A.DELETE, "E9", {"username": "del.me@example.com"}, Priority.LEAVER),
                             None)
            after = await conn.read_account("E9", "del.me@example.com", made.remote_id)
        finally:
            await conn.close()
    if after is None:
        assert conn.dialect.get("delete_deactivates") is None
    else:
        assert after.active is False and conn.dialect.get("delete_deactivates") is True
    assert conn.dialect.get("cannot") is None
