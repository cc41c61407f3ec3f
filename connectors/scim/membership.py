"""Group membership for the SCIM connector: PATCH on the group (RFC 7644 §3.5.2), one
writer per group at a time, groups found by displayName and created when missing.

scim2-server answers 412 to concurrent writes on one resource, and Slack answers 429
while a group is locked by another write: so every write to one group goes through an
asyncio.Lock held per group id, in order.

Group commit: everyone is in "All Staff", so 200 simultaneous leavers would otherwise
queue 200 PATCHes on that one group, one at a time. Changes that arrive while a PATCH to
the group is in flight wait together, and the next PATCH carries all of them (up to
`max_members_per_patch`); while the group is busy, the next PATCH also waits
`group_linger` first, so a stream of leavers shares fewer, larger writes. One member's
permanent error does not fail its batch-mates: a failed batch is retried member by member.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from connectors.base import ApplyResult
from connectors.scim import protocol as p
from connectors.scim.transport import ScimTransport
from jml.errors import ConflictError, NotFoundError, PermanentError, RetryableError

BUSY_WINDOW = 1.0  # seconds: a group written this recently is "busy" (see group_linger)


class MembershipMixin:
    groups_endpoint: str
    name: str
    transport: ScimTransport
    dialect: dict[str, Any]
    # Members per PATCH (AWS Identity Center: at most 100 member changes per request).
    max_members_per_patch: int = 100
    # A busy group (written within BUSY_WINDOW seconds) waits this long before its next PATCH,
    # so the changes that arrive meanwhile ride along: servers rewrite (and vendors rate-limit)
    # a group per write, and "All Staff" is in every leaver's chain. An idle group is written
    # at once. Measured: 200 leavers over 10 s, 108 -> ~50 PATCHes on a 400-member group.
    group_linger: float = 0.1

    def __init__(self) -> None:
        self._group_ids: dict[str, str] = {}
        self._group_names: dict[str, str] = {}
        self._group_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._queued: defaultdict[str, list[tuple[str, bool, asyncio.Future[None]]]] = defaultdict(list)
        self._name_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._last_write: dict[str, float] = {}

    # provided by ScimConnector
    async def capabilities(self) -> p.Capabilities:
        raise NotImplementedError

    def learn(self, key: str, value: Any, why: str) -> None:
        raise NotImplementedError

    async def search_one(self, endpoint: str, attribute: str, value: str) -> Mapping[str, Any] | None:
        raise NotImplementedError

    def paginate(self, endpoint: str, filter_: str | None = None, *,
                 excluded: str | None = None) -> AsyncIterator[Mapping[str, Any]]:
        raise NotImplementedError

    # ---- hooks ----------------------------------------------------------------------
    def group_grant(self, display_name: str) -> str:
        return f"group:{display_name}"

    def add_member_ops(self, member_ids: list[str]) -> dict[str, Any]:
        return p.add_members_patch(member_ids)

    def remove_member_ops(self, member_ids: list[str]) -> dict[str, Any]:
        if self.dialect.get("remove_member") == "value":
            return p.remove_members_by_value(member_ids)
        return p.remove_members_filtered(member_ids)

    # ---- groups ---------------------------------------------------------------------
    def group_path(self, group_id: str) -> str:
        return f"{self.groups_endpoint}/{quote(group_id, safe='')}"

    async def group_id(self, name: str, *, create: bool) -> str | None:
        """The id of group `name` (cached), created if missing and `create`."""
        if name in self._group_ids:
            return self._group_ids[name]
        async with self._name_locks[name]:  # twenty joiners of a new group create it once
            if name in self._group_ids:
                return self._group_ids[name]
            found = await self.search_one(self.groups_endpoint, "displayName", name)
            if found is None and create:
                try:
                    body = (await self.transport.send(p.post(self.groups_endpoint, p.group_payload(name)))).body
                    found = body if isinstance(body, Mapping) and body.get("id") else None
                except ConflictError:
                    pass
                # Search again even after a 201: a create that stalled past its timeout may have
                # landed between our search and our POST, making ours the younger twin. Any twin
                # landing after this search is younger than ours, so "the oldest" (search_one) is
                # the same group in every process and members never split between twins.
                found = await self.search_one(self.groups_endpoint, "displayName", name) or found
            if found is None:
                return None
            self._remember_group(str(found["id"]), name)
            return self._group_ids[name]

    def _remember_group(self, group_id: str, name: str) -> None:
        self._group_ids[name] = group_id
        self._group_names[group_id] = name

    def _forget_group(self, group_id: str) -> None:
        name = self._group_names.pop(group_id, None)
        if name is not None:
            self._group_ids.pop(name, None)

    async def change_membership(self, user: Mapping[str, Any] | None, grant: str, add: bool) -> ApplyResult:
        name = p.group_name_of(grant)
        if user is None:
            if add:
                raise NotFoundError(self.name, f"no account to add to group {name!r}")
            return ApplyResult(note="no such account")
        uid = str(user["id"])
        for _ in range(2):  # a cached id may point at a group deleted meanwhile: resolve once more
            gid = await self.group_id(name, create=add)
            if gid is None:
                return ApplyResult(remote_id=uid, note="no such group")
            try:
                await self._commit(gid, uid, add)
                return ApplyResult(remote_id=uid)
            except NotFoundError:
                self._forget_group(gid)
        raise NotFoundError(self.name, f"group {name!r} disappeared while changing it")

    async def _commit(self, gid: str, uid: str, add: bool) -> None:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued[gid].append((uid, add, mine))
        async with self._group_locks[gid]:
            # Whoever holds the lock sends everything queued so far, ours included.
            while self._queued[gid] and not mine.done():
                if time.monotonic() - self._last_write.get(gid, -BUSY_WINDOW) < BUSY_WINDOW:
                    await asyncio.sleep(self.group_linger)
                batch, self._queued[gid] = self._queued[gid], []
                try:
                    await self._flush(gid, batch)
                finally:
                    self._last_write[gid] = time.monotonic()
        await mine

    async def _flush(self, gid: str, batch: list[tuple[str, bool, asyncio.Future[None]]]) -> None:
        """Send queued changes in order, as runs of the same kind (add or remove)."""
        start = 0
        while start < len(batch):
            add = batch[start][1]
            end = start
            while end < len(batch) and batch[end][1] == add and end - start < self.max_members_per_patch:
                end += 1
            run = batch[start:end]
            await self._send_run(gid, [u for u, _, _ in run], add, [f for _, _, f in run])
            start = end

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

    async def add_members(self, group_id: str, member_ids: list[str]) -> None:
        """Callers hold the group's lock."""
        caps = await self.capabilities()
        for i in range(0, len(member_ids), self.max_members_per_patch):
            batch = member_ids[i : i + self.max_members_per_patch]
            if not caps.patch:
                await self._replace_members(group_id, add=batch)
                continue
            # Some servers answer 409 to adding a present member: that is the goal state.
            with contextlib.suppress(ConflictError):
                await self.transport.send(p.patch(self.group_path(group_id), self.add_member_ops(batch)))

    async def remove_members(self, group_id: str, member_ids: list[str]) -> None:
        """Callers hold the group's lock. Removing a non-member is success."""
        caps = await self.capabilities()
        for i in range(0, len(member_ids), self.max_members_per_patch):
            batch = member_ids[i : i + self.max_members_per_patch]
            if not caps.patch:
                await self._replace_members(group_id, remove=batch)
                continue
            try:
                await self.transport.send(p.patch(self.group_path(group_id), self.remove_member_ops(batch)))
            except PermanentError as e:
                if e.status != 400 or "remove_member" in self.dialect:
                    raise
                # RFC 7644 §3.5.2.2 allows the filtered path; some servers want the value-list form
                # (and scim2-server the reverse): try the other once and remember what worked.
                other = "value" if self.dialect.get("remove_member", "filter") == "filter" else "filter"
                self.dialect["remove_member"] = other
                try:
                    await self.transport.send(p.patch(self.group_path(group_id), self.remove_member_ops(batch)))
                except PermanentError:
                    del self.dialect["remove_member"]
                    raise
                self.learn("remove_member", other, f"remove by {other} form: {e.vendor_message}")

    async def _replace_members(self, group_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Without PATCH: read the group, PUT it back with the new member list (If-Match)."""
        resp = await self.transport.send(p.get(self.group_path(group_id)))
        group = resp.body if isinstance(resp.body, Mapping) else {}
        members = (p.member_ids(group) | set(add)) - set(remove)
        if members == p.member_ids(group):
            return
        version = (group.get("meta") or {}).get("version") or resp.etag
        await self.transport.send(p.put(self.group_path(group_id), p.group_replacement(group, members),
                                        if_match=str(version) if version else None))

    # ---- reading memberships ------------------------------------------------------------
    async def groups_of(self, user: Mapping[str, Any]) -> frozenset[str]:
        """Grant names the user holds: from `groups` if the server fills it (RFC 7643 §4.1.2),
        else by filtering Groups on members.value, else by scanning every group."""
        uid = str(user["id"])
        listed = user.get("groups")
        if isinstance(listed, list) and listed:
            names = set()
            for g in listed:
                if isinstance(g, Mapping) and (g.get("display") or g.get("value")):
                    names.add(str(g.get("display") or await self._group_name(str(g["value"]))))
            return frozenset(self.group_grant(n) for n in names if n)
        caps = await self.capabilities()
        if caps.filter and self.dialect.get("filter:members") is not False:
            verified = self.dialect.get("filter:members") is True
            try:
                found = [g async for g in self.paginate(self.groups_endpoint, p.eq_filter("members.value", uid),
                                                        excluded="members" if verified else None)]
            except PermanentError as e:
                if e.status != 400:
                    raise
                self.learn("filter:members", False, f"filter rejected: {e.vendor_message}")
            else:
                if verified or all(uid in p.member_ids(g) for g in found):
                    self.dialect["filter:members"] = True
                    return frozenset(self.group_grant(str(g.get("displayName"))) for g in found)
                self.learn("filter:members", False, "filter ignored: groups without the member returned")
        return frozenset((await self.all_memberships()).get(uid, set()))

    async def _group_name(self, group_id: str) -> str:
        if group_id not in self._group_names:
            try:
                body = (await self.transport.send(p.get(self.group_path(group_id), excludedAttributes="members"))).body
            except NotFoundError:
                return ""
            self._remember_group(group_id, str(body.get("displayName") or "") if isinstance(body, Mapping) else "")
        return self._group_names[group_id]

    async def all_memberships(self) -> dict[str, set[str]]:
        """user id -> grant names, from one pass over every group."""
        out: dict[str, set[str]] = defaultdict(set)
        async for g in self.paginate(self.groups_endpoint):
            if g.get("id") and g.get("displayName"):
                self._remember_group(str(g["id"]), str(g["displayName"]))
            for uid in p.member_ids(g):
                out[uid].add(self.group_grant(str(g.get("displayName") or "")))
        return out


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for f in futures:
        if f.done():
            continue
        if error is None:
            f.set_result(None)
        else:
            f.set_exception(error)
