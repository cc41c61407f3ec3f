"""Contract target: the generic SCIM connector against a real scim2-server, behind a
VendorProxy for fault injection. `inspect` reads the server directly, not via the connector."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from connectors.base import ConnectorContext
from connectors.scim import ScimConnector
from jml.config import ScimConnectorConfig
from jml.model import RemoteAccount
from tests.integration.contract.harness import ContractTarget
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.proxy import VendorProxy

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class WriteFaultProxy(VendorProxy):
    """Faults that hit the next *write* (the harness's inject_* are about writes; reads pass)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.write_faults: deque[web.Response] = deque()

    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        if request.method in WRITES and self.write_faults:
            return self.write_faults.popleft()
        return None


class PeerReader:
    """The peer's side of the story, read with plain HTTP."""

    def __init__(self, peer: ScimPeer) -> None:
        self.peer = peer

    async def _get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession(headers=self.peer.headers) as s, \
                s.get(self.peer.url + path, params=params) as r:
            return await r.json(content_type=None) if r.status == 200 else None

    async def find(self, employee_id: str | None, username: str) -> dict[str, Any] | None:
        for attr, value in (("externalId", employee_id), ("userName", username)):
            if not value:
                continue
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            body = await self._get("Users", filter=f'{attr} eq "{escaped}"')
            if body and body.get("Resources"):
                return dict(body["Resources"][0])
        return None

    async def groups(self, user_id: str) -> dict[str, int]:
        """displayName -> how many times the user is listed as a member."""
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
        emails = u.get("emails") or [{}]
        attrs = {"given_name": name.get("givenName"), "family_name": name.get("familyName"),
                 "display_name": u.get("displayName"), "title": u.get("title"), "email": emails[0].get("value")}
        return RemoteAccount(
            remote_id=u["id"], username=u["userName"], active=u.get("active", True), external_id=u.get("externalId"),
            attributes={k: v for k, v in attrs.items() if v},
            groups=frozenset(f"group:{n}" for n in await self.groups(u["id"])),
        )

    async def member_count(self, employee_id: str, username: str, grant: str) -> int:
        u = await self.find(employee_id, username)
        return 0 if u is None else (await self.groups(u["id"])).get(grant.removeprefix("group:"), 0)

    async def precreate(self, username: str, employee_id: str | None) -> None:
        body: dict[str, Any] = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": username,
                                "active": False}
        if employee_id:
            body["externalId"] = employee_id
        async with aiohttp.ClientSession(headers=self.peer.headers) as s, \
                s.post(self.peer.url + "Users", json=body) as r:
            assert r.status == 201, await r.text()

    async def remove_remote(self, username: str) -> None:
        u = await self.find(None, username)
        assert u is not None
        async with aiohttp.ClientSession(headers=self.peer.headers) as s, \
                s.delete(self.peer.url + f"Users/{u['id']}") as r:
            assert r.status == 204, await r.text()


def connector_for(url: str, token: str, name: str = "scim", **cfg: Any) -> ScimConnector:
    config = ScimConnectorConfig(type="scim", url=url, token_env="JML_TEST_SCIM_TOKEN", **cfg)
    return ScimConnector(name, config, ConnectorContext(name=name, secret=lambda _key: token))


@contextlib.asynccontextmanager
async def scim_target() -> AsyncIterator[ContractTarget]:
    with scim2_server() as peer:
        proxy = WriteFaultProxy(peer.url.removesuffix("/v2/"))
        proxy.start()
        try:
            reader = PeerReader(peer)

            def inject_429(seconds: float) -> None:
                proxy.write_faults.append(web.json_response(
                    {"schemas": [ERROR], "status": "429", "detail": "Too many requests"},
                    status=429, headers={"Retry-After": f"{seconds:g}"}))

            def inject_permanent(message: str) -> None:
                proxy.write_faults.append(web.json_response(
                    {"schemas": [ERROR], "status": "400", "scimType": "invalidValue", "detail": message}, status=400))

            yield ContractTarget(
                connector=connector_for(proxy.url + "v2/", peer.token),
                grants=("group:engineering", "group:all-staff"),
                inspect=reader.inspect,
                inject_429=inject_429,
                inject_permanent=inject_permanent,
                precreate=reader.precreate,
                remove_remote=reader.remove_remote,
                attributes={"given_name": "Ada", "family_name": "Lovelace", "display_name": "Ada Lovelace",
                            "email": "ada@acme.example", "title": "Engineer"},
                extra={"member_count": reader.member_count, "proxy": proxy, "peer": peer},
            )
        finally:
            proxy.stop()


TARGET = scim_target
