"""`jml revert` (issue 18) against a real scim2-server and the GitHub org fake: an offboard of
ten people made by mistake (HR never terminated them) is reverted; their previous access comes
back in every app where that is possible, the preview says what could not (GitHub org: an
invitation, not the membership), a person HR has terminated since is refused, and the next plan
is empty. The apps' state is read from the apps themselves, not through jml."""

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

import pytest

from jml import revert as revert_mod
from jml.approvals import Approver, Refused, approve
from jml.config import from_dict
from jml.event_plan import plan_event
from jml.model import Action, Override, OverrideKind
from jml.push import work
from jml.runtime import Runtime
from jml.sync import plan_cycle, plan_people
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.github import GithubFake
from tests.vendor_peers.openapi_validator import description

FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "status", "hire_date",
          "termination_date", "github_username"]
PEOPLE = [f"E{i:02d}" for i in range(1, 13)]  # twelve; E01-E10 are offboarded by mistake
MISTAKE = PEOPLE[:10]
TOKEN_ENV, GH_ENV = "JML_TEST_REVERT_SCIM", "JML_TEST_REVERT_GH"


def rows(terminated: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).date().isoformat()
    out = []
    for i, eid in enumerate(PEOPLE):
        term = eid in terminated
        out.append({"employee_id": eid, "first_name": f"P{eid}", "last_name": "Lee",
                    "work_email": f"{eid.lower()}@acme.example", "department": "Engineering" if i % 2 else "Sales",
                    "status": "Terminated" if term else "Active", "hire_date": "2020-01-06",
                    "termination_date": yesterday if term else "", "github_username": f"octo-{eid.lower()}"})
    return out


class Apps:
    """What the apps hold, read from them directly."""

    def __init__(self, peer: ScimPeer, github: GithubFake) -> None:
        self.peer, self.github = peer, github

    def _get(self, path: str) -> Any:
        req = urllib.request.Request(self.peer.url + path, headers=self.peer.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def scim(self) -> dict[str, tuple[bool, frozenset[str]]]:
        """userName -> (active, groups)."""
        users = {u["id"]: u for u in self._get("Users?count=1000").get("Resources", [])}
        groups: dict[str, set[str]] = {u["userName"]: set() for u in users.values()}
        for g in self._get("Groups?count=1000").get("Resources", []):
            for m in g.get("members") or []:
                if m["value"] in users:
                    groups[users[m["value"]]["userName"]].add(g["displayName"])
        return {u["userName"]: (bool(u.get("active", True)), frozenset(groups[u["userName"]]))
                for u in users.values()}

    def github_org(self) -> dict[str, str]:
        """login -> membership state (active | pending), the bot owner left out."""
        return {m.login: m.state for k, m in self.github.members.items() if k != self.github.owner.lower()}

    def github_teams(self) -> dict[str, set[str]]:
        """login -> team slugs (any state)."""
        out: dict[str, set[str]] = {}
        for team in self.github.teams.values():
            for login in team.members:
                out.setdefault(login, set()).add(team.slug)
        return out


class Env:
    def __init__(self, tmp: Path, peer: ScimPeer, github: GithubFake, db_url: str) -> None:
        self.export = tmp / "hr.csv"
        self.apps = Apps(peer, github)
        self.rt = Runtime(from_dict({
            "state": {"url": db_url},
            "sources": {"hris": {"location": str(self.export), "format": "csv", "timezone": "UTC"}},
            "guard": {"max_deprovision_percent": 50, "max_deprovision_count": 100},
            "policy": {"username": "{work_email}", "rules": [
                {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"scim": ["All Staff"]}},
                {"name": "engineering", "when": {"department": "Engineering"},
                 "grant": {"scim": ["Engineering"], "github": ["team:eng"]}}]},
            "connectors": {
                "scim": {"type": "scim", "url": peer.url, "token_env": TOKEN_ENV},
                "github": {"type": "github", "mode": "org", "org": github.org, "api_url": github.url,
                           "token_env": GH_ENV, "rate_limit": 100, "burst": 100}},
        }, tmp))

    def write(self, terminated: frozenset[str] = frozenset()) -> None:
        self.write_rows(rows(terminated))

    def write_rows(self, data: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(data)
        self.export.write_text(buf.getvalue(), encoding="utf-8")

    async def sync(self) -> None:
        outcome = await plan_cycle(self.rt)
        assert not outcome.held, outcome.reasons
        await work(self.rt, outcome.plan_id, 60)

    def offboard_by_mistake(self) -> str:
        """HR's "offboard now" for ten people at once (the override `jml offboard` sets, one plan)."""
        now = self.rt.clock()
        self.rt.store.set_overrides({e: Override(OverrideKind.OFFBOARD, now, "wrong list", "hr@acme") for e in MISTAKE},
                                    now)
        (outcome,) = plan_event(self.rt, {e: False for e in MISTAKE}, {}, now, origin="offboard", order=MISTAKE)
        assert outcome.plan_id is not None and not outcome.held
        return outcome.plan_id

    def replan_everyone(self) -> list[Any]:
        """What a plan of every person would do now (a full re-plan, not only the changed ones)."""
        out = plan_people(self.rt, {e: (True, False) for e in PEOPLE}, {}, self.rt.store.index_of(PEOPLE),
                          self.rt.clock(), origin="test", dry_run=True)
        return out.operations


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[ScimPeer, GithubFake]]:
    description()  # GitHub's REST description: every request to the fake is validated against it
    with scim2_server() as peer, GithubFake() as github:
        yield peer, github


@pytest.fixture
def env(tmp_path: Path, db_url: str, peers: tuple[ScimPeer, GithubFake],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    peer, github = peers
    _empty(peer, github)
    monkeypatch.setenv(TOKEN_ENV, peer.token)
    monkeypatch.setenv(GH_ENV, github.token)
    e = Env(tmp_path, peer, github, db_url)
    github.auto_accept = True  # joiners accept their invitation at once
    e.write()
    asyncio.run(e.sync())
    try:
        yield e
    finally:
        e.rt.store.close()
        assert not github.invalid, "requests GitHub's REST description does not allow:\n" + "\n".join(github.invalid)


def _empty(peer: ScimPeer, github: GithubFake) -> None:
    for kind in ("Groups", "Users"):
        req = urllib.request.Request(f"{peer.url}{kind}?count=1000", headers=peer.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            for res in json.loads(r.read()).get("Resources", []):
                d = urllib.request.Request(f"{peer.url}{kind}/{res['id']}", method="DELETE", headers=peer.headers)
                with urllib.request.urlopen(d, timeout=10):
                    pass
    owner = github.owner.lower()
    github.members = {owner: github.members[owner]}
    github.teams.clear()


def email(eid: str) -> str:
    return f"{eid.lower()}@acme.example"


def login(eid: str) -> str:
    return f"octo-{eid.lower()}"


def engineer(eid: str) -> bool:
    return PEOPLE.index(eid) % 2 == 1


def test_revert_of_a_mistaken_offboard_of_ten_restores_access_says_what_it_could_not_and_leaves_nothing_to_plan(
        env: Env) -> None:
    apps = env.apps
    before_scim, before_gh, before_teams = apps.scim(), apps.github_org(), apps.github_teams()
    assert all(before_scim[email(e)][0] for e in PEOPLE) and set(before_gh.values()) == {"active"}
    assert {login(e) for e in PEOPLE if engineer(e)} == {k for k, v in before_teams.items() if "eng" in v}

    bad = env.offboard_by_mistake()
    asyncio.run(work(env.rt, bad, 60))
    gone = apps.scim()
    assert not any(gone[email(e)][0] or gone[email(e)][1] for e in MISTAKE)  # inactive, no groups
    assert all(login(e) not in apps.github_org() for e in MISTAKE)
    assert all(gone[email(e)] == before_scim[email(e)] for e in PEOPLE[10:])

    # Since then HR has terminated E10 for real (the export says so): the revert must not bring E10 back.
    env.write(frozenset({"E10"}))
    asyncio.run(env.sync())
    env.apps.github.auto_accept = False  # a re-invited person has not accepted yet

    preview = revert_mod.revert(env.rt, bad, actor="cli user=ops", dry_run=True)
    assert preview.plan_id is None and env.rt.outbox.plan(bad) is not None
    assert set(preview.refused) == {"E10"} and "leaver" in preview.refused["E10"]
    restored = {(o.connector, o.action, o.employee_id) for o in preview.operations}
    for e in MISTAKE[:9]:  # GitHub: engineers only (the rules)
        assert ("scim", Action.REACTIVATE, e) in restored and (("github", Action.REACTIVATE, e) in restored) \
            is engineer(e)
    assert not any(o.employee_id == "E10" for o in preview.operations)
    assert {n.employee_id for n in preview.partly if n.connector == "github"} == {e for e in MISTAKE[:9] if engineer(e)}
    assert all("invitation" in n.reason for n in preview.partly)
    assert preview.restored_people == MISTAKE[:9]
    assert preview.held  # nine of twelve managed accounts get access back at once: four eyes
    text = "\n".join(preview.lines())
    assert "refused: E10" in text and "github/E02 deactivate: can only be re-invited" in text

    out = revert_mod.revert(env.rt, bad, actor="cli user=ops", dry_run=False)
    assert out.held and out.plan_id is not None
    info = env.rt.outbox.plan(out.plan_id)
    assert info is not None and info.state == "held" and info.origin == f"revert:{bad}"
    # Held: nothing changed yet, the people's overrides included.
    assert env.rt.store.load_states(["E01"])["E01"].override is not None
    with pytest.raises(revert_mod.RevertRefused, match="already reverted"):
        revert_mod.revert(env.rt, bad, actor="cli user=ops", dry_run=True)

    env.rt.store.identities.open_request(out.plan_id, "plan", requested_by="cli:ops", requester="cli user=ops",
                                         payload=None, now=env.rt.clock())
    with pytest.raises(Refused, match="requested by you"):
        approve(env.rt, out.plan_id, Approver("cli:ops", "cli user=ops"))
    decision = approve(env.rt, out.plan_id, Approver("person:boss", "boss@acme"))
    assert decision.done
    asyncio.run(work(env.rt, out.plan_id, 60))
    assert env.rt.outbox.plan_state_counts(out.plan_id) == {"done": len(out.operations)}

    after = apps.scim()
    for e in MISTAKE[:9]:
        assert after[email(e)] == before_scim[email(e)], e  # active again, with the same groups
    assert after[email("E10")] == (False, frozenset())
    org, teams = apps.github_org(), apps.github_teams()
    assert {login(e): org.get(login(e)) for e in MISTAKE[:9] if engineer(e)} == {
        login(e): "pending" for e in MISTAKE[:9] if engineer(e)}  # an invitation, not the membership
    assert login("E10") not in org
    assert {k for k, v in teams.items() if "eng" in v} == {login(e) for e in PEOPLE if engineer(e) and e != "E10"}

    # A grant put back names the rule that grants it (the access report's "which rule").
    assert {g["rule"] for g in env.rt.store.grant_details(MISTAKE[:9])} == {"everyone", "engineering"}
    states = env.rt.store.load_states(PEOPLE)
    assert [e for e in MISTAKE[:9] if states[e].override is not None] == []
    assert states["E10"].override is not None  # refused: left as it was
    assert env.replan_everyone() == []
    assert asyncio.run(plan_cycle(env.rt, dry_run=True)).operations == []

    trail = [r for r in env.rt.audit.records() if r["kind"] == "revert"]
    assert trail and trail[-1]["actor"] == "cli user=ops"
    assert trail[-1]["data"]["reverts"] == bad and trail[-1]["data"]["refused"] == {"E10": preview.refused["E10"]}

    # Reverting the revert is a new plan: it deprovisions the nine again (and puts the offboards back).
    again = revert_mod.revert(env.rt, out.plan_id, actor="cli user=ops", dry_run=True)
    assert {(o.connector, o.action) for o in again.operations} >= {("scim", Action.DEACTIVATE)}
    assert again.refused == {}


def test_a_plan_still_held_or_unknown_is_not_reverted(env: Env) -> None:
    with pytest.raises(revert_mod.RevertRefused, match="no plan") as e:
        revert_mod.revert(env.rt, "nope", actor="x")
    assert e.value.not_found
    env.write(frozenset(PEOPLE))  # everyone terminated: the guard holds it
    outcome = asyncio.run(plan_cycle(env.rt))
    assert outcome.held and outcome.plan_id
    with pytest.raises(revert_mod.RevertRefused, match="held: nothing of it was applied"):
        revert_mod.revert(env.rt, outcome.plan_id, actor="x")


def test_revert_of_an_export_plan_puts_back_the_hr_data_until_the_next_export_brings_it_back(env: Env) -> None:
    """A mover from an HR export (E01 Sales -> Engineering) reverted: the groups and the GitHub
    invitation go, jml's stored HR record is Sales again, and the preview says the next export
    brings the change back unless HR fixes the data — which it then does."""
    moved = rows()
    moved[0]["department"] = "Engineering"
    env.write_rows(moved)
    outcome = asyncio.run(plan_cycle(env.rt))
    assert outcome.plan_id is not None and not outcome.held
    asyncio.run(work(env.rt, outcome.plan_id, 60))
    assert env.apps.scim()[email("E01")][1] == {"All Staff", "Engineering"} and login("E01") in env.apps.github_org()

    preview = revert_mod.revert(env.rt, outcome.plan_id, actor="cli user=ops")
    assert any("next export" in w and "unless HR fixes the data" in w for w in preview.warnings)
    assert not preview.held and preview.refused == {} and preview.restored_people == ["E01"]
    out = revert_mod.revert(env.rt, outcome.plan_id, actor="cli user=ops", dry_run=False)
    assert out.plan_id is not None
    asyncio.run(work(env.rt, out.plan_id, 60))
    assert env.apps.scim()[email("E01")] == (True, frozenset({"All Staff"}))
    assert login("E01") not in env.apps.github_org()
    person = env.rt.store.load_states(["E01"])["E01"].person
    assert person is not None and person.department == "Sales"
    assert env.replan_everyone() == []
    assert asyncio.run(plan_cycle(env.rt, dry_run=True)).operations == []  # the same export: nothing

    moved[11]["last_name"] = "Other"  # the next export (HR did not fix E01): the mover comes back
    env.write_rows(moved)
    again = asyncio.run(plan_cycle(env.rt, dry_run=True))
    assert {(o.connector, o.action, o.employee_id) for o in again.operations} >= {
        ("scim", Action.ADD_MEMBER, "E01"), ("github", Action.REACTIVATE, "E01")}
