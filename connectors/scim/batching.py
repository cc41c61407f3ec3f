"""How a group's queued member changes become PATCH requests (connectors/scim/membership.py
queues them, one writer per group).

Joiners' adds and leavers' or movers' removals meet on the same groups. When no member is
both added and removed, order between members does not matter: the removals and the adds
go as one PATCH with both kinds of operation (RFC 7644 §3.5.2: a PATCH is a list of
operations, applied together) — once the server has shown, by a read-back, that it applies
both; a server that refuses the mixed request or drops half of it gets the two kinds apart,
and that is remembered (`mixed_members` in the dialect). Where filtered removals were
measured to cost the server more than reading the group and replacing its member list
(connectors/scim/removal_cost.py), the whole batch goes as that one replacement instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from connectors.scim import protocol as p
from connectors.scim.dialect import Dialect
from connectors.scim.removal_cost import RemovalCosts
from connectors.scim.transport import ScimTransport
from jml.errors import ConnectorError, NotFoundError, PermanentError, RetryableError

Change = tuple[str, bool, "asyncio.Future[None]"]  # member id, add?, who waits for it
PATCH_FORMS = {"add_member": ("value",), "remove_member": ("filter", "value")}


class BatchingMixin:
    name: str
    dialect: Dialect
    transport: ScimTransport
    max_members_per_patch: int
    _canary: str | None
    removal_costs: RemovalCosts

    # provided by MembershipMixin
    def group_path(self, group_id: str) -> str:
        raise NotImplementedError

    def add_member_ops(self, member_ids: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def remove_member_ops(self, member_ids: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    async def add_members(self, group_id: str, member_ids: list[str]) -> None:
        raise NotImplementedError

    async def remove_members(self, group_id: str, member_ids: list[str]) -> None:
        raise NotImplementedError

    async def _took(self, group_id: str, ids: list[str], add: bool) -> bool:
        raise NotImplementedError

    async def members_present(self, group_id: str, ids: list[str], add: bool) -> set[str]:
        raise NotImplementedError

    async def _replace_members(self, group_id: str, add: Sequence[str] = (), remove: Sequence[str] = (), *,
                               patch: bool = False, versioned: bool = False) -> bool:
        raise NotImplementedError

    async def _flush(self, gid: str, batch: list[Change]) -> None:
        """Send queued changes: removals and adds together where the server takes that,
        else as runs of one kind (at most `max_members_per_patch` members a request)."""
        adds = {u for u, a, _ in batch if a}
        if not adds & {u for u, a, _ in batch if not a}:
            if await self._replace_batch(gid, batch):
                return
            batch = [c for c in batch if not c[1]] + [c for c in batch if c[1]]
            if adds and len(adds) < len(batch) and self._mixed_forms():
                batch = await self._send_mixed(gid, batch)
        start = 0
        while start < len(batch):
            add = batch[start][1]
            end = start
            while end < len(batch) and batch[end][1] == add and end - start < self.max_members_per_patch:
                end += 1
            run = batch[start:end]
            await self._send_run(gid, [u for u, _, _ in run], add, [f for _, _, f in run])
            start = end

    def _mixed_forms(self) -> bool:
        """Both kinds have a verified PATCH form (not a whole-list replacement), and the
        server has not refused or half-applied a mixed request."""
        if self.dialect.get("mixed_members") is False:
            return False
        return all(self.dialect.get(kind) in forms and self.dialect.verified(f"{kind}:{self.dialect.get(kind)}")
                   for kind, forms in PATCH_FORMS.items())

    async def _send_mixed(self, gid: str, batch: list[Change]) -> list[Change]:
        """One PATCH per `max_members_per_patch` changes, removals then adds; returns the
        changes still to send (all of them when the server will not take the mixed form)."""
        size = self.max_members_per_patch
        while batch:
            part, rest = batch[:size], batch[size:]
            removes = list(dict.fromkeys(u for u, a, _ in part if not a))
            adds = list(dict.fromkeys(u for u, a, _ in part if a))
            if not removes or not adds:
                return batch  # one kind left: the runs send it
            body = self.remove_member_ops(removes)
            body = {**body, "Operations": [*body["Operations"], *self.add_member_ops(adds)["Operations"]]}
            try:
                started = time.monotonic()
                await self.transport.send(p.patch(self.group_path(gid), body))
                self.removal_costs.filtered(gid, len(removes), time.monotonic() - started)
            except ConnectorError as e:
                if isinstance(e, NotFoundError) or e.status not in (400, 405, 501):
                    return batch  # the runs meet this error again, and handle it per member
                self.dialect.learn("mixed_members", False, f"a PATCH with adds and removals refused: "
                                                           f"{e.vendor_message}")
                return batch
            if not self.dialect.verified("mixed_members"):
                if not (await self._took(gid, adds, True) and await self._took(gid, removes, False)):
                    self.dialect.learn("mixed_members", False, "a PATCH with adds and removals half applied")
                    return batch  # sending them again by kind is harmless: each is a goal state
                self.dialect.learn("mixed_members", True, "adds and removals applied by one PATCH")
                self.dialect.verify("mixed_members")
            _settle([f for _, _, f in part], None)
            self._canary = adds[0]
            batch = rest
        return batch

    async def _replace_batch(self, gid: str, batch: list[Change]) -> bool:
        """Send the batch as one read of the group and one replacement of its member list,
        where its removals were measured to cost more that way (the server takes replace
        and versions its groups: If-Match keeps another writer's change). True: sent, every
        change settled; False: send it the usual way."""
        removes = list(dict.fromkeys(u for u, a, _ in batch if not a))
        if (self.dialect.get("replace_members") is False or not self.dialect.get("etag")
                or self.dialect.get("remove_member") not in PATCH_FORMS["remove_member"]
                or self.dialect.get("members_by") == "userName"
                or not self.removal_costs.prefer_replace(gid, len(removes))):
            return False
        adds = list(dict.fromkeys(u for u, a, _ in batch if a))
        futures = [f for _, _, f in batch]
        started = time.monotonic()
        try:
            if not await self._replace_members(gid, add=adds, remove=removes, patch=True, versioned=True):
                # No version to guard the replacement with: not worth a read before every batch.
                self.dialect.learn("replace_members", False, "groups read back without a version for If-Match")
                return False
        except ConnectorError as e:
            if e.status == 412:  # another writer changed the group meanwhile: the usual way
                return False
            if isinstance(e, NotFoundError) or e.status not in (400, 405, 501):
                _settle(futures, e)  # retryable, or the group vanished: each member retries alone
                return True
            self.dialect.learn("replace_members", False, f"replacing the member list refused: {e.vendor_message}")
            return False
        self.removal_costs.replaced(gid, time.monotonic() - started)
        if not self.dialect.verified("replace_members"):
            present = await self.members_present(gid, adds + removes, bool(adds))
            if not set(adds) <= present or present & set(removes):
                self.dialect.learn("replace_members", False, "a replaced member list read back unchanged")
                return False  # sending them again the usual way is harmless: each is a goal state
            self.dialect.learn("replace_members", True, "member list replaced, and read back so")
            self.dialect.verify("replace_members")
        _settle(futures, None)
        if adds:
            self._canary = adds[0]
        return True

    async def _send_run(self, gid: str, uids: list[str], add: bool, futures: list[asyncio.Future[None]]) -> None:
        ids = list(dict.fromkeys(uids))
        try:
            await (self.add_members(gid, ids) if add else self.remove_members(gid, ids))
        except PermanentError as e:
            if len(ids) == 1 or isinstance(e, NotFoundError):
                _settle(futures, e)
                return
            for uid, fut in zip(uids, futures, strict=True):  # find the member it was about
                try:
                    await (self.add_members(gid, [uid]) if add else self.remove_members(gid, [uid]))
                except Exception as one:
                    _settle([fut], one)
                else:
                    _settle([fut], None)
            return
        except BaseException as e:  # retryable, the group vanished, or cancelled: each member retries alone
            _settle(futures, e if isinstance(e, Exception) else RetryableError(self.name, "interrupted"))
            if not isinstance(e, Exception):
                raise
            return
        _settle(futures, None)
        if add and ids:
            self._canary = ids[0]


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for f in futures:
        if f.done():
            continue
        if error is None:
            f.set_result(None)
        else:
            f.set_exception(error)
