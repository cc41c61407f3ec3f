"""The Slack connector against scim2-server behind Slack's limits and dialect (tests/vendor_peers/slack_scim.py)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from connectors.base import ConnectorContext
from connectors.slack import AUTH_HELP, SlackConnector, slack_username
from jml.config import SlackConnectorConfig
from jml.errors import RetryableError
from jml.model import AccountRecord, Action, Operation
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.slack_scim import SlackScimProxy

TOKEN = "xoxp-test-slack-scim"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture(scope="module")
def peer() -> Iterator[ScimPeer]:
    with scim2_server(token=TOKEN) as server:
        yield server


def make_proxy(peer: ScimPeer, **limits: Any) -> SlackScimProxy:
    return SlackScimProxy(peer.url, TOKEN, **limits).start()  # type: ignore[return-value]


@pytest.fixture
def proxy(peer: ScimPeer) -> Iterator[SlackScimProxy]:
    # Generous limits for functional tests; the rate tests build their own.
    px = make_proxy(peer, per_minute=6000, burst=200, overall_per_minute=6000, overall_burst=200)
    yield px
    px.stop()


def connector_for(px: SlackScimProxy, token: str = TOKEN, **cfg: Any) -> SlackConnector:
    config = SlackConnectorConfig(type="slack", scim_url=px.url, token_env="SLACK_SCIM_TOKEN", **cfg)
    return SlackConnector("slack", config, ConnectorContext(name="slack", secret=lambda _key: token))


@pytest.fixture
async def slack(proxy: SlackScimProxy) -> AsyncIterator[SlackConnector]:
    conn = connector_for(proxy)
    await conn.open()
    yield conn
    await conn.close()


def raw(peer: ScimPeer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Talk to scim2-server directly (the peer's side, not through the connector)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(peer.url + path, data=data, method=method,
                                 headers={**peer.headers, "Content-Type": "application/scim+json"})
    try:
        with urllib.request.urlopen(req) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def peer_user(peer: ScimPeer, attribute: str, value: str) -> dict[str, Any] | None:
    flt = urllib.parse.quote(f'{attribute} eq "{value}"')
    _, body = raw(peer, "GET", f"Users?filter={flt}")
    found = body.get("Resources") or []
    return found[0] if found else None


def op(action: Action, eid: str, **detail: Any) -> Operation:
    return Operation("slack", action, eid, detail)


def person(n: int, prefix: str = "p") -> tuple[str, dict[str, str]]:
    eid = f"{prefix.upper()}{n:04d}"
    return eid, {"email": f"{prefix}{n}.person@acme.example", "given_name": "P", "family_name": str(n),
                 "display_name": f"P {n}", "title": "Engineer"}


async def test_lifecycle_create_update_deactivate_reactivate_groups(slack: SlackConnector, proxy: SlackScimProxy,
                                                                     peer: ScimPeer) -> None:
    attrs = {"email": "ada.lovelace@acme.example", "given_name": "Ada", "family_name": "Lovelace",
             "display_name": "Ada Lovelace", "title": "Engineer"}
    created = await slack.apply(op(Action.CREATE, "E1", username="ada.lovelace@acme.example", active=True,
                                   attributes=attrs), None)
    remote = peer_user(peer, "externalId", "E1")
    assert remote is not None and remote["id"] == created.remote_id
    assert remote["userName"] == "ada.lovelace" and remote["active"] is True

    record = AccountRecord("slack", "E1", "ada.lovelace@acme.example", True, attrs, frozenset(), created.remote_id)
    await slack.apply(op(Action.UPDATE, "E1", username="ada.lovelace@acme.example",
                         attributes={"title": "Principal Engineer"},
                         all_attributes={**attrs, "title": "Principal Engineer"}), record)
    remote = peer_user(peer, "externalId", "E1")
    assert remote is not None and remote["title"] == "Principal Engineer"
    assert remote["userName"] == "ada.lovelace"  # the handle is never renamed to the planner's username

    await slack.apply(op(Action.ADD_MEMBER, "E1", username="ada.lovelace@acme.example", group="group:eng"), record)
    account = await slack.read_account("E1", "ada.lovelace@acme.example", created.remote_id)
    assert account is not None and "group:eng" in account.groups

    await slack.apply(op(Action.DEACTIVATE, "E1", username="ada.lovelace@acme.example"), record)
    assert any(s.method == "DELETE" and s.path.endswith(f"/Users/{created.remote_id}") for s in proxy.writes())
    remote = peer_user(peer, "externalId", "E1")
    assert remote is not None and remote["active"] is False  # Slack's DELETE deactivates: the user stays

    await slack.apply(op(Action.REACTIVATE, "E1", username="ada.lovelace@acme.example"), record)
    account = await slack.read_account("E1", "ada.lovelace@acme.example", None)  # found again by externalId
    assert account is not None and account.active and account.remote_id == created.remote_id

    await slack.apply(op(Action.REMOVE_MEMBER, "E1", username="ada.lovelace@acme.example", group="group:eng"),
                      record)
    account = await slack.read_account("E1", "ada.lovelace@acme.example", created.remote_id)
    assert account is not None and "group:eng" not in account.groups

    # delete: Slack cannot hard-delete over SCIM, so the account ends inactive, not gone
    await slack.apply(op(Action.DELETE, "E1", username="ada.lovelace@acme.example"), record)
    remote = peer_user(peer, "externalId", "E1")
    assert remote is not None and remote["active"] is False


async def test_email_taken_adopts_the_existing_account(slack: SlackConnector, peer: ScimPeer) -> None:
    status, body = raw(peer, "POST", "Users", {"schemas": [USER_SCHEMA], "userName": "grace.h", "active": True,
                                               "emails": [{"value": "grace.hopper@acme.example", "primary": True}]})
    assert status == 201
    attrs = {"email": "grace.hopper@acme.example", "given_name": "Grace", "family_name": "Hopper"}
    result = await slack.apply(op(Action.CREATE, "E2", username="grace.hopper@acme.example", active=True,
                                  attributes=attrs), None)
    assert result.adopted and result.remote_id == body["id"]
    account = await slack.read_account("E2", "grace.hopper@acme.example", None)
    assert account is not None and account.remote_id == body["id"]
    remote = peer_user(peer, "externalId", "E2")  # adopted: now found by employee_id too
    assert remote is not None and remote["id"] == body["id"] and remote["userName"] == "grace.h"


async def test_email_taken_409_from_slack_is_adopted(slack: SlackConnector, proxy: SlackScimProxy,
                                                     peer: ScimPeer) -> None:
    """The pre-check misses (a user made between our lookup and our POST): Slack's
    email_taken on the POST itself leads to the same adoption."""
    status, body = raw(peer, "POST", "Users", {"schemas": [USER_SCHEMA], "userName": "katherine", "active": True,
                                               "emails": [{"value": "k.johnson@acme.example", "primary": True}]})
    assert status == 201
    attrs = {"email": "k.johnson@acme.example"}
    handle = await slack._post_user("E3", "k.johnson@acme.example", True, attrs)
    assert isinstance(handle, dict) and handle["id"] == body["id"]
    assert [s.status for s in proxy.writes() if s.method == "POST"] == [409]


async def test_handle_taken_by_someone_else_gets_the_suffix(slack: SlackConnector, peer: ScimPeer) -> None:
    raw(peer, "POST", "Users", {"schemas": [USER_SCHEMA], "userName": "alan.turing", "externalId": "OTHER",
                                "emails": [{"value": "alan.turing@elsewhere.example", "primary": True}]})
    attrs = {"email": "alan.turing@acme.example"}
    result = await slack.apply(op(Action.CREATE, "E4", username="alan.turing@acme.example", active=True,
                                  attributes=attrs), None)
    remote = peer_user(peer, "externalId", "E4")
    assert remote is not None and remote["id"] == result.remote_id and not result.adopted
    assert remote["userName"] == slack_username("E4", attrs, 1)
    # after a crash the same operation finds the account by externalId: nothing new is made
    again = await slack.apply(op(Action.CREATE, "E4", username="alan.turing@acme.example", active=True,
                                 attributes=attrs), None)
    assert again.remote_id == result.remote_id


async def test_too_long_name_never_reaches_the_server(slack: SlackConnector, proxy: SlackScimProxy,
                                                      peer: ScimPeer) -> None:
    long_name = "maximilian.alexander.von.humboldt"
    status, body = await asyncio.to_thread(_post_via_proxy, proxy, {"schemas": [USER_SCHEMA], "userName": long_name})
    assert status == 400 and "invalid_username" in body["Errors"]["description"]
    assert peer_user(peer, "userName", long_name) is None

    attrs = {"email": f"{long_name}@acme.example"}
    await slack.apply(op(Action.CREATE, "E5", username=f"{long_name}@acme.example", active=True,
                         attributes=attrs), None)
    remote = peer_user(peer, "externalId", "E5")
    assert remote is not None and remote["userName"] == "maximilian.alexander"
    assert all(len(n) <= 21 for n in proxy.forwarded_usernames)


def _post_via_proxy(px: SlackScimProxy, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(px.url + "Users", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_burst_of_40_creates_at_default_limit_gets_no_429(peer: ScimPeer) -> None:
    px = make_proxy(peer)  # Slack's documented limits: 180/min per endpoint, burst 20; 600/min overall
    conn = connector_for(px)  # the connector's defaults
    try:
        await conn.open()
        people = [person(n, "burst") for n in range(40)]
        results = await asyncio.gather(*(conn.apply(op(Action.CREATE, eid, username=a["email"], active=True,
                                                       attributes=a), None) for eid, a in people))
        assert px.rate_limited == 0
        assert len({r.remote_id for r in results}) == 40
        assert [s.status for s in px.writes() if s.method == "POST"] == [201] * 40
    finally:
        await conn.close()
        px.stop()


async def test_429_pauses_the_endpoint_and_says_retry_after(peer: ScimPeer) -> None:
    px = make_proxy(peer, per_minute=60, burst=1)
    conn = connector_for(px, rate_limit=50, burst=5)  # configured faster than this Slack allows
    try:
        await conn.open()
        eid, a = person(1, "limit")
        await conn.apply(op(Action.CREATE, eid, username=a["email"], active=True, attributes=a), None)
        eid, a = person(2, "limit")
        with pytest.raises(RetryableError) as caught:
            await conn.apply(op(Action.CREATE, eid, username=a["email"], active=True, attributes=a), None)
        assert caught.value.reason == "rate_limited" and caught.value.retry_after is not None
        assert caught.value.retry_after >= 1
        assert px.rate_limited == 1
        # the paused endpoint waits out Retry-After before the next POST: it then succeeds
        await conn.apply(op(Action.CREATE, eid, username=a["email"], active=True, attributes=a), None)
        assert px.rate_limited == 1
    finally:
        await conn.close()
        px.stop()


async def test_resource_locked_is_retryable(slack: SlackConnector, proxy: SlackScimProxy) -> None:
    eid, a = person(1, "locked")
    proxy.lock_next()
    with pytest.raises(RetryableError) as caught:
        await slack.apply(op(Action.CREATE, eid, username=a["email"], active=True, attributes=a), None)
    assert caught.value.reason == "resource_locked" and caught.value.retry_after == 1


async def test_check_names_a_bad_token_in_plain_words(proxy: SlackScimProxy) -> None:
    good = connector_for(proxy)
    findings = await good.check()
    await good.close()
    assert findings and all(f.ok for f in findings)
    bad = connector_for(proxy, token="xoxp-wrong")
    findings = await bad.check()
    await bad.close()
    assert not all(f.ok for f in findings)
    assert any(AUTH_HELP in f.message for f in findings)
    assert not any("xoxp-wrong" in f.message for f in findings)


async def test_the_wrapper_enforces_slacks_burst(peer: ScimPeer) -> None:
    """Not vacuous: past Slack's burst of 20 on one endpoint, the wrapper answers 429."""
    px = make_proxy(peer)
    conn = connector_for(px, rate_limit=100, burst=30)
    try:
        await conn.open()
        people = [person(n, "over") for n in range(30)]
        outcomes = await asyncio.gather(*(conn.apply(op(Action.CREATE, eid, username=a["email"], active=True,
                                                        attributes=a), None) for eid, a in people),
                                        return_exceptions=True)
        limited = [o for o in outcomes if isinstance(o, RetryableError) and o.reason == "rate_limited"]
        assert px.rate_limited >= 1 and len(limited) == px.rate_limited
        # the first 429 pauses the whole POST /Users endpoint for Retry-After, so the
        # requests still queued wait it out instead of collecting 429s of their own
        assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 30 - len(limited)
    finally:
        await conn.close()
        px.stop()
