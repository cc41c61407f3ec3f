"""AWS IAM Identity Center (`type: aws_identity_center`).

Users, groups and memberships go over the Identity Center SCIM endpoint: the generic
ScimConnector with the AWS dialect plugged into its hooks. Permission-set account
assignments (grants `PermissionSetName@AccountId`) go through boto3 `sso-admin`
(connectors.aws.assignments). The user's Identity Store id *is* its SCIM id, so the
SCIM id is the assignment's PrincipalId.

AWS SCIM limits honoured here (developer guide, "Limitations from SCIM specification"):
* filters `eq` only, on userName / externalId (users) and displayName / members.value (groups);
* cursor paging (`cursor`, `count` <= 100; `startIndex` is refused);
* one email, primary; `groups` never sent on a user (build_user never sets it);
* name.givenName, name.familyName and displayName required: filled when HR lacks them;
* GetGroup/ListGroups return empty `members`: a user's groups come from
  `GET /Groups?filter=members.value eq "<id>"`, which AWS documents for exactly this;
* at most 100 member changes per group PATCH (batched by the base class); removals name
  their members, never "remove all members".

A leaver gets unassign + remove_member + deactivate operations: each is idempotent (an
absent assignment, membership or account is success). A delete also removes any
assignment left behind, so no assignment outlives its principal.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig

from connectors.aws import dialect
from connectors.aws.assignments import DEFAULT_RATE, QUOTA_RATE, AccountGrant, PermissionSetAssignments
from connectors.base import ApplyResult, CheckFinding, ConnectorContext, Entitlement, TokenBucket
from connectors.scim import ScimConnector
from connectors.scim import protocol as p
from jml.config import AwsConnectorConfig
from jml.errors import ConnectorError, NotFoundError
from jml.model import AccountRecord, Action, Operation, RemoteAccount

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

__all__ = ["AccountGrant", "AwsIdentityCenterConnector"]


def is_assignment(grant: str) -> bool:
    """`PermissionSetName@AccountId` (12 digits) and not an explicit `group:` grant."""
    return not grant.startswith("group:") and AccountGrant.parse(grant) is not None


class AwsIdentityCenterConnector(ScimConnector):
    # Identity Center's SCIM filters: `eq` on userName / externalId only (no `or`).
    dialect_profile = {"filter_or": False}
    max_members_per_patch = 100  # PatchGroup: "A maximum of 100 membership changes ... in a single request"
    page_size = 100  # ListUsers/ListGroups: count 1..100

    def __init__(self, name: str, cfg: AwsConnectorConfig, ctx: ConnectorContext) -> None:
        super().__init__(name, cfg, ctx)
        self.aws_cfg = cfg
        # The 20 TPS Identity Center quota is shared with everyone else: default to half of it.
        rate = min(cfg.rate_limit, QUOTA_RATE) if cfg.rate_limit is not None else DEFAULT_RATE
        self.assignments = PermissionSetAssignments(
            name, self._sso_admin_client, cfg.instance_arn,
            bucket=TokenBucket(rate, cfg.burst if cfg.burst is not None else int(rate)),
            concurrency=cfg.assignment_concurrency, poll_timeout=cfg.timeout.total_seconds(),
        )

    def _sso_admin_client(self) -> SSOAdminClient:
        seconds = self.aws_cfg.timeout.total_seconds()
        # Credentials come from the normal boto3 chain (environment, profile, instance role).
        # Retries stay with the engine (outbox backoff), bar one quick retry of a dropped call.
        return boto3.client(
            "sso-admin", region_name=self.aws_cfg.region, endpoint_url=self.aws_cfg.endpoint_url,
            config=BotoConfig(retries={"mode": "standard", "max_attempts": 2},
                              connect_timeout=seconds, read_timeout=seconds),
        )

    # ---- ScimConnector hooks --------------------------------------------------------
    def classify(self, status: int, body: Any, retry_after: float | None) -> ConnectorError:
        return dialect.classify(self.name, status, body, retry_after)

    async def capabilities(self) -> p.Capabilities:
        caps = await super().capabilities()
        if not caps.cursor:
            # AWS pages with cursors only (ListUsers: startIndex is not supported), whatever
            # its ServiceProviderConfig announces.
            caps = self.caps = dataclasses.replace(caps, cursor=True)
        return caps

    def user_payload(self, employee_id: str, username: str, active: bool, attributes: Mapping[str, str],
                     manager_ref: str | None) -> Any:
        return super().user_payload(employee_id, username, active,
                                    dialect.with_required_names(attributes, username), manager_ref)

    async def update_user(self, user: Mapping[str, Any], employee_id: str, username: str, active: bool | None,
                          attrs: Mapping[str, str], keys: Sequence[str]) -> None:
        # An emptied name would be a `remove` of a required attribute: send the fallback instead.
        filled = dialect.with_required_names(attrs, username or str(user.get("userName") or ""))
        await super().update_user(user, employee_id, username, active, filled, keys)

    async def groups_of(self, user: Mapping[str, Any]) -> frozenset[str]:
        # ListGroups: "GetGroup and ListGroups return an empty member list. To see group info for
        # a certain member, call ListGroups with a member filter." The answer cannot be checked
        # against `members` (always empty), so it is trusted as documented.
        uid = str(user["id"])
        names: set[str] = set()
        try:
            async for g in self.paginate(self.groups_endpoint, p.eq_filter("members.value", uid)):
                if g.get("id") and g.get("displayName"):
                    self._remember_group(str(g["id"]), str(g["displayName"]))
                    names.add(str(g["displayName"]))
        except NotFoundError:  # ListGroups: 404 "when filter querying with a nonexisting member"
            return frozenset()
        return frozenset(self.group_grant(n) for n in names)

    async def members_present(self, group_id: str, ids: list[str], add: bool) -> set[str]:
        # GetGroup lists no members (see groups_of): ask per member by the members filter.
        name = await self._group_name(group_id)
        grant = self.group_grant(name)
        return {uid for uid in ids if grant in await self.groups_of({"id": uid})}

    # ---- the Connector protocol -----------------------------------------------------
    async def open(self) -> None:
        await super().open()
        await self.assignments.open()

    async def apply_vendor(self, op: Operation, account: AccountRecord | None) -> ApplyResult | None:
        grant = str(op.detail.get("grant") or op.detail.get("group") or "")
        assignment = op.action in (Action.ASSIGN, Action.UNASSIGN) or (
            # Grants are names (README "Connectors"): `PS@ACCOUNT` is an assignment, whichever verb carries it.
            op.action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER) and is_assignment(grant))
        if not assignment and op.action != Action.DELETE:
            return None  # a SCIM user or group change
        await self.capabilities()
        adding = op.action in (Action.ASSIGN, Action.ADD_MEMBER)
        known = account.remote_id if account else None
        if known and op.action != Action.DELETE and not adding:
            # A removal needs only the principal id: the recorded one spares a leaver a read.
            # An id the identity store no longer knows takes the general path (find again).
            with contextlib.suppress(NotFoundError):
                return ApplyResult(remote_id=known, note=await self.assignments.unassign(known, grant))
        username = str(op.detail.get("username") or (account.username if account else ""))
        user = await self.find_user(op.employee_id, username, account.remote_id if account else None,
                                    old_username=account.username if account else None)
        if op.action == Action.DELETE:
            if user is not None:  # an assignment must not outlive its principal
                for grant in sorted(await self.assignments.grants_of(str(user["id"]))):
                    await self.assignments.unassign(str(user["id"]), grant)
            return None  # then the SCIM delete
        if user is None:
            if not adding:
                return ApplyResult(note="no such account: nothing assigned")
            raise NotFoundError(self.name, f"no account for {op.employee_id} to assign {grant}")
        uid = str(user["id"])
        if adding:
            note = await self.assignments.assign(uid, grant)
        else:
            note = await self.assignments.unassign(uid, grant)
        return ApplyResult(remote_id=uid, note=note)

    async def read_account(self, employee_id: str, username: str, remote_id: str | None) -> RemoteAccount | None:
        account = await super().read_account(employee_id, username, remote_id)
        if account is None:
            return None
        grants = await self.assignments.grants_of(account.remote_id)
        return dataclasses.replace(account, groups=account.groups | grants)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        # No bulk way to read memberships (groups list no members): two look-ups per user,
        # its groups by members.value filter and its assignments by principal.
        await self.capabilities()
        async for user in self.paginate(self.users_endpoint):
            if user.get("id"):
                uid = str(user["id"])
                grants = await self.groups_of(user) | await self.assignments.grants_of(uid)
                yield self.to_remote(user, grants)

    async def check(self) -> list[CheckFinding]:
        return [*await super().check(), *await self.assignments.check()]

    async def entitlements(self) -> list[Entitlement]:
        """Identity Store groups, and every permission set in every account it is provisioned to."""
        sets = [Entitlement(g, g) for g in await self.assignments.provisioned()]
        return sorted([*await super().entitlements(), *sets], key=lambda e: e.grant)
