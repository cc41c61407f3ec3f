"""Connector.entitlements() (the catalogue's source) against the vendor stand-ins: GitHub org teams
(the REST description checks every request), AWS Identity Center groups and permission sets by the
accounts they are provisioned to (moto), SCIM groups (scim2-server)."""

from __future__ import annotations

from typing import Any

from connectors.aws_identity_center import AwsIdentityCenterConnector
from connectors.base import ConnectorContext, Entitlement
from connectors.registry import build
from jml.config import ScimConnectorConfig
from jml.model import Action
from tests.integration import test_aws_identity_center as aws_tests
from tests.integration import test_github as github_tests
from tests.integration.contract.target_aws import AwsStack
from tests.integration.test_aws_identity_center import Joiner
from tests.peers import ScimPeer
from tests.vendor_peers.github import GithubFake

# The vendor stand-ins' fixtures, shared with their own tests.
stack, aws = aws_tests.stack, aws_tests.aws
fake, org, _github_description = github_tests.fake, github_tests.org, github_tests._github_description


async def test_github_org_lists_its_teams(org: Any, fake: GithubFake) -> None:
    for slug in ("platform", "eng"):
        fake.add_team(slug)
    got = await org.entitlements()
    assert [e.grant for e in got] == ["team:eng", "team:platform"]
    assert all(isinstance(e, Entitlement) and e.display_name for e in got)


async def test_aws_lists_groups_and_provisioned_permission_sets(aws: AwsIdentityCenterConnector,
                                                                stack: AwsStack) -> None:
    p = Joiner(aws)
    await p.create()
    await p.apply(Action.ADD_MEMBER, group="group:entitlements-test")
    arn = stack.permission_set("Auditor")
    stack.sso.provision_permission_set(InstanceArn=stack.instance_arn, PermissionSetArn=arn,
                                       TargetType="ALL_PROVISIONED_ACCOUNTS")
    grants = {e.grant for e in await aws.entitlements()}
    assert "group:entitlements-test" in grants
    assert any(g.startswith("Auditor@") and g.split("@")[1].isdigit() for g in grants), grants


async def test_scim_lists_its_groups(scim_peer: ScimPeer) -> None:
    cfg = ScimConnectorConfig(type="scim", url=scim_peer.url, token_env="X")
    conn = build("app", cfg, ConnectorContext("app", lambda _k: scim_peer.token))
    await conn.open()
    try:
        assert await conn.entitlements() == []
        for name in ("Ops", "All Staff"):
            await conn.group_id(name, create=True)  # type: ignore[attr-defined]
        got = await conn.entitlements()
    finally:
        await conn.close()
    assert got == [Entitlement("group:All Staff", "All Staff"), Entitlement("group:Ops", "Ops")]
