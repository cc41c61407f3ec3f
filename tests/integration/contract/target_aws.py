"""Contract target: the AWS IAM Identity Center connector against real peers on loopback —
scim2-server behind the AWS limits wrapper (tests/vendor_peers/aws_scim.py) for SCIM, and
moto's ThreadedMotoServer for sso-admin. `inspect` reads scim2-server directly and moto's
ListAccountAssignments, never through the connector.

`aws_stack()` is also used by tests/integration/test_aws_identity_center.py.
"""

from __future__ import annotations

import contextlib
import os
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3

from connectors.aws_identity_center import AwsIdentityCenterConnector
from connectors.base import ConnectorContext
from jml.config import AwsConnectorConfig
from jml.model import RemoteAccount
from tests.integration.contract.harness import ContractTarget
from tests.integration.contract.target_scim import PeerReader
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.aws_scim import AwsScimProxy

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

ACCOUNT = "111111111111"
REGION = "us-east-1"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's sso-admin on a free loopback port, its (process-wide) state reset first."""
    from moto.server import ThreadedMotoServer

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "testing"  # never real credentials, even towards loopback
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5).close()
    try:
        yield url
    finally:
        server.stop()


@dataclass
class AwsStack:
    peer: ScimPeer
    proxy: AwsScimProxy
    moto_url: str
    sso: SSOAdminClient
    instance_arn: str

    def config(self, **overrides: Any) -> AwsConnectorConfig:
        values: dict[str, Any] = {"type": "aws_identity_center", "scim_url": self.proxy.scim_url,
                                  "token_env": "JML_TEST_AWS_SCIM_TOKEN", "instance_arn": self.instance_arn,
                                  "region": REGION, "endpoint_url": self.moto_url, "rate_limit": 500}
        values.update(overrides)
        return AwsConnectorConfig(**values)

    def connector(self, name: str = "aws", token: str | None = None, **overrides: Any) -> AwsIdentityCenterConnector:
        secret = token if token is not None else self.peer.token
        return AwsIdentityCenterConnector(name, self.config(**overrides),
                                          ConnectorContext(name=name, secret=lambda _key: secret))

    def permission_set(self, name: str) -> str:
        """The ARN of permission set `name`, created if missing."""
        for arn in self.sso.list_permission_sets(InstanceArn=self.instance_arn, MaxResults=100)["PermissionSets"]:
            ps = self.sso.describe_permission_set(InstanceArn=self.instance_arn, PermissionSetArn=arn)
            if ps["PermissionSet"].get("Name") == name:
                return arn
        out = self.sso.create_permission_set(Name=name, InstanceArn=self.instance_arn)
        return out["PermissionSet"]["PermissionSetArn"]

    def assignments(self, principal_id: str, grants: list[str]) -> list[str]:
        """Which of `grants` moto holds for the user, one entry per stored assignment
        (moto does not deduplicate: a duplicate shows up twice)."""
        found: list[str] = []
        for grant in grants:
            name, _, account = grant.rpartition("@")
            arn = self.permission_set(name)
            rows = self.sso.list_account_assignments(InstanceArn=self.instance_arn, AccountId=account,
                                                     PermissionSetArn=arn)["AccountAssignments"]
            found += [grant for r in rows if r.get("PrincipalId") == principal_id and r.get("PrincipalType") == "USER"]
        return found


@contextlib.contextmanager
def aws_stack(permission_sets: tuple[str, ...] = ("Developer", "ReadOnly", "Admin")) -> Iterator[AwsStack]:
    with scim2_server() as peer, moto_server() as moto_url:
        proxy = AwsScimProxy(peer.url)
        proxy.start()
        try:
            sso = boto3.client("sso-admin", region_name=REGION, endpoint_url=moto_url)
            instance_arn = sso.list_instances()["Instances"][0]["InstanceArn"]
            stack = AwsStack(peer, proxy, moto_url, sso, instance_arn)
            for name in permission_sets:
                stack.permission_set(name)
            yield stack
        finally:
            proxy.stop()


@contextlib.asynccontextmanager
async def aws_target() -> AsyncIterator[ContractTarget]:
    with aws_stack() as stack:
        reader = PeerReader(stack.peer)
        grants = (f"Developer@{ACCOUNT}", "group:engineering")

        async def inspect(employee_id: str, username: str) -> RemoteAccount | None:
            account = await reader.inspect(employee_id, username)
            if account is None:
                return None
            held = frozenset(stack.assignments(account.remote_id, [grants[0]]))
            return RemoteAccount(remote_id=account.remote_id, username=account.username, active=account.active,
                                 external_id=account.external_id, attributes=account.attributes,
                                 groups=account.groups | held)

        async def member_count(employee_id: str, username: str, grant: str) -> int:
            if grant.startswith("group:"):
                return await reader.member_count(employee_id, username, grant)
            user = await reader.find(employee_id, username)
            return 0 if user is None else len(stack.assignments(user["id"], [grant]))

        yield ContractTarget(
            connector=stack.connector(),
            grants=grants,
            inspect=inspect,
            inject_429=lambda seconds: stack.proxy.fail_next_write(429, "Rate exceeded",
                                                                   {"Retry-After": f"{seconds:g}"}),
            inject_permanent=lambda message: stack.proxy.fail_next_write(400, message),
            precreate=reader.precreate,
            remove_remote=reader.remove_remote,
            attributes={"given_name": "Ada", "family_name": "Lovelace", "display_name": "Ada Lovelace",
                        "email": "ada@acme.example", "title": "Engineer"},
            extra={"member_count": member_count, "stack": stack},
        )
        assert not stack.proxy.violations, f"requests AWS would refuse: {stack.proxy.violations}"


TARGET = aws_target
