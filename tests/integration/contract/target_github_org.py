"""Contract target: GitHub org mode against the loopback GitHub (every request validated
against GitHub's REST description). Org mode's account is the person's own GitHub login
(from the HR attribute github_username): "create" invites it (the fake's user accepts at
once), "deactivate" removes it from the org (the GitHub user remains, without access),
"reactivate" invites it again. GitHub users cannot be deleted or edited by an org."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from connectors.base import ConnectorContext
from connectors.registry import build
from jml.config import GithubConnectorConfig
from jml.model import RemoteAccount
from tests.integration.contract.harness import ContractTarget
from tests.vendor_peers.github import GithubFake, Membership
from tests.vendor_peers.openapi_validator import description
from tests.vendor_peers.proxy import Fault

LOGIN = "contract-octocat"


@contextlib.asynccontextmanager
async def _target() -> AsyncIterator[ContractTarget]:
    description()  # GitHub's REST description (npm); DescriptionMissing fails, never skips
    with GithubFake() as fake:
        fake.auto_accept = True
        cfg = GithubConnectorConfig.model_validate({
            "type": "github", "mode": "org", "org": fake.org, "api_url": fake.url, "token_env": "GITHUB_TOKEN",
            "rate_limit": 1000, "burst": 1000})
        connector = build("github", cfg, ConnectorContext("github", lambda _k: fake.token))

        async def inspect(employee_id: str, username: str) -> RemoteAccount | None:
            m = fake.members.get(LOGIN)
            teams = frozenset(f"team:{t.slug}" for t in fake.teams.values() if LOGIN in t.members)
            if m is None:
                return RemoteAccount(remote_id=LOGIN, username=username, active=False)
            # The login is the account; jml's username (an e-mail) is how the suite names the person.
            return RemoteAccount(remote_id=m.login, username=username, active=m.state == "active", groups=teams,
                                 pending_invitation=m.state == "pending")

        async def precreate(username: str, employee_id: str | None) -> None:
            fake.members[LOGIN] = Membership(LOGIN, "active")

        async def remove_remote(username: str) -> None:
            fake.members.pop(LOGIN, None)

        async def member_count(employee_id: str, username: str, grant: str) -> int:
            team = fake.teams.get(grant.removeprefix("team:"))
            return int(team is not None and LOGIN in team.members)

        yield ContractTarget(
            connector=connector,
            grants=("team:eng", "team:ops"),
            inspect=inspect,
            inject_429=lambda s: fake.fail_next_write(Fault(429, {"message": "slow down"}, {"Retry-After": f"{s:g}"})),
            inject_permanent=lambda msg: fake.fail_next_write(Fault(422, {"message": msg})),
            precreate=precreate,
            remove_remote=remove_remote,
            attributes={"github_username": LOGIN},
            supports_delete=False,  # an org cannot delete a GitHub user
            supports_update=False,  # the profile belongs to its user; nothing to push
            extra={"member_count": member_count},
        )
        assert not fake.invalid, "requests GitHub's REST description does not allow:\n" + "\n".join(fake.invalid)


TARGET = _target
