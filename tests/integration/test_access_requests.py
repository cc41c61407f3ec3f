"""Access requests end to end against a real scim2-server: request -> two approvals -> granted in the
app -> kept by later plans -> expiry -> removed, read back and verified (the removal's clock stopped),
with audit rows naming each person; the requester and the grantee cannot approve; break-glass JIT;
revoke; the catalogue lists the app's groups beside config and rules."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from jml import access, catalogue, metrics
from jml import config as config_mod
from jml.access import Refused, Who
from jml.errors import BadRequest
from jml.push import work
from jml.runtime import Runtime
from jml.sync import plan_cycle
from tests.peers import ScimPeer

TOKEN_ENV = "JML_TEST_ACCESS_SCIM_TOKEN"
T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)

PEOPLE = [  # employee_id, first, manager_id
    ("E1", "Ana", "E2"), ("E2", "Mia", ""), ("E3", "Bob", ""), ("E4", "Ops", ""), ("E5", "Cy", ""),
]


def _email(first: str) -> str:
    return f"{first.lower()}@example.com"


def _who(eid: str, *rights: str, roles: tuple[str, ...] = ()) -> Who:
    first = {e: f for e, f, _ in PEOPLE}[eid]
    return Who(f"person:{first.lower()}", f"person sub={first.lower()} email={_email(first)}", _email(first), eid,
               frozenset(rights), frozenset(roles))


class Harness:
    def __init__(self, tmp: Path, peer: ScimPeer, monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
        self.peer = peer
        self.now = T0
        monkeypatch.setenv(TOKEN_ENV, peer.token)
        export = tmp / "hr.csv"
        with export.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["employee_id", "first_name", "last_name", "work_email", "department", "manager_id", "status",
                        "hire_date"])
            for eid, first, mgr in PEOPLE:
                w.writerow([eid, first, "Smith", _email(first), "Engineering", mgr, "Active", "2020-01-06"])
        doc: dict[str, Any] = {
            "state": {"url": db_url},
            "sources": {"hris": {"location": str(export), "format": "csv"}},
            "policy": {"rules": [{"name": "everyone", "when": {"status": "Active"}, "grant": {"app": ["All Staff"]}}]},
            "connectors": {"app": {"type": "scim", "url": peer.url, "token_env": TOKEN_ENV, "max_attempts": 2,
                                   "retry_budget": "5s", "sla": "10m"}},
            "access": {"default_duration": "30d",
                       "catalogue": {"app": {"group:Prod Admins": {"owner": _email("Bob"), "risk": "high",
                                                                   "max_duration": "7d"},
                                             "Wiki": {"owner": _email("Bob"), "risk": "low"},
                                             "Secrets": {"requestable": False}}},
                       "jit": {"max_duration": "8h", "roles": ["operator"]}},
        }
        path = tmp / "jml.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.rt = Runtime(config_mod.load(path), clock=lambda: self.now)

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def sync(self) -> None:
        async def go() -> None:
            outcome = await plan_cycle(self.rt)
            assert not outcome.held
            await work(self.rt, outcome.plan_id, timeout=60)
            await self.rt.close()
        self.run(go())

    def push(self, plan_ids: list[str]) -> None:
        async def go() -> None:
            for pid in plan_ids:
                await work(self.rt, pid, timeout=60)
            await self.rt.close()
        self.run(go())

    def verify(self) -> int:
        async def go() -> int:
            try:
                return await access.verify_removals(self.rt, self.now)
            finally:
                await self.rt.close()
        return int(self.run(go()))

    def groups_of(self, first: str) -> set[str]:
        def get(path: str) -> Any:
            req = urllib.request.Request(self.peer.url + path, headers=self.peer.headers)
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        uid = {u["userName"]: u["id"] for u in get("Users?count=100").get("Resources", [])}[_email(first)]
        return {g["displayName"] for g in get("Groups?count=100").get("Resources", [])
                if any(m["value"] == uid for m in g.get("members") or [])}

    def audit(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rt.audit.records() if r["kind"] == kind]


@pytest.fixture
def h(tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Any:
    """On SQLite and PostgreSQL (the state moves are compare-and-set on both)."""
    harness = Harness(tmp_path, scim_peer, monkeypatch, db_url)
    harness.sync()
    yield harness
    harness.rt.store.close()


def test_request_two_approvals_granted_kept_expired_removed_verified(h: Harness) -> None:
    rt = h.rt
    assert h.groups_of("Ana") == {"All Staff"}
    req = access.request(rt, _who("E1"), "E1", "app", "group:Prod Admins", reason="incident 42", duration=8 * H)
    assert (req.state, req.required, req.requester) == ("pending", 2, "person sub=ana email=ana@example.com")
    # Never the requester, never the person who gets the access, whatever rights they hold.
    with pytest.raises(Refused, match="you requested it"):
        access.approve(rt, req.id, _who("E1", "approve"))
    # Mia is Ana's manager in HR: her vote counts, once.
    first = access.approve(rt, req.id, _who("E2"))
    assert "1 of 2" in first.message and first.request.state == "pending" and first.plan_ids == []
    with pytest.raises(Refused, match="already approved"):
        access.approve(rt, req.id, _who("E2"))
    # Cy is nobody to this request.
    with pytest.raises(Refused, match="high-risk"):
        access.approve(rt, req.id, _who("E5"))
    h.now = T0 + 5 * dt.timedelta(minutes=1)
    done = access.approve(rt, req.id, _who("E3"))  # Bob owns the group
    assert done.request.state == "active" and done.request.expires_at == h.now + 8 * H
    assert [v.basis for v in done.request.votes] == ["manager", "owner"]
    assert done.plan_ids
    h.push(done.plan_ids)
    assert h.groups_of("Ana") == {"All Staff", "Prod Admins"}  # read from the server itself
    # Every later plan for Ana keeps the grant (it is a value of desired()); a full sync too.
    h.now += H
    assert access.plan_person(rt, "E1", h.now) == []
    h.sync()
    assert h.groups_of("Ana") == {"All Staff", "Prod Admins"}
    # Expiry: the grant ends, the removal is planned, pushed, read back and verified.
    h.now = T0 + 5 * dt.timedelta(minutes=1) + 8 * H
    plans = access.expire_due(rt, h.now)
    assert plans
    ended = rt.store.access.get(req.id)
    assert ended is not None and ended.state == "expired" and ended.removal_deadline == h.now + 10 * dt.timedelta(
        minutes=1)
    assert ended.removal_verified_at is None
    h.push(plans)
    h.now += dt.timedelta(minutes=2)
    before = metrics.access_expiry_seconds.labels("app")._sum.get()  # type: ignore[attr-defined]
    assert h.verify() == 1
    assert h.groups_of("Ana") == {"All Staff"}
    ended = rt.store.access.get(req.id)
    assert ended is not None and ended.removal_verified_at == h.now and not ended.removal_breached
    assert metrics.access_expiry_seconds.labels("app")._sum.get() - before == pytest.approx(120)  # type: ignore[attr-defined]
    assert h.verify() == 0  # stopped: verified once
    # The audit rows name each person.
    assert [r["actor"] for r in h.audit("access_request")] == ["person sub=ana email=ana@example.com"]
    assert [(r["actor"], r["data"]["basis"]) for r in h.audit("access_vote")] == [
        ("person sub=mia email=mia@example.com", "manager"), ("person sub=bob email=bob@example.com", "owner")]
    granted = h.audit("access_granted")
    assert granted[0]["data"]["approvers"] == ["person sub=mia email=mia@example.com",
                                               "person sub=bob email=bob@example.com"]
    assert granted[0]["data"]["requested_by"] == "person sub=ana email=ana@example.com"
    assert [r["subject"] for r in h.audit("access_expired")] == ["E1"]
    assert h.audit("access_removal_verified")[0]["data"]["seconds"] == 120
    assert rt.audit.verify().ok


def test_low_risk_manager_or_owner_alone_and_refusals(h: Harness) -> None:
    rt = h.rt
    # Ana's manager asks for her; the owner approves alone (low risk).
    req = access.request(rt, _who("E2"), "E1", "app", "Wiki", reason="docs", duration=None)
    assert req.grant == "group:Wiki" and req.required == 1 and req.duration == dt.timedelta(days=30)
    with pytest.raises(Refused, match="already requested"):
        access.request(rt, _who("E1"), "E1", "app", "group:Wiki", reason="docs")
    with pytest.raises(Refused, match="the access is for you"):
        access.approve(rt, req.id, _who("E1", "approve"))
    done = access.approve(rt, req.id, _who("E3"))
    assert done.request.state == "active"
    h.push(done.plan_ids)
    assert "Wiki" in h.groups_of("Ana")
    # Cy may not ask for Ana (not self, not her manager, no request right); not requestable; too long.
    with pytest.raises(Refused, match="yourself or your reports"):
        access.request(rt, _who("E5"), "E1", "app", "group:X", reason="r")
    with pytest.raises(Refused, match="not requestable"):
        access.request(rt, _who("E1"), "E1", "app", "Secrets", reason="r")
    # Asked for no duration: the entitlement's maximum when shorter than the default (7d < 30d).
    short = access.request(rt, _who("E1"), "E1", "app", "group:Prod Admins", reason="r")
    assert short.duration == 7 * 24 * H
    assert access.deny(rt, short.id, _who("E1")).request.state == "cancelled"  # the requester withdraws
    with pytest.raises(BadRequest, match=r"duration: .*maximum 7d"):
        access.request(rt, _who("E1"), "E1", "app", "group:Prod Admins", reason="r", duration=8 * 24 * H)
    with pytest.raises(BadRequest, match=r"^connector:"):
        access.request(rt, _who("E1"), "E1", "nowhere", "group:X", reason="r")
    with pytest.raises(BadRequest, match=r"^reason:"):
        access.request(rt, _who("E1"), "E1", "app", "group:X", reason=" ")
    # Deny and revoke: the grant leaves the app at once, its removal verified.
    other = access.request(rt, _who("E1"), "E1", "app", "group:Ops Tools", reason="r")
    with pytest.raises(Refused, match="medium-risk"):  # not configured: medium, the manager is not enough
        access.deny(rt, other.id, _who("E2"), "no")
    assert access.deny(rt, other.id, _who("E5", "approve"), "no").request.state == "denied"
    revoked = access.revoke(rt, req.id, _who("E3"), "done early")
    assert revoked.request.state == "revoked"
    h.push(revoked.plan_ids)
    assert h.verify() == 1 and "Wiki" not in h.groups_of("Ana")
    assert [r["actor"] for r in h.audit("access_revoked")] == ["person sub=bob email=bob@example.com"]


def test_break_glass_jit(h: Harness) -> None:
    rt = h.rt
    with pytest.raises(Refused, match=r"access\.jit\.roles"):
        access.jit(rt, _who("E4", roles=("viewer",)), "app", "group:Prod Admins", duration=2 * H, reason="pager")
    with pytest.raises(BadRequest, match="hours"):
        access.jit(rt, _who("E4", roles=("operator",)), "app", "group:Prod Admins", duration=9 * H, reason="pager")
    before = metrics.access_jit_grants.labels("app")._value.get()  # type: ignore[attr-defined]
    got = access.jit(rt, _who("E4", roles=("operator",)), "app", "group:Prod Admins", duration=2 * H,
                     reason="pager 7")
    assert got.request.kind == "jit" and got.request.state == "active" and got.request.expires_at == T0 + 2 * H
    assert metrics.access_jit_grants.labels("app")._value.get() == before + 1  # type: ignore[attr-defined]
    h.push(got.plan_ids)
    assert "Prod Admins" in h.groups_of("Ops")
    assert h.audit("access_jit")[0]["actor"] == "person sub=ops email=ops@example.com"
    h.now = T0 + 2 * H
    h.push(access.expire_due(rt, h.now))
    assert h.verify() == 1 and "Prod Admins" not in h.groups_of("Ops")


def test_catalogue_lists_the_apps_groups_with_config_and_rules(h: Harness) -> None:
    cat = asyncio.run(catalogue.build(h.rt))
    asyncio.run(h.rt.close())
    by = {i.grant: i for i in cat.items}
    assert cat.errors == {}
    assert by["group:All Staff"].birthright and by["group:All Staff"].managed and by["group:All Staff"].in_app
    assert by["group:Prod Admins"].risk == "high" and by["group:Prod Admins"].owner == "bob@example.com"
    assert by["group:Prod Admins"].max_duration == 7 * 24 * H and not by["group:Prod Admins"].birthright
    assert not by["group:Prod Admins"].in_app  # configured, not created in the app yet
    assert not by["group:Secrets"].requestable
    assert "group:Prod Admins" in catalogue.render(cat)


class _Ctx:
    """What access.job uses of the daemon's ServiceContext: the runtime and the engine's wake-up."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.woken: list[str] = []

    def wake(self, *plan_ids: str) -> None:
        self.woken += plan_ids


def test_the_daemons_job_expires_and_verifies(h: Harness) -> None:
    rt = h.rt
    got = access.jit(rt, _who("E4", roles=("operator",)), "app", "group:Pager", duration=H, reason="pager 9")
    h.push(got.plan_ids)
    assert "Pager" in h.groups_of("Ops")
    ctx = _Ctx(rt)
    asyncio.run(access.job(ctx))  # type: ignore[arg-type]
    assert ctx.woken == []  # nothing due yet
    assert metrics.access_grants_active.labels("app")._value.get() == 1  # type: ignore[attr-defined]
    h.now = T0 + H
    asyncio.run(access.job(ctx))  # type: ignore[arg-type]
    assert ctx.woken  # the removal is planned and the workers woken
    h.push(ctx.woken)
    h.now += dt.timedelta(minutes=1)
    asyncio.run(access.job(ctx))  # type: ignore[arg-type]
    asyncio.run(rt.close())
    ended = rt.store.access.get(got.request.id)
    assert ended is not None and ended.state == "expired" and ended.removal_verified_at == h.now
    assert "Pager" not in h.groups_of("Ops")
    assert metrics.access_grants_active.labels("app")._value.get() == 0  # type: ignore[attr-defined]


def test_approvers_and_the_requester_are_told(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(access, "notify_soon", lambda _rt, notice: sent.append(notice))
    rt = h.rt
    req = access.request(rt, _who("E1"), "E1", "app", "Wiki", reason="docs")
    # Low risk: Ana's manager (Mia, from HR) and the owner (Bob) are told, with a link to Ana's page.
    assert sent[-1].kind == "ACCESS_REQUESTED" and sent[-1].to == ["bob@example.com", "mia@example.com"]
    assert sent[-1].link == "/people/E1" and req.id in sent[-1].subject
    access.approve(rt, req.id, _who("E2"))
    assert sent[-1].kind == "ACCESS_DECIDED" and sent[-1].to == ["ana@example.com"] and "approved" in sent[-1].subject
