"""The AWS IAM Identity Center connector against real peers on loopback: scim2-server behind
the AWS limits wrapper, and moto's sso-admin. Every test ends by asserting the wrapper saw no
request that AWS would refuse."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from connectors.aws.assignments import AccountGrant, classify_client_error
from connectors.aws.dialect import with_required_names
from connectors.aws_identity_center import AwsIdentityCenterConnector
from jml.errors import NotFoundError, PermanentError, RetryableError
from jml.model import AccountRecord, Action, Operation
from tests.integration.contract.target_aws import AwsStack, aws_stack
from tests.peers import free_port

_seq = itertools.count(1)
DEV, RO, ADMIN = "Developer@111111111111", "ReadOnly@222222222222", "Admin@111111111111"


@pytest.fixture(scope="module")
def stack() -> Iterator[AwsStack]:
    with aws_stack() as s:
        yield s


@pytest.fixture
async def aws(stack: AwsStack) -> AsyncIterator[AwsIdentityCenterConnector]:
    stack.proxy.violations.clear()
    connector = stack.connector()
    await connector.open()
    try:
        yield connector
    finally:
        await connector.close()
    assert not stack.proxy.violations, f"requests AWS would refuse: {stack.proxy.violations}"


class Joiner:
    def __init__(self, connector: AwsIdentityCenterConnector, **attributes: str) -> None:
        n = next(_seq)
        self.c = connector
        self.employee_id = f"A{n:05d}"
        self.username = f"aws{n}@acme.example"
        self.attributes = attributes or {"given_name": "Grace", "family_name": "Hopper",
                                         "display_name": "Grace Hopper", "email": self.username}
        self.remote_id: str | None = None

    async def apply(self, action: Action, **detail: Any) -> Any:
        record = None if self.remote_id is None else AccountRecord(
            self.c.name, self.employee_id, self.username, True, self.attributes, frozenset(), remote_id=self.remote_id)
        op = Operation(self.c.name, action, self.employee_id, {"username": self.username, **detail})
        result = await self.c.apply(op, record)
        self.remote_id = result.remote_id or self.remote_id
        return result

    async def create(self) -> Any:
        return await self.apply(Action.CREATE, active=True, attributes=dict(self.attributes))


def scim(stack: AwsStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A raw request to the wrapper, as AWS's endpoint would take it."""
    req = urllib.request.Request(stack.proxy.scim_url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={**stack.peer.headers, "Content-Type": "application/scim+json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


# ---- permission-set assignments: joiner, mover, leaver ----------------------------------

async def test_grants_become_assignments_and_follow_the_person(aws: AwsIdentityCenterConnector,
                                                               stack: AwsStack) -> None:
    p = Joiner(aws)
    await p.create()
    uid = p.remote_id
    assert uid
    # Joiner: two assignments and a group.
    await p.apply(Action.ASSIGN, grant=DEV)
    await p.apply(Action.ASSIGN, grant=RO)
    await p.apply(Action.ADD_MEMBER, group="group:platform")
    again = await p.apply(Action.ASSIGN, grant=DEV)  # replay after a crash: no duplicate
    assert again.note == "already assigned"
    assert sorted(stack.assignments(uid, [DEV, RO, ADMIN])) == sorted([DEV, RO])
    read = await aws.read_account(p.employee_id, p.username, uid)
    assert read is not None and read.groups == {DEV, RO, "group:platform"}

    # Mover: Developer@111 -> Admin@111 (the planner sends unassign old + assign new).
    await p.apply(Action.UNASSIGN, grant=DEV)
    await p.apply(Action.ASSIGN, grant=ADMIN)
    assert sorted(stack.assignments(uid, [DEV, RO, ADMIN])) == sorted([RO, ADMIN])

    # Leaver: unassign + remove_member + deactivate, each twice (replays are success).
    for _ in range(2):
        for grant in (RO, ADMIN):
            await p.apply(Action.UNASSIGN, grant=grant)
        await p.apply(Action.REMOVE_MEMBER, group="group:platform")
        await p.apply(Action.DEACTIVATE)
    assert stack.assignments(uid, [DEV, RO, ADMIN]) == []
    read = await aws.read_account(p.employee_id, p.username, uid)
    assert read is not None and read.active is False and read.groups == frozenset()
    _, body = scim(stack, "GET", f"Users/{uid}")
    assert body["active"] is False


async def test_delete_removes_assignments_left_behind(aws: AwsIdentityCenterConnector, stack: AwsStack) -> None:
    p = Joiner(aws)
    await p.create()
    await p.apply(Action.ASSIGN, grant=RO)
    uid = p.remote_id
    assert uid
    await p.apply(Action.DELETE)
    assert stack.assignments(uid, [RO]) == []
    assert await aws.read_account(p.employee_id, p.username, None) is None
    await p.apply(Action.DELETE)  # already gone: success
    await p.apply(Action.UNASSIGN, grant=RO)  # no account: nothing to unassign


async def test_unknown_permission_set_and_bad_grant_are_permanent(aws: AwsIdentityCenterConnector) -> None:
    p = Joiner(aws)
    await p.create()
    with pytest.raises(PermanentError, match="permission set 'NoSuchSet' does not exist"):
        await p.apply(Action.ASSIGN, grant="NoSuchSet@111111111111")
    with pytest.raises(PermanentError, match="not PermissionSetName@AccountId"):
        await p.apply(Action.ASSIGN, grant="Developer@12345")
    assert (await p.apply(Action.UNASSIGN, grant="NoSuchSet@111111111111")).note.startswith("permission set gone")


async def test_concurrent_assignments_stay_under_the_outstanding_limit(stack: AwsStack) -> None:
    connector = stack.connector(assignment_concurrency=3)
    await connector.open()
    client = connector.assignments.client
    real_create = client.create_account_assignment
    lock, in_flight, peak = threading.Lock(), [0], [0]

    def counting_create(**kwargs: Any) -> Any:  # the real moto call, with a gauge around it
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            threading.Event().wait(0.02)
            return real_create(**kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    client.create_account_assignment = counting_create  # type: ignore[method-assign]
    try:
        people = [Joiner(connector) for _ in range(12)]
        await asyncio.gather(*(p.create() for p in people))
        await asyncio.gather(*(p.apply(Action.ASSIGN, grant=DEV) for p in people))
        await asyncio.gather(*(p.apply(Action.ASSIGN, grant=DEV) for p in people))  # replays
    finally:
        await connector.close()
    assert 1 < peak[0] <= 3
    for p in people:
        assert p.remote_id and stack.assignments(p.remote_id, [DEV]) == [DEV]


async def test_polls_an_in_progress_request_until_it_settles(aws: AwsIdentityCenterConnector,
                                                             stack: AwsStack) -> None:
    p = Joiner(aws)
    await p.create()
    assert p.remote_id
    arn = stack.permission_set("ReadOnly")
    out = stack.sso.create_account_assignment(
        InstanceArn=stack.instance_arn, TargetId="333333333333", TargetType="AWS_ACCOUNT", PermissionSetArn=arn,
        PrincipalType="USER", PrincipalId=p.remote_id)
    request_id = out["AccountAssignmentCreationStatus"]["RequestId"]
    # As AWS first answers: IN_PROGRESS. The connector asks moto until it says SUCCEEDED.
    await aws.assignments._settle({"Status": "IN_PROGRESS", "RequestId": request_id}, "ReadOnly@333333333333",
                                  creation=True)
    with pytest.raises(PermanentError, match="failed: Received a 404"):
        await aws.assignments._settle({"Status": "FAILED", "RequestId": request_id,
                                       "FailureReason": "Received a 404 status error"}, "x@333333333333",
                                      creation=True)


# ---- SCIM under AWS's limits ---------------------------------------------------------

async def test_250_member_changes_go_in_patches_of_at_most_100(aws: AwsIdentityCenterConnector,
                                                               stack: AwsStack) -> None:
    ids = []
    for i in range(250):
        status, body = scim(stack, "POST", "Users", {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"bulk{i}@acme.example",
            "name": {"givenName": "B", "familyName": str(i)}, "displayName": f"B {i}"})
        assert status == 201, body
        ids.append(body["id"])
    gid = await aws.group_id("bulk", create=True)
    assert gid
    stack.proxy.member_changes.clear()
    async with aws._group_locks[gid]:
        await aws.add_members(gid, ids)
    assert stack.proxy.member_changes == [100, 100, 50]
    _, group = scim(stack, "GET", f"Groups/{gid}")
    assert group["members"] == []  # as AWS: members are never listed...
    upstream = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{stack.peer.url}Groups/{gid}", headers=stack.peer.headers)).read())
    assert len(upstream["members"]) == 250  # ...but scim2-server holds all 250
    stack.proxy.member_changes.clear()
    async with aws._group_locks[gid]:
        await aws.remove_members(gid, ids)
    assert stack.proxy.member_changes == [100, 100, 50]
    upstream = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{stack.peer.url}Groups/{gid}", headers=stack.peer.headers)).read())
    assert not upstream.get("members")


async def test_list_accounts_pages_with_cursors(stack: AwsStack) -> None:
    _, first = scim(stack, "GET", "Users?cursor=&count=100")
    for i in range(120 - first["itemsPerPage"]):  # more users than one page holds
        scim(stack, "POST", "Users", {"userName": f"page{i}@acme.example", "displayName": "P",
                                      "name": {"givenName": "P", "familyName": str(i)}})
    aws = stack.connector(burst=1000)  # the sso-admin bucket: no waiting in this test
    await aws.open()
    try:
        p = Joiner(aws)
        await p.create()
        await p.apply(Action.ASSIGN, grant=RO)
        await p.apply(Action.ADD_MEMBER, group="group:paged")
        stack.proxy.seen.clear()
        accounts = [a async for a in aws.list_accounts()]
    finally:
        await aws.close()
    assert len(accounts) > 100 and len(accounts) == len({a.remote_id for a in accounts})
    mine = next(a for a in accounts if a.remote_id == p.remote_id)
    assert mine.groups == {RO, "group:paged"}
    pages = [s.query for s in stack.proxy.seen if s.method == "GET" and s.path.endswith("/Users")]
    assert len(pages) >= 2 and all("cursor=" in q and "startIndex" not in q for q in pages)
    assert not stack.proxy.violations, stack.proxy.violations


async def test_missing_names_are_filled_for_aws(aws: AwsIdentityCenterConnector, stack: AwsStack) -> None:
    p = Joiner(aws, email="x@acme.example")
    p.attributes = {"email": p.username}
    await p.create()
    _, body = scim(stack, "GET", f"Users/{p.remote_id}")
    assert body["name"] == {"givenName": p.username, "familyName": p.username,
                            "formatted": f"{p.username} {p.username}"}
    assert body["displayName"] == f"{p.username} {p.username}"
    assert body["emails"] == [{"value": p.username, "type": "work", "primary": True}]
    # An update that empties a name sends the fallback, never a `remove` of a required attribute.
    q = Joiner(aws)
    await q.create()
    await q.apply(Action.UPDATE, attributes={"given_name": ""},
                  all_attributes={**q.attributes, "given_name": ""})
    _, body = scim(stack, "GET", f"Users/{q.remote_id}")
    assert body["name"]["givenName"] == "Grace"  # first word of the display name
    assert with_required_names({"display_name": "Cher"}, "c@x") == {
        "display_name": "Cher", "given_name": "Cher", "family_name": "c@x"}


async def test_a_refused_payload_is_a_permanent_error_with_awss_words(aws: AwsIdentityCenterConnector,
                                                                      stack: AwsStack) -> None:
    p = Joiner(aws)
    await p.create()
    _, gbody = scim(stack, "POST", "Groups", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                              "displayName": "raw"})
    # The wrapper enforces AWS's documented limits, in AWS's error shape:
    cases = [
        ("POST", "Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "n@x"}),
        ("POST", "Users", {"userName": "m@x", "name": {"givenName": "a", "familyName": "b"}, "displayName": "a b",
                           "emails": [{"value": "a@x", "primary": True}, {"value": "b@x"}]}),
        ("POST", "Users", {"userName": "g@x", "name": {"givenName": "a", "familyName": "b"}, "displayName": "a b",
                           "groups": [{"value": gbody["id"]}]}),
        ("GET", "Users?filter=userName%20co%20%22x%22", None),
        ("GET", "Users?startIndex=1&count=10", None),
        ("GET", "Users?count=1000", None),
        ("PATCH", f"Groups/{gbody['id']}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                            "Operations": [{"op": "remove", "path": "members"}]}),
        ("PATCH", f"Groups/{gbody['id']}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                            "Operations": [{"op": "add", "path": "members",
                                                            "value": [{"value": str(i)} for i in range(101)]}]}),
        ("PUT", f"Groups/{gbody['id']}", {"displayName": "raw"}),
    ]
    for method, path, body in cases:
        status, answer = scim(stack, method, path, body)
        assert status == 400 and answer["status"] == "400" and "scimType" not in answer, (method, path, answer)
    assert len(stack.proxy.violations) == len(cases)
    stack.proxy.violations.clear()
    # ...and the connector turns AWS's 400 into a PermanentError carrying AWS's own words.
    stack.proxy.fail_next_write(400, "Request is unparsable, syntactically incorrect, or violates schema.")
    with pytest.raises(PermanentError, match="violates schema") as caught:
        await p.apply(Action.UPDATE, attributes={"title": "X"}, all_attributes={**p.attributes, "title": "X"})
    assert caught.value.status == 400
    status, dup = scim(stack, "POST", "Groups", {"displayName": "raw"})
    assert status == 409 and dup["status"] == "409" and dup["detail"]


# ---- jml check and error translation ------------------------------------------------

async def test_check_reports_in_plain_words(stack: AwsStack) -> None:
    good = stack.connector()
    bad_token = stack.connector(token="wrong")
    nowhere = stack.connector(endpoint_url=f"http://127.0.0.1:{free_port()}")
    try:
        findings = await good.check()
        assert all(f.ok for f in findings), findings
        assert any("permission sets" in f.message for f in findings)

        findings = await bad_token.check()
        assert any(not f.ok and "SCIM access token was rejected" in f.message for f in findings), findings

        findings = await nowhere.check()
        assert not findings[-1].ok and "cannot reach sso-admin" in findings[-1].message
    finally:
        for c in (good, bad_token, nowhere):
            await c.close()


def _client_error(code: str, status: int, op: str = "CreateAccountAssignment") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} message"},  # as botocore parses it
                        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "r", "HostId": "",
                                             "HTTPHeaders": {}, "RetryAttempts": 0}}, op)


@pytest.mark.parametrize(("code", "status", "kind", "words"), [
    ("ThrottlingException", 400, RetryableError, "throttled"),
    ("AccessDeniedException", 400, PermanentError, "may not call sso:CreateAccountAssignment"),
    ("ConflictException", 400, RetryableError, "in progress"),
    ("ResourceNotFoundException", 400, NotFoundError, "not found"),
    ("InternalServerException", 500, RetryableError, "failed"),
    ("ValidationException", 400, PermanentError, "rejected (ValidationException)"),
])
def test_client_errors_are_translated(code: str, status: int, kind: type[Exception], words: str) -> None:
    err = classify_client_error("aws", _client_error(code, status), "arn:aws:sso:::instance/ssoins-1")
    assert type(err) is kind and words in str(err) and f"{code} message" in str(err)


def test_connection_errors_are_retryable() -> None:
    err = classify_client_error("aws", EndpointConnectionError(endpoint_url="http://x"), "arn")
    assert isinstance(err, RetryableError) and err.reason == "connection"


def test_grant_names() -> None:
    assert AccountGrant.parse("Developer@111111111111") == AccountGrant("Developer", "111111111111")
    assert AccountGrant.parse("ops@team@111111111111") == AccountGrant("ops@team", "111111111111")
    assert AccountGrant.parse("Developer@1111") is None and AccountGrant.parse("group:eng") is None
