"""The connector contract, run over every `target_*.py` beside this file.

Each test goes through `target.connector` (apply / read_account) only, and checks the
outcome on the peer's side with `target.inspect`. The factory yields a connector that is
not opened yet: this suite opens and closes it.

An optional `target.extra["member_count"](employee_id, username, grant) -> int` lets the
idempotency test count memberships on the peer.
"""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jml.errors import PermanentError, RetryableError
from jml.model import AccountRecord, Action, Operation
from tests.integration.contract.harness import ContractTarget, TargetFactory

HERE = Path(__file__).parent
TARGETS: dict[str, TargetFactory] = {
    path.stem.removeprefix("target_"): importlib.import_module(f"{__package__}.{path.stem}").TARGET
    for path in sorted(HERE.glob("target_*.py"))
}
_seq = itertools.count(1)


@pytest.fixture(params=sorted(TARGETS))
async def target(request: pytest.FixtureRequest) -> AsyncIterator[ContractTarget]:
    async with TARGETS[request.param]() as t:
        await t.connector.open()
        try:
            yield t
        finally:
            await t.connector.close()


class Person:
    """A fresh person per test: short usernames (Slack allows 21 characters)."""

    def __init__(self, target: ContractTarget) -> None:
        n = next(_seq)
        self.t = target
        self.employee_id = f"E{n:05d}"
        self.username = f"p{n}@acme.example"
        self.remote_id: str | None = None

    def op(self, action: Action, **detail: Any) -> Operation:
        return Operation(self.t.connector.name, action, self.employee_id, {"username": self.username, **detail})

    def record(self) -> AccountRecord | None:
        if self.remote_id is None:
            return None
        return AccountRecord(self.t.connector.name, self.employee_id, self.username, True,
                             dict(self.t.attributes), frozenset(), remote_id=self.remote_id)

    async def apply(self, action: Action, **detail: Any) -> Any:
        result = await self.t.connector.apply(self.op(action, **detail), self.record())
        if result.remote_id:
            self.remote_id = result.remote_id
        return result

    async def create(self, active: bool = True) -> Any:
        return await self.apply(Action.CREATE, active=active, attributes=dict(self.t.attributes))

    async def inspect(self) -> Any:
        return await self.t.inspect(self.employee_id, self.username)


async def test_create(target: ContractTarget) -> None:
    p = Person(target)
    result = await p.create()
    assert result.remote_id and not result.adopted
    remote = await p.inspect()
    assert remote is not None and remote.active and remote.remote_id == result.remote_id
    assert remote.username.casefold() == p.username.casefold()
    read = await target.connector.read_account(p.employee_id, p.username, result.remote_id)
    assert read is not None and read.remote_id == result.remote_id and read.active


async def test_attribute_update(target: ContractTarget) -> None:
    """Either capability is a case of this test, never a skip. A target that updates attributes
    shows the new title on the peer. One that cannot (its app has no such field, or the profile
    belongs to its user) accepts the update without error — a planned update must not dead-letter —
    and leaves the account as it was: the same account, still active, its grants kept."""
    p = Person(target)
    created = await p.create()
    await p.apply(Action.ADD_MEMBER, group=target.grants[0])
    full = {**target.attributes, "title": "Principal Engineer"}
    result = await p.apply(Action.UPDATE, attributes={"title": "Principal Engineer"}, all_attributes=full)
    remote = await p.inspect()
    assert remote is not None and remote.remote_id == created.remote_id and remote.active
    assert target.grants[0] in remote.groups
    if target.supports_update:
        assert remote.attributes.get("title") == "Principal Engineer"
    else:
        assert remote.attributes.get("title") != "Principal Engineer", remote.attributes
        assert not result.adopted and result.remote_id in (None, created.remote_id)


async def test_group_add_remove(target: ContractTarget) -> None:
    p = Person(target)
    await p.create()
    first, second = target.grants
    await p.apply(Action.ADD_MEMBER, group=first)
    await p.apply(Action.ADD_MEMBER, group=second)
    remote = await p.inspect()
    assert remote is not None and {first, second} <= remote.groups
    await p.apply(Action.REMOVE_MEMBER, group=first)
    remote = await p.inspect()
    assert remote is not None and first not in remote.groups and second in remote.groups
    read = await target.connector.read_account(p.employee_id, p.username, p.remote_id)
    assert read is not None and first not in read.groups and second in read.groups


async def test_deactivate_then_reactivate(target: ContractTarget) -> None:
    p = Person(target)
    await p.create()
    await p.apply(Action.DEACTIVATE)
    remote = await p.inspect()
    assert remote is not None and remote.active is False
    read = await target.connector.read_account(p.employee_id, p.username, p.remote_id)
    assert read is not None and read.active is False
    await p.apply(Action.REACTIVATE)
    remote = await p.inspect()
    assert remote is not None and remote.active is True


async def test_leaver_deactivate_then_removals(target: ContractTarget) -> None:
    """A leaver's chain as the planner orders it (deactivate, then every removal), with the
    account recorded: ends with no active account and no grants, on the peer and read back."""
    p = Person(target)
    await p.create()
    for grant in target.grants:
        await p.apply(Action.ADD_MEMBER, group=grant)
    await p.apply(Action.DEACTIVATE)
    for grant in target.grants:
        await p.apply(Action.REMOVE_MEMBER, group=grant)
    remote = await p.inspect()
    assert remote is None or (not remote.active and not remote.groups), remote
    read = await target.connector.read_account(p.employee_id, p.username, p.remote_id)
    assert read is None or (not read.active and not read.groups), read


async def test_idempotent_reapply(target: ContractTarget) -> None:
    p = Person(target)
    first = await p.create()
    p.remote_id = None  # as after a crash between "pushed" and "recorded"
    again = await p.create()
    assert again.remote_id == first.remote_id
    await p.apply(Action.ADD_MEMBER, group=target.grants[0])
    await p.apply(Action.ADD_MEMBER, group=target.grants[0])
    remote = await p.inspect()
    assert remote is not None and remote.remote_id == first.remote_id and target.grants[0] in remote.groups
    count = (target.extra or {}).get("member_count")
    if count is not None:
        assert await count(p.employee_id, p.username, target.grants[0]) == 1


async def test_adopt_on_conflict(target: ContractTarget) -> None:
    p = Person(target)
    await target.precreate(p.username, p.employee_id)
    before = await p.inspect()
    assert before is not None
    result = await p.create()
    assert result.adopted and result.remote_id == before.remote_id
    after = await p.inspect()
    assert after is not None and after.remote_id == before.remote_id and after.active


async def test_adopt_by_username_without_external_id(target: ContractTarget) -> None:
    p = Person(target)
    await target.precreate(p.username, None)
    before = await p.inspect()
    assert before is not None
    result = await p.create()
    assert result.adopted and result.remote_id == before.remote_id


async def test_delete_after_remote_removal_is_success(target: ContractTarget) -> None:
    """A delete of an account already gone from the app (a 404) is success, on every target —
    also where the app cannot delete (a GitHub org removes the membership; the user is GitHub's),
    which the connector declares to the planner, so that no planned delete is sent there."""
    assert target.connector.traits.can_delete is target.supports_delete
    p = Person(target)
    await p.create()
    await target.remove_remote(p.username)
    await p.apply(Action.DELETE)  # a 404 on delete is success
    remote = await p.inspect()
    if target.supports_delete:
        assert remote is None, remote
    else:  # the app keeps its own user; jml's access is what is gone
        assert remote is None or (not remote.active and not remote.groups), remote


async def test_retry_after_429(target: ContractTarget) -> None:
    p = Person(target)
    target.inject_429(1.0)
    with pytest.raises(RetryableError) as caught:
        await p.create()
    assert caught.value.retry_after is not None and abs(caught.value.retry_after - 1.0) < 0.01
    started = time.monotonic()
    result = await p.create()  # the engine's next attempt
    assert result.remote_id
    assert time.monotonic() - started >= 0.5, "the connector should hold writes until Retry-After passes"
    assert await p.inspect() is not None


async def test_permanent_error_carries_vendor_message(target: ContractTarget) -> None:
    p = Person(target)
    target.inject_permanent("seat quota exhausted for plan Basic")
    with pytest.raises(PermanentError) as caught:
        await p.create()
    assert "seat quota exhausted for plan Basic" in str(caught.value)
