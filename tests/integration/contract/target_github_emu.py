"""Contract target: GitHub EMU mode (enterprise SCIM) against the loopback GitHub, every
request validated against GitHub's REST description. Deactivate = suspend (active:false),
delete = the irreversible DELETE. GitHub's EMU user has no `title`, so no attribute-update
round trip here (name/displayName updates are covered in test_github.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from connectors.base import ConnectorContext
from connectors.registry import build
from jml.config import GithubConnectorConfig
from jml.model import RemoteAccount
from tests.integration.contract.harness import ContractTarget
from tests.vendor_peers.github import SCIM_ERROR, GithubFake
from tests.vendor_peers.openapi_validator import description
from tests.vendor_peers.proxy import Fault


@contextlib.asynccontextmanager
async def _target() -> AsyncIterator[ContractTarget]:
    description()  # GitHub's REST description (npm); DescriptionMissing fails, never skips
    with GithubFake() as fake:
        cfg = GithubConnectorConfig.model_validate({
            "type": "github", "mode": "emu", "enterprise": fake.enterprise, "api_url": fake.url,
            "token_env": "GITHUB_TOKEN", "rate_limit": 1000, "burst": 1000})
        connector = build("gh-emu", cfg, ConnectorContext("gh-emu", lambda _k: fake.token))

        def find(employee_id: str | None, username: str) -> dict[str, Any] | None:
            users = list(fake.scim_users.values())
            return (next((u for u in users if employee_id and u.get("externalId") == employee_id), None)
                    or next((u for u in users if u["userName"].lower() == username.lower()), None))

        async def inspect(employee_id: str, username: str) -> RemoteAccount | None:
            u = find(employee_id, username)
            if u is None:
                return None
            groups = frozenset(f"group:{g['displayName']}" for g in fake.scim_groups.values()
                               if any(m["value"] == u["id"] for m in g["members"]))
            return RemoteAccount(remote_id=u["id"], username=u["userName"], active=bool(u["active"]),
                                 external_id=u.get("externalId"), groups=groups)

        async def precreate(username: str, employee_id: str | None) -> None:
            uid = str(uuid.uuid4())
            fake.scim_users[uid] = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": uid,
                                    "userName": username, "externalId": employee_id or f"idp-{uid[:8]}",
                                    "active": True, "displayName": username,
                                    "emails": [{"value": username, "primary": True}], "meta": {}}

        async def remove_remote(username: str) -> None:
            u = find(None, username)
            if u is not None:
                del fake.scim_users[u["id"]]

        async def member_count(employee_id: str, username: str, grant: str) -> int:
            u = find(employee_id, username)
            return sum(1 for g in fake.scim_groups.values() if f"group:{g['displayName']}" == grant
                       for m in g["members"] if u and m["value"] == u["id"])

        def error(status: int, detail: str, headers: dict[str, str] | None = None) -> Fault:
            return Fault(status, {"schemas": [SCIM_ERROR], "status": status, "detail": detail}, headers or {})

        yield ContractTarget(
            connector=connector,
            grants=("group:eng", "group:ops"),
            inspect=inspect,
            inject_429=lambda s: fake.fail_next_write(error(429, "Too many requests", {"Retry-After": f"{s:g}"})),
            inject_permanent=lambda msg: fake.fail_next_write(error(400, msg)),
            precreate=precreate,
            remove_remote=remove_remote,
            attributes={"given_name": "Ada", "family_name": "Lovelace"},
            supports_update=False,
            extra={"member_count": member_count},
        )
        assert not fake.invalid, "requests GitHub's REST description does not allow:\n" + "\n".join(fake.invalid)


TARGET = _target
