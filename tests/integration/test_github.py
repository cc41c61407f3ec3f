"""The GitHub connector against a loopback GitHub whose first step is validating every
request against GitHub's official REST API description (ghec.json)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from connectors.base import ConnectorContext
from connectors.github._http import HourlyCeiling
from connectors.registry import build
from jml.config import GithubConnectorConfig
from jml.errors import PermanentError, RetryableError
from jml.model import AccountRecord, Action, Operation
from tests.vendor_peers.github import GithubFake
from tests.vendor_peers.openapi_validator import GithubDescription, Request, description, full_examples
from tests.vendor_peers.proxy import Fault


@pytest.fixture(autouse=True, scope="module")
def _github_description() -> None:
    """GitHub's REST description (npm @octokit/openapi), installed on first use: without it
    every test here fails (DescriptionMissing says why); none skips."""
    description()


@pytest.fixture
def fake() -> Iterator[GithubFake]:
    with GithubFake() as peer:
        yield peer
        assert not peer.invalid, "requests GitHub's REST description does not allow:\n" + "\n".join(peer.invalid)


def _cfg(fake: GithubFake, mode: str = "org", **extra: Any) -> GithubConnectorConfig:
    return GithubConnectorConfig.model_validate({
        "type": "github", "mode": mode, "org": fake.org, "enterprise": fake.enterprise, "api_url": fake.url,
        "token_env": "GITHUB_TOKEN", "rate_limit": 1000, "burst": 1000, **extra})


@pytest.fixture
async def org(fake: GithubFake) -> AsyncIterator[Any]:
    conn = build("github", _cfg(fake), ConnectorContext("github", lambda _k: fake.token))
    await conn.open()
    yield conn
    await conn.close()


@pytest.fixture
async def emu(fake: GithubFake) -> AsyncIterator[Any]:
    conn = build("gh-emu", _cfg(fake, "emu"), ConnectorContext("gh-emu", lambda _k: fake.token))
    await conn.open()
    yield conn
    await conn.close()


def op(action: Action, eid: str = "E1", **detail: Any) -> Operation:
    return Operation("github", action, eid, detail)


def invite(login: str | None, eid: str = "E1") -> Operation:
    attrs = {"github_username": login} if login else {}
    return op(Action.INVITE, eid, username=f"{eid}@acme.example", active=True, attributes=attrs)


# ---- org mode -------------------------------------------------------------------------------
async def test_joiner_is_invited_then_teamed_and_leaver_is_removed(org: Any, fake: GithubFake) -> None:
    await org.apply(op(Action.CREATE_GROUP, group="team:eng"), None)
    result = await org.apply(invite("octo"), None)
    assert result.remote_id == "octo" and result.note == "invitation sent"
    await org.apply(op(Action.ADD_MEMBER, username="E1@acme.example", group="team:eng",
                       attributes={"github_username": "octo"}), None)
    seen = await org.read_account("E1", "E1@acme.example", "octo")
    assert seen is not None and seen.pending_invitation and not seen.active and seen.groups == {"team:eng"}

    fake.accept("octo")
    seen = await org.read_account("E1", "E1@acme.example", "octo")
    assert seen is not None and seen.active and not seen.pending_invitation and seen.groups == {"team:eng"}

    record = AccountRecord("github", "E1", "E1@acme.example", True, {}, frozenset({"team:eng"}), remote_id="octo")
    await org.apply(op(Action.DEACTIVATE, username="E1@acme.example"), record)  # the record alone names the login
    gone = await org.read_account("E1", "E1@acme.example", "octo")
    assert gone is not None and not gone.active and not gone.pending_invitation and not gone.groups
    fake.nonexistent.add("octo")
    assert await org.read_account("E1", "E1@acme.example", "octo") is None  # no such GitHub user
    assert "octo" not in fake.members and "octo" not in fake.teams["eng"].members
    again = await org.apply(op(Action.DEACTIVATE, username="E1@acme.example"), record)
    assert again.note == "was not in the org"  # 404 on removal is success


async def test_pending_invitation_of_a_leaver_is_cancelled(org: Any, fake: GithubFake) -> None:
    await org.apply(invite("newbie"), None)
    assert fake.members["newbie"].state == "pending"
    await org.apply(op(Action.CANCEL_INVITE, username="E1@acme.example", attributes={"github_username": "newbie"}),
                    None)
    assert "newbie" not in fake.members
    assert [s.method for s in fake.writes()] == ["PUT", "DELETE"]


async def test_existing_owner_is_adopted_not_demoted(org: Any, fake: GithubFake) -> None:
    result = await org.apply(invite("jml-bot"), None)
    assert result.adopted and fake.members["jml-bot"].role == "admin"
    assert fake.writes() == []


async def test_missing_login(org: Any, fake: GithubFake) -> None:
    with pytest.raises(PermanentError, match="github_username"):
        await org.apply(invite(None), None)
    result = await org.apply(op(Action.DEACTIVATE, username="E1@acme.example"), None)
    assert "nothing to remove" in result.note and fake.writes() == []


async def test_login_change_moves_membership_and_teams(org: Any, fake: GithubFake) -> None:
    await org.apply(op(Action.CREATE_GROUP, group="team:eng"), None)
    await org.apply(invite("old-login"), None)
    await org.apply(op(Action.ADD_MEMBER, group="team:eng", attributes={"github_username": "old-login"}), None)
    record = AccountRecord("github", "E1", "E1@acme.example", True, {"github_username": "old-login"},
                           frozenset({"team:eng"}), remote_id="old-login")
    result = await org.apply(op(Action.UPDATE, username="E1@acme.example",
                                attributes={"github_username": "new-login"}), record)
    assert result.remote_id == "new-login"
    assert "old-login" not in fake.members and fake.members["new-login"].state == "pending"
    assert "new-login" in fake.teams["eng"].members


async def test_team_made_on_demand_and_remove_member_is_idempotent(org: Any, fake: GithubFake) -> None:
    await org.apply(invite("octo"), None)
    member = op(Action.ADD_MEMBER, group="team:platform", attributes={"github_username": "octo"})
    await org.apply(member, None)
    await org.apply(member, None)
    assert fake.teams["platform"].members == {"octo": "pending"}
    removal = op(Action.REMOVE_MEMBER, group="team:platform", attributes={"github_username": "octo"})
    await org.apply(removal, None)
    assert (await org.apply(removal, None)).note == "was not a member"
    with pytest.raises(PermanentError, match="team:SLUG"):
        await org.apply(op(Action.ADD_MEMBER, group="eng", attributes={"github_username": "octo"}), None)


async def test_list_accounts_pages_members_invitations_and_teams(org: Any, fake: GithubFake) -> None:
    from tests.vendor_peers.github import Membership

    team = fake.add_team("eng")
    for i in range(130):
        fake.members[f"user{i}"] = Membership(f"user{i}", "active")
    team.members["user7"] = "active"
    fake.members["invitee"] = Membership("invitee", "pending", invitation_id=9)
    accounts = {a.username: a async for a in org.list_accounts()}
    assert len(accounts) == 132  # 130 + the owner + the invitee
    assert accounts["user7"].groups == {"team:eng"}
    assert accounts["invitee"].pending_invitation and not accounts["invitee"].active
    assert any("page=2" in s.query for s in fake.seen if s.path.endswith("/members"))


# ---- rate limits ----------------------------------------------------------------------------
async def test_retry_after_and_secondary_limits_are_retryable(org: Any, fake: GithubFake) -> None:
    fake.fail_next_write(Fault(429, {"message": "slow down"}, {"Retry-After": "7"}))
    with pytest.raises(RetryableError) as caught:
        await org.apply(invite("a"), None)
    assert caught.value.retry_after == 7 and caught.value.reason == "rate_limited"
    org.http.gate.pause(0)
    org.http.gate._blocked_until = 0.0  # the test, not the connector, skips the 7 s wait
    org.http.writes._blocked_until = 0.0

    fake.fail_next_write(Fault(403, {"message": "You have exceeded a secondary rate limit."}))
    with pytest.raises(RetryableError) as caught:
        await org.apply(invite("b"), None)
    assert caught.value.retry_after == 60

    org.http.gate._blocked_until = org.http.writes._blocked_until = 0.0
    fake.fail_next_write(Fault(403, {"message": "Must have admin rights to Repository."}))
    with pytest.raises(PermanentError, match="admin rights"):
        await org.apply(invite("c"), None)


async def _three_invites_at_once(conn: Any) -> list[Any]:
    return await asyncio.gather(*(conn.apply(invite(f"u{n}", f"E{n}"), None) for n in range(3)),
                                return_exceptions=True)


async def test_default_writes_go_one_at_a_time_a_second_after_the_last_answer(fake: GithubFake) -> None:
    """GitHub: "make requests serially" and "wait at least one second between each" write.
    With no rate configured, concurrent writes queue: none reaches GitHub within a second of
    the previous write's answer, which a peer holding clients to that refuses (see below)."""
    fake.min_write_gap = 1.0
    cfg = GithubConnectorConfig.model_validate({"type": "github", "mode": "org", "org": fake.org,
                                                "api_url": fake.url, "token_env": "GITHUB_TOKEN"})
    conn = build("github", cfg, ConnectorContext("github", lambda _k: fake.token))
    await conn.open()
    try:
        started = time.monotonic()
        outcomes = await _three_invites_at_once(conn)
        took = time.monotonic() - started
    finally:
        await conn.close()
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert fake.secondary_limited == 0 and len(fake.writes()) == 3
    assert took >= 2.0  # two gaps of a second: the pacing is real, not skipped


def test_the_sla_prediction_paces_a_github_queue_at_its_write_pace(fake: GithubFake) -> None:
    """500 GitHub leavers queued take 500 s: the prediction must know the pace, not guess
    it from latency (which would predict seconds and never flag the breach coming)."""
    from types import SimpleNamespace

    from jml.sla_forecast import _rate

    for mode in ("org", "emu"):
        cfg = GithubConnectorConfig.model_validate({"type": "github", "mode": mode, "org": fake.org,
                                                    "enterprise": fake.enterprise, "api_url": fake.url})
        conn = build("github", cfg, ConnectorContext("github", lambda _k: fake.token))
        rt = SimpleNamespace(config=SimpleNamespace(connectors={"github": cfg}), connector=lambda _n, c=conn: c)
        assert _rate(rt, "github") == 1.0  # type: ignore[arg-type]


async def test_the_peer_refuses_writes_closer_than_a_second(org: Any, fake: GithubFake) -> None:
    """Not vacuous: a connector configured faster than GitHub asks (the `org` fixture lifts
    the rate) is refused as GitHub refuses a secondary-rate-limited client."""
    fake.min_write_gap = 1.0
    outcomes = await _three_invites_at_once(org)
    limited = [o for o in outcomes if isinstance(o, RetryableError) and o.reason == "rate_limited"]
    assert fake.secondary_limited >= 1 and len(limited) == fake.secondary_limited
    assert all(o.retry_after == 60 for o in limited)


async def test_primary_limit_pauses_until_reset(org: Any, fake: GithubFake) -> None:
    reset = str(int(time.time()) + 1)
    fake.fail_next_write(Fault(403, {"message": "API rate limit exceeded for user ID 1."},
                               {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}))
    with pytest.raises(RetryableError) as caught:
        await org.apply(invite("a"), None)
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 2.5
    started = time.monotonic()
    await org.read_account("E1", "a", "a")  # any request now waits for the reset
    assert time.monotonic() - started >= 0.5


async def test_hourly_ceiling_is_exact() -> None:
    now = [0.0]
    ceiling = HourlyCeiling(3, window=0.2, clock=lambda: now[0])
    for _ in range(3):
        await ceiling.acquire()
    waiter = asyncio.ensure_future(ceiling.acquire())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # a fourth provision within the window waits
    now[0] = 0.25
    await asyncio.wait_for(waiter, 1)


async def test_provisions_per_hour_caps_the_invite_path(fake: GithubFake) -> None:
    conn = build("github", _cfg(fake, provisions_per_hour=1), ConnectorContext("github", lambda _k: fake.token))
    await conn.apply(invite("a"), None)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(conn.apply(invite("b", "E2"), None), 0.5)
    await conn.apply(op(Action.DEACTIVATE, attributes={"github_username": "a"}), None)  # leavers are not capped
    await conn.close()


# ---- jml check ------------------------------------------------------------------------------
async def test_check_reports_scopes_in_plain_words(org: Any, fake: GithubFake) -> None:
    findings = await org.check()
    assert all(f.ok for f in findings), findings
    fake.scopes = "repo, read:org"
    bad = [f.message for f in await org.check() if not f.ok]
    assert bad == ["the token lacks the scope admin:org (it has: read:org, repo)"]
    fake.scopes = None
    assert all(f.ok for f in await org.check())
    fake.token = "rotated-on-github-only"
    org.ctx.secret = lambda _k: "ghp_stale_token"
    bad = [f.message for f in await org.check() if not f.ok]
    assert bad and "bad credentials" in bad[0]


async def test_emu_check_needs_scim_enterprise(emu: Any, fake: GithubFake) -> None:
    assert all(f.ok for f in await emu.check())
    fake.scopes = "admin:org"
    assert [f.message for f in await emu.check() if not f.ok] == [
        "the token lacks the scope scim:enterprise (it has: admin:org)"]


# ---- EMU mode -------------------------------------------------------------------------------
def _create(eid: str = "E1", username: str = "ada@acme.example", active: bool = True) -> Operation:
    return op(Action.CREATE, eid, username=username, active=active,
              attributes={"given_name": "Ada", "family_name": "Lovelace", "email": username})


async def test_emu_lifecycle(emu: Any, fake: GithubFake) -> None:
    created = await emu.apply(_create(), None)
    rid = created.remote_id
    assert rid in fake.scim_users and fake.scim_users[rid]["active"] is True
    assert (await emu.apply(_create(), None)).adopted  # idempotent: found by externalId
    await emu.apply(op(Action.CREATE_GROUP, group="group:eng"), None)
    record = AccountRecord("gh-emu", "E1", "ada@acme.example", True, {}, frozenset(), remote_id=rid)
    await emu.apply(op(Action.ADD_MEMBER, username="ada@acme.example", group="group:eng"), record)
    seen = await emu.read_account("E1", "ada@acme.example", rid)
    assert seen is not None and seen.active and seen.groups == {"group:eng"}

    await emu.apply(op(Action.DEACTIVATE, username="ada@acme.example"), record)
    assert fake.scim_users[rid]["active"] is False  # suspended, not deleted
    await emu.apply(op(Action.REACTIVATE, username="ada@acme.example"), record)
    assert fake.scim_users[rid]["active"] is True
    await emu.apply(op(Action.REMOVE_MEMBER, username="ada@acme.example", group="group:eng"), record)
    assert next(iter(fake.scim_groups.values()))["members"] == []
    patches = [s.body for s in fake.writes() if s.method == "PATCH"]
    assert all("[" not in str(o.get("path", "")) for b in patches for o in b["Operations"])

    await emu.apply(op(Action.DELETE, username="ada@acme.example"), record)
    assert rid not in fake.scim_users
    assert (await emu.apply(op(Action.DELETE, username="ada@acme.example"), record)).note == "already gone"


async def test_emu_conflict_adopts_and_lists(emu: Any, fake: GithubFake) -> None:
    fake.scim_users["x1"] = {"schemas": [], "id": "x1", "userName": "bob@acme.example", "externalId": "other",
                             "active": True, "displayName": "Bob", "emails": [], "meta": {}}
    result = await emu.apply(_create("E2", "bob@acme.example"), None)
    assert result.adopted and result.remote_id == "x1"
    assert fake.scim_users["x1"]["externalId"] == "E2"
    for i in range(3, 6):
        await emu.apply(_create(f"E{i}", f"u{i}@acme.example"), None)
    emu.page_size = 2
    listed = [a.external_id async for a in emu.list_accounts()]
    assert sorted(x for x in listed if x) == ["E2", "E3", "E4", "E5"]


# ---- the validator itself -------------------------------------------------------------------
async def test_fake_rejects_what_the_description_does_not_allow(fake: GithubFake) -> None:
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {fake.token}", "User-Agent": "t", "Content-Type": "application/json"}
        async with s.put(f"{fake.url}/orgs/acme/memberships/x", data=json.dumps({"role": "owner"}),
                         headers=headers) as r:
            assert r.status == 400
        async with s.get(f"{fake.url}/orgs/acme/members?per_page=lots", headers=headers) as r:
            assert r.status == 400
        async with s.post(f"{fake.url}/scim/v2/enterprises/acme-ent/Users", headers=headers,
                          data=json.dumps({"userName": "u"})) as r:
            assert r.status == 400
    assert len(fake.invalid) == 3 and "'owner' is not one of" in fake.invalid[0]
    fake.invalid.clear()


def test_errata_is_needed_by_the_descriptions_own_examples() -> None:
    strict = GithubDescription(errata=False)
    patched = description()
    bad = {}
    for name, example in full_examples().items():
        req = Request("PATCH", "/scim/v2/enterprises/e/Users/1", body=json.dumps(example).encode())
        bad[name] = bool(strict.errors(req))
        assert not patched.errors(req), name
    assert bad == {"userMultiValuedProperties": False, "userSingleValuedProperties": False, "disableUser": True,
                   "updateGroup": False, "addMembers": True}
