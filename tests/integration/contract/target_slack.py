"""Contract target: the Slack connector against scim2-server behind Slack's limits and dialect
(tests/vendor_peers/slack_scim.py). `inspect` reads scim2-server directly.

One Slack difference the contract must see through: the Slack userName is a derived
handle (<= 21 characters), not the planner's username (the work email). Slack identifies
a person by email, so `inspect` finds accounts by externalId, then by email, and reports
the primary email as `username`; the handle itself is in `attributes["slack_username"]`.
`precreate` makes what Slack would hold for that person: the derived handle and the email.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from connectors.base import ConnectorContext
from connectors.slack import SlackConnector, slack_username
from jml.config import SlackConnectorConfig
from jml.model import RemoteAccount
from tests.integration.contract.harness import ContractTarget
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.slack_scim import SlackScimProxy

TOKEN = "xoxp-contract-slack"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


class SlackPeerReader:
    def __init__(self, peer: ScimPeer) -> None:
        self.peer = peer

    async def _get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession(headers=self.peer.headers) as s, \
                s.get(self.peer.url + path, params=params) as r:
            return await r.json(content_type=None) if r.status == 200 else None

    async def find(self, employee_id: str | None, email: str) -> dict[str, Any] | None:
        for attr, value in (("externalId", employee_id), ("emails.value", email)):
            if not value:
                continue
            body = await self._get("Users", filter=f'{attr} eq "{value}"')
            if body and body.get("Resources"):
                return dict(body["Resources"][0])
        return None

    async def groups(self, user_id: str) -> dict[str, int]:
        body = await self._get("Groups", count="1000")
        out: dict[str, int] = {}
        for g in body.get("Resources", []):
            n = sum(1 for m in g.get("members") or [] if m.get("value") == user_id)
            if n:
                out[g["displayName"]] = n
        return out

    async def inspect(self, employee_id: str, username: str) -> RemoteAccount | None:
        u = await self.find(employee_id, username)
        if u is None:
            return None
        name = u.get("name") or {}
        email = next((e.get("value") for e in u.get("emails") or [] if e.get("primary")), None)
        attrs = {"given_name": name.get("givenName"), "family_name": name.get("familyName"),
                 "display_name": u.get("displayName"), "title": u.get("title"), "email": email,
                 "slack_username": u.get("userName")}
        return RemoteAccount(
            remote_id=u["id"], username=email or "", active=u.get("active", True), external_id=u.get("externalId"),
            attributes={k: v for k, v in attrs.items() if v},
            groups=frozenset(f"group:{n}" for n in await self.groups(u["id"])),
        )

    async def member_count(self, employee_id: str, username: str, grant: str) -> int:
        u = await self.find(employee_id, username)
        return 0 if u is None else (await self.groups(u["id"])).get(grant.removeprefix("group:"), 0)

    async def precreate(self, username: str, employee_id: str | None) -> None:
        handle = slack_username(employee_id or "", {"email": username})
        body: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": handle, "active": False,
                                "emails": [{"value": username, "primary": True}]}
        if employee_id:
            body["externalId"] = employee_id
        async with aiohttp.ClientSession(headers=self.peer.headers) as s, \
                s.post(self.peer.url + "Users", json=body) as r:
            assert r.status == 201, await r.text()

    async def remove_remote(self, username: str) -> None:
        # Slack itself cannot hard-delete over SCIM; the peer can, to stage a 404.
        u = await self.find(None, username)
        assert u is not None
        async with aiohttp.ClientSession(headers=self.peer.headers) as s, \
                s.delete(self.peer.url + f"Users/{u['id']}") as r:
            assert r.status == 204, await r.text()


@contextlib.asynccontextmanager
async def slack_target() -> AsyncIterator[ContractTarget]:
    with scim2_server(token=TOKEN) as peer:
        proxy = SlackScimProxy(peer.url, TOKEN)  # Slack's documented limits
        proxy.start()
        try:
            reader = SlackPeerReader(peer)
            config = SlackConnectorConfig(type="slack", scim_url=proxy.url, token_env="SLACK_SCIM_TOKEN")
            yield ContractTarget(
                connector=SlackConnector("slack", config, ConnectorContext(name="slack", secret=lambda _k: TOKEN)),
                grants=("group:engineering", "group:all-staff"),
                inspect=reader.inspect,
                inject_429=lambda seconds: proxy.fail_next_write("too_many_requests", 429, seconds),
                inject_permanent=lambda message: proxy.fail_next_write(message, 400),
                precreate=reader.precreate,
                remove_remote=reader.remove_remote,
                # No email here: Slack keeps emails unique, and every contract person shares these
                # attributes; the connector uses the planner's username (an email) instead.
                attributes={"given_name": "Ada", "family_name": "Lovelace", "display_name": "Ada Lovelace",
                            "title": "Engineer"},
                extra={"member_count": reader.member_count, "proxy": proxy, "peer": peer},
            )
        finally:
            proxy.stop()


TARGET = slack_target
