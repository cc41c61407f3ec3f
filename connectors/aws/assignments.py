"""Permission-set account assignments (grants written `PermissionSetName@AccountId`) via boto3 `sso-admin`.

AWS facts this module is shaped by (IAM Identity Center API reference):
* CreateAccountAssignment / DeleteAccountAssignment are asynchronous: they answer with a request
  id and IN_PROGRESS; DescribeAccountAssignment{Creation,Deletion}Status says SUCCEEDED or FAILED
  (with a FailureReason). At most 10 such requests may be outstanding, hence the semaphore.
* The Identity Center APIs share a 20 TPS quota: every call here takes a token from a bucket
  that defaults to 10/s, leaving room for the console and other tools.
* Assignments are not deduplicated by moto (and a repeated create on AWS is a ConflictException
  while one is in flight), so every write is "check, then change": idempotent on replay.

boto3 is synchronous: calls run in `asyncio.to_thread`. botocore errors are translated here,
at the edge, into jml.errors types.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from connectors.base import CheckFinding, TokenBucket
from jml.errors import ConnectorError, NotFoundError, PermanentError, RetryableError

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient
    from mypy_boto3_sso_admin.type_defs import AccountAssignmentOperationStatusTypeDef

T = TypeVar("T")

# The policy jml's AWS principal needs; named in plain words when a call is denied.
REQUIRED_ACTIONS = (
    "sso:ListPermissionSets",
    "sso:DescribePermissionSet",
    "sso:ListAccountAssignmentsForPrincipal",
    "sso:CreateAccountAssignment",
    "sso:DescribeAccountAssignmentCreationStatus",
    "sso:DeleteAccountAssignment",
    "sso:DescribeAccountAssignmentDeletionStatus",
)
DEFAULT_RATE = 10.0  # calls/s: half of the 20 TPS Identity Center quota
QUOTA_RATE = 20.0
_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedException", "UnrecognizedClientException",
           "InvalidClientTokenId", "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch"}
_THROTTLED = {"ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded"}


@dataclass(frozen=True, slots=True)
class AccountGrant:
    """`PermissionSetName@AccountId`. A permission-set name may itself hold '@': split on the last."""

    permission_set: str
    account_id: str

    @classmethod
    def parse(cls, grant: str) -> AccountGrant | None:
        name, sep, account = grant.rpartition("@")
        if not sep or not name or len(account) != 12 or not account.isdigit():
            return None
        return cls(name, account)

    def __str__(self) -> str:
        return f"{self.permission_set}@{self.account_id}"


def classify_client_error(connector: str, err: Exception, instance_arn: str) -> ConnectorError:
    """A botocore exception -> our error types (the one place retry vs permanent is decided)."""
    if isinstance(err, ClientError):
        info = err.response.get("Error", {})
        code = str(info.get("Code", ""))
        vendor = str(info.get("Message", "")) or code
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        action = f"sso:{err.operation_name}"
        if code in _THROTTLED:
            return RetryableError(connector, f"{action} throttled (Identity Center APIs share 20 TPS)",
                                  status=status, vendor_message=vendor, retry_after=1.0, reason="rate_limited")
        if code in _DENIED:
            return PermanentError(
                connector,
                f"the AWS credentials may not call {action} on {instance_arn}: allow it in the IAM policy "
                f"of the role or user jml runs as (jml needs {', '.join(REQUIRED_ACTIONS)})",
                status=status, vendor_message=vendor)
        if code == "ConflictException":
            return RetryableError(connector, f"{action}: another change to this assignment is in progress",
                                  status=status, vendor_message=vendor, retry_after=2.0, reason="conflict")
        if code == "ResourceNotFoundException":
            return NotFoundError(connector, f"{action}: not found", status=status, vendor_message=vendor)
        if code == "InternalServerException" or (status is not None and status >= 500):
            return RetryableError(connector, f"{action} failed", status=status, vendor_message=vendor,
                                  reason="server_error")
        return PermanentError(connector, f"{action} rejected ({code})", status=status, vendor_message=vendor)
    if isinstance(err, NoCredentialsError):
        return PermanentError(connector, "no AWS credentials found (environment, profile or instance role)")
    if isinstance(err, (ConnectTimeoutError, ReadTimeoutError)):
        return RetryableError(connector, "sso-admin timed out", vendor_message=str(err), reason="timeout")
    if isinstance(err, (EndpointConnectionError, ConnectionClosedError)):
        return RetryableError(connector, "cannot reach sso-admin", vendor_message=str(err), reason="connection")
    return RetryableError(connector, "sso-admin call failed", vendor_message=str(err), reason="error")


class PermissionSetAssignments:
    """Assign and unassign permission sets for one Identity Center instance."""

    def __init__(
        self,
        connector: str,
        client_factory: Callable[[], SSOAdminClient],
        instance_arn: str,
        *,
        bucket: TokenBucket,
        concurrency: int = 10,
        poll_timeout: float = 60.0,
        poll_interval: float = 0.2,
    ) -> None:
        self.connector = connector
        self.instance_arn = instance_arn
        self._factory = client_factory
        self._client: SSOAdminClient | None = None
        self._bucket = bucket
        self._outstanding = asyncio.Semaphore(min(10, max(1, concurrency)))
        self._poll_timeout = poll_timeout
        self._poll_interval = poll_interval
        self._arn_by_name: dict[str, str] = {}
        self._name_by_arn: dict[str, str] = {}
        self._refresh_lock = asyncio.Lock()
        # One change at a time per (principal, account, permission set): check-then-create stays sound.
        self._locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def client(self) -> SSOAdminClient:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def open(self) -> None:
        self._client = await asyncio.to_thread(self._factory)

    async def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        await self._bucket.acquire()
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except (ClientError, BotoCoreError) as e:
            err = classify_client_error(self.connector, e, self.instance_arn)
            if isinstance(err, RetryableError) and err.reason == "rate_limited":
                self._bucket.pause(err.retry_after or 1.0)
            raise err from None

    # ---- permission sets: name <-> ARN ----------------------------------------------
    async def _refresh(self) -> None:
        async with self._refresh_lock:
            arns: list[str] = []
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"InstanceArn": self.instance_arn, "MaxResults": 100}
                if token:
                    kw["NextToken"] = token
                page = await self._call(self.client.list_permission_sets, **kw)
                arns.extend(page.get("PermissionSets", []))
                token = page.get("NextToken")
                if not token:
                    break
            for arn in arns:
                if arn not in self._name_by_arn:
                    await self._describe(arn)

    async def _describe(self, arn: str) -> str:
        out = await self._call(self.client.describe_permission_set, InstanceArn=self.instance_arn,
                               PermissionSetArn=arn)
        name = out.get("PermissionSet", {}).get("Name", arn)
        self._name_by_arn[arn] = name
        self._arn_by_name[name] = arn
        return name

    async def permission_set_arn(self, name: str) -> str | None:
        if name not in self._arn_by_name:
            await self._refresh()
        return self._arn_by_name.get(name)

    async def permission_set_name(self, arn: str) -> str:
        return self._name_by_arn.get(arn) or await self._describe(arn)

    async def provisioned(self) -> list[str]:
        """`PermissionSet@AccountId` for every permission set and each account it is provisioned to."""
        await self._refresh()
        out: list[str] = []
        for arn, name in sorted(self._name_by_arn.items()):
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"InstanceArn": self.instance_arn, "PermissionSetArn": arn, "MaxResults": 100}
                if token:
                    kw["NextToken"] = token
                page = await self._call(self.client.list_accounts_for_provisioned_permission_set, **kw)
                out.extend(str(AccountGrant(name, str(a))) for a in page.get("AccountIds", []))
                token = page.get("NextToken")
                if not token:
                    break
        return out

    # ---- reads ---------------------------------------------------------------------------
    async def _principal_assignments(self, principal_id: str, account_id: str | None = None) -> list[tuple[str, str]]:
        """(account id, permission-set ARN) pairs assigned directly to a user."""
        found: list[tuple[str, str]] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"InstanceArn": self.instance_arn, "PrincipalId": principal_id,
                                  "PrincipalType": "USER", "MaxResults": 100}
            if account_id:
                kw["Filter"] = {"AccountId": account_id}
            if token:
                kw["NextToken"] = token
            page = await self._call(self.client.list_account_assignments_for_principal, **kw)
            found.extend((a.get("AccountId", ""), a.get("PermissionSetArn", ""))
                         for a in page.get("AccountAssignments", []))
            token = page.get("NextToken")
            if not token:
                return found

    async def grants_of(self, principal_id: str) -> frozenset[str]:
        """Every `PS@ACCOUNT` the user holds directly."""
        try:
            pairs = await self._principal_assignments(principal_id)
        except NotFoundError:  # a principal unknown to the identity store holds nothing
            return frozenset()
        return frozenset([f"{await self.permission_set_name(arn)}@{account}" for account, arn in pairs])

    # ---- writes --------------------------------------------------------------------------
    def _parse(self, grant: str) -> AccountGrant:
        parsed = AccountGrant.parse(grant)
        if parsed is None:
            raise PermanentError(self.connector, f"grant {grant!r} is not PermissionSetName@AccountId "
                                                 "(a 12-digit account id)")
        return parsed

    def _lock(self, key: tuple[str, str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def assign(self, principal_id: str, grant: str) -> str:
        g = self._parse(grant)
        arn = await self.permission_set_arn(g.permission_set)
        if arn is None:
            raise PermanentError(self.connector, f"permission set {g.permission_set!r} does not exist in "
                                                 f"{self.instance_arn} (grant {grant})")
        key = (principal_id, g.account_id, arn)
        async with self._lock(key):
            if (g.account_id, arn) in await self._principal_assignments(principal_id, g.account_id):
                return "already assigned"
            async with self._outstanding:
                out = await self._call(
                    self.client.create_account_assignment, InstanceArn=self.instance_arn, TargetId=g.account_id,
                    TargetType="AWS_ACCOUNT", PermissionSetArn=arn, PrincipalType="USER", PrincipalId=principal_id)
                await self._settle(out["AccountAssignmentCreationStatus"], grant, creation=True)
        return "assigned"

    async def unassign(self, principal_id: str, grant: str) -> str:
        g = self._parse(grant)
        arn = await self.permission_set_arn(g.permission_set)
        if arn is None:
            return "permission set gone: nothing assigned"
        key = (principal_id, g.account_id, arn)
        async with self._lock(key):
            if (g.account_id, arn) not in await self._principal_assignments(principal_id, g.account_id):
                return "not assigned"
            async with self._outstanding:
                try:
                    out = await self._call(
                        self.client.delete_account_assignment, InstanceArn=self.instance_arn,
                        TargetId=g.account_id, TargetType="AWS_ACCOUNT", PermissionSetArn=arn,
                        PrincipalType="USER", PrincipalId=principal_id)
                except NotFoundError:
                    return "not assigned"
                await self._settle(out["AccountAssignmentDeletionStatus"], grant, creation=False)
        return "unassigned"

    async def _settle(self, status: AccountAssignmentOperationStatusTypeDef, grant: str, *, creation: bool) -> None:
        """Poll the async request until SUCCEEDED or FAILED (bounded by `poll_timeout`)."""
        deadline = time.monotonic() + self._poll_timeout
        delay = self._poll_interval
        verb = "assignment" if creation else "removal"
        while status.get("Status") == "IN_PROGRESS":
            if time.monotonic() > deadline:
                raise RetryableError(self.connector, f"{verb} of {grant} still in progress after "
                                                     f"{self._poll_timeout:.0f}s", reason="timeout")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            request_id = status.get("RequestId", "")
            if creation:
                c = await self._call(self.client.describe_account_assignment_creation_status,
                                     InstanceArn=self.instance_arn, AccountAssignmentCreationRequestId=request_id)
                status = c["AccountAssignmentCreationStatus"]
            else:
                d = await self._call(self.client.describe_account_assignment_deletion_status,
                                     InstanceArn=self.instance_arn, AccountAssignmentDeletionRequestId=request_id)
                status = d["AccountAssignmentDeletionStatus"]
        if status.get("Status") == "FAILED":
            raise PermanentError(self.connector, f"{verb} of {grant} failed",
                                 vendor_message=status.get("FailureReason", ""))

    # ---- jml check -----------------------------------------------------------------------
    async def check(self) -> list[CheckFinding]:
        try:
            page = await self._call(self.client.list_permission_sets, InstanceArn=self.instance_arn, MaxResults=100)
        except PermanentError as e:
            return [CheckFinding(False, str(e))]
        except ConnectorError as e:
            return [CheckFinding(False, f"{self.connector}: cannot list permission sets: {e}")]
        count = len(page.get("PermissionSets", []))
        more = "+" if page.get("NextToken") else ""
        return [CheckFinding(True, f"reached sso-admin: {count}{more} permission sets in {self.instance_arn}")]
