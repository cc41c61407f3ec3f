"""Group membership for the SCIM connector: PATCH on the group (RFC 7644 §3.5.2), one
writer per group at a time, groups found by displayName and created when missing.

scim2-server answers 412 to concurrent writes on one resource, and Slack answers 429
while a group is locked by another write: so every write to one group goes through an
asyncio.Lock held per group id, in order.

Group commit: everyone is in "All Staff", so 200 simultaneous leavers would otherwise
queue 200 PATCHes on that one group, one at a time. Changes that arrive while a PATCH to
the group is in flight wait together, and the next PATCH carries all of them (up to
`max_members_per_patch`); while the group is busy, the next PATCH also waits
`group_linger` first, so a stream of leavers shares fewer, larger writes. Changes nobody
waits on (joiners' and movers' grants) are held until every worker of the connector waits
too (connectors/pool.py), so a day's grants to a group share one PATCH. One member's
permanent error does not fail its batch-mates: a failed batch is retried member by member
(connectors/scim/batching.py, which also sends adds and removals as one PATCH).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from connectors import pool
from connectors.base import ApplyResult
from connectors.scim import patches
from connectors.scim import protocol as p
from connectors.scim.batching import BatchingMixin
from connectors.scim.dialect import Dialect
from connectors.scim.member_checks import MemberChecksMixin
from connectors.scim.removal_cost import RemovalCosts
from connectors.scim.transport import ScimTransport
from jml.errors import ConflictError, ConnectorError, NotFoundError, PermanentError, RetryableError

# Membership forms, in the order tried (connectors/scim/dialect.py remembers the one that works).
ADD_FORMS = ("value", "replace", "put")
REMOVE_FORMS = ("filter", "value", "replace", "put")
BUSY_WINDOW = 1.0  # seconds: a group written this recently is "busy" (see group_linger)


class MembershipMixin(BatchingMixin, MemberChecksMixin):
    groups_endpoint: str
    name: str
    transport: ScimTransport
    dialect: Dialect
    # Members per PATCH (AWS Identity Center: at most 100 member changes per request).
    max_members_per_patch: int = 100
    # A busy group (written within BUSY_WINDOW seconds) waits this long before its next PATCH,
    # so the changes that arrive meanwhile ride along: servers rewrite (and vendors rate-limit)
    # a group per write, and "All Staff" is in every leaver's chain. An idle group is written
    # at once. Measured: 200 leavers over 10 s, 108 -> ~50 PATCHes on a 400-member group.
    group_linger: float = 0.1
    # Changes nobody waits on (a joiner's or mover's grants, not a leaver's removals) wait until
    # every worker of the connector waits too (connectors/pool.py), at most this long: the day's
    # other changes to the group ride along (bench/bench_requests.py: writes per person).
    bulk_linger: float = 10.0

    def __init__(self) -> None:
        super().__init__()
        self._group_ids: dict[str, str] = {}
        self._group_names: dict[str, str] = {}
        self._group_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._queued: defaultdict[str, list[tuple[str, bool, asyncio.Future[None]]]] = defaultdict(list)
        self._name_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._last_write: dict[str, float] = {}
        self._urgent: defaultdict[str, int] = defaultdict(int)  # leavers' changes waiting per group
        self._canary: str | None = None  # a member we added (member_checks.py)
        self.removal_costs = RemovalCosts()  # filtered removal or replacement (removal_cost.py)

    # provided by ScimConnector
    async def capabilities(self) -> p.Capabilities:
        raise NotImplementedError

    async def search_one(self, endpoint: str, attribute: str, value: str) -> Mapping[str, Any] | None:
        raise NotImplementedError

    def paginate(self, endpoint: str, filter_: str | None = None, *,
                 excluded: str | None = None) -> AsyncIterator[Mapping[str, Any]]:
        raise NotImplementedError

    # ---- hooks ----------------------------------------------------------------------
    def group_grant(self, display_name: str) -> str:
        return f"group:{display_name}"

    def group_payload(self, display_name: str) -> dict[str, Any]:
        return p.group_payload(display_name)

    def add_member_ops(self, member_ids: list[str]) -> dict[str, Any]:
        return patches.add_members_patch(member_ids, self._ref_base())

    def remove_member_ops(self, member_ids: list[str]) -> dict[str, Any]:
        if self.dialect.get("remove_member") == "value":
            return patches.remove_members_by_value(member_ids, self._ref_base())
        return patches.remove_members_filtered(member_ids)

    def _ref_base(self) -> str | None:
        return f"{self.transport.base_url}Users/" if self.dialect.get("member_ref") else None

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
                    body = (await self.transport.send(p.post(self.groups_endpoint, self.group_payload(name)))).body
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

    async def change_membership(self, user: Mapping[str, Any] | None, grant: str, add: bool, *,
                                urgent: bool = True) -> ApplyResult:
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
                await self._commit(gid, uid, add, urgent)
                return ApplyResult(remote_id=uid)
            except NotFoundError:
                self._forget_group(gid)
        raise NotFoundError(self.name, f"group {name!r} disappeared while changing it")

    async def _commit(self, gid: str, uid: str, add: bool, urgent: bool = True) -> None:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queued[gid]
        queue.append((uid, add, mine))
        if urgent:
            self._urgent[gid] += 1
        workers = pool.current()
        lock = self._group_locks[gid]
        try:
            with workers.parked():  # waiting: the seat serves another person meanwhile
                await lock.acquire()
            try:
                # Whoever holds the lock sends everything queued so far, ours included.
                while self._queued[gid] and not mine.done():
                    with workers.parked():
                        if not self._urgent[gid]:
                            # Nobody waits on these: hold them until no other change can come.
                            await workers.settled(self.bulk_linger, lambda: self._urgent[gid] > 0 or len(
                                self._queued[gid]) >= self.max_members_per_patch)
                        elif time.monotonic() - self._last_write.get(gid, -BUSY_WINDOW) < BUSY_WINDOW:
                            await asyncio.sleep(self.group_linger)
                    batch, self._queued[gid] = self._queued[gid], []
                    try:
                        await self._flush(gid, batch)
                    except BaseException as e:
                        # Cancelled (the engine's limit on an attempt) or a bug: the others whose
                        # changes rode in this batch must not wait for a PATCH nobody will send.
                        error = e if isinstance(e, ConnectorError) else RetryableError(self.name, "interrupted")
                        for _, _, fut in batch:
                            if fut is not mine and not fut.done():
                                fut.set_exception(error)
                        raise
                    finally:
                        self._last_write[gid] = time.monotonic()
            finally:
                lock.release()
        finally:
            if urgent:
                self._urgent[gid] -= 1
        with workers.parked():
            await mine

    async def add_members(self, group_id: str, member_ids: list[str]) -> None:
        """Callers hold the group's lock."""
        for i in range(0, len(member_ids), self.max_members_per_patch):
            await self._change(group_id, member_ids[i : i + self.max_members_per_patch], add=True)

    async def remove_members(self, group_id: str, member_ids: list[str]) -> None:
        """Callers hold the group's lock. Removing a non-member is success."""
        for i in range(0, len(member_ids), self.max_members_per_patch):
            await self._change(group_id, member_ids[i : i + self.max_members_per_patch], add=False)

    async def _change(self, group_id: str, ids: list[str], *, add: bool) -> None:
        """Try the membership forms in order from the one remembered, until the server both
        accepts one and (the first time) the group reads back changed; remember that form.
        RFC 7644 §3.5.2.2 allows the filtered remove; others want `path: members` with a
        value list; some only drop a member when the whole list is replaced."""
        caps = await self.capabilities()
        kind = "add_member" if add else "remove_member"
        forms = (ADD_FORMS if add else REMOVE_FORMS) if caps.patch else ("put",)
        known = self.dialect.get(kind)
        order = [str(known), *[f for f in forms if f != known]] if known in forms else list(forms)
        last: Exception | None = None
        for form in order:
            try:
                await self._send_form(group_id, ids, add, form)
            except ConflictError:
                if add:  # some servers answer 409 to adding a present member: the goal state
                    return
                raise
            except ConnectorError as e:  # 501 is a 5xx, but no retry will implement the form
                if isinstance(e, NotFoundError) or e.status not in (400, 405, 501):
                    raise
                if self.dialect.verified(f"{kind}:{form}"):
                    # This form is known to work here: the refusal is about this change (a
                    # member the app will not take, a group at its size cap), not the form.
                    raise
                if "$ref" in e.vendor_message and not self.dialect.get("member_ref"):
                    self.dialect.learn("member_ref", True, e.vendor_message)
                    return await self._change(group_id, ids, add=add)
                last = e
                continue
            if self.dialect.verified(f"{kind}:{form}") or await self._took(group_id, ids, add):
                self.dialect.learn(kind, form, "accepted, and the group read back changed")
                self.dialect.verify(f"{kind}:{form}")
                return
            last = PermanentError(self.name, f"{kind.replace('_', ' ')} by {form} was accepted but ignored")
        gone = [uid for uid in ids if not await self._user_names([uid])]
        if gone and not add:
            return  # a member the app no longer has is out of every group
        if gone:  # no form can add a member the app does not have: not the server's dialect
            raise NotFoundError(self.name, f"{len(gone)} member(s) no longer exist in the app")
        self.dialect.add("cannot", "add members" if add else "remove members", str(last))
        raise last if isinstance(last, PermanentError) else PermanentError(self.name, f"cannot {kind}: {last}")

    async def _send_form(self, group_id: str, ids: list[str], add: bool, form: str) -> None:
        path = self.group_path(group_id)
        if form == "value" and add:
            await self.transport.send(p.patch(path, self.add_member_ops(ids)))
        elif form in ("value", "filter"):
            body = patches.remove_members_by_value(ids, self._ref_base()) if form == "value" else \
                patches.remove_members_filtered(ids)
            started = time.monotonic()
            await self.transport.send(p.patch(path, body))
            self.removal_costs.filtered(group_id, len(ids), time.monotonic() - started)
        else:  # replace / put: read the group, write the whole member list back
            await self._replace_members(group_id, add=ids if add else (), remove=() if add else ids,
                                        patch=form == "replace")

    async def _took(self, group_id: str, ids: list[str], add: bool) -> bool:
        """Read back: are `ids` in the group (add) or out of it (remove)?"""
        present = await self.members_present(group_id, ids, add)
        return present == set(ids) if add else not present

    async def members_present(self, group_id: str, ids: list[str], add: bool) -> set[str]:
        """Which of `ids` the group lists, read from the group. Members listed by userName
        instead of id are matched by userName (and that is remembered). A hook: servers
        whose groups read back without members (AWS) ask by members filter instead."""
        values = p.member_ids(await self._read_group(group_id))
        names = await self._user_names(ids) if self.dialect.get("members_by") == "userName" or \
            (add and not set(ids) <= values) else {}
        folded = {v.casefold() for v in values}
        present = {i for i in ids if i in values or (names.get(i) or "\0").casefold() in folded}
        if present and any(i not in values for i in present):
            self.dialect.learn("members_by", "userName", "members read back by userName")
        return present

    async def _user_names(self, ids: list[str]) -> dict[str, str]:
        out = {}
        for uid in ids:
            with contextlib.suppress(NotFoundError):
                body = (await self.transport.send(p.get(f"Users/{quote(uid, safe='')}"))).body
                if isinstance(body, Mapping) and body.get("userName"):
                    out[uid] = str(body["userName"])
        return out

    async def _read_group(self, group_id: str) -> Mapping[str, Any]:
        resp = await self.transport.send(p.get(self.group_path(group_id)))
        return resp.body if isinstance(resp.body, Mapping) else {}

    async def _replace_members(self, group_id: str, add: Sequence[str] = (), remove: Sequence[str] = (), *,
                               patch: bool = False, versioned: bool = False) -> bool:
        """Read the group, write it back with the new member list (If-Match when versioned).
        False, and nothing written, when `versioned` asks for If-Match and the group has no
        version to send: a replacement without it could undo another writer's change."""
        resp = await self.transport.send(p.get(self.group_path(group_id)))
        group = resp.body if isinstance(resp.body, Mapping) else {}
        have = p.member_ids(group)
        gone = set(remove)
        if remove and self.dialect.get("members_by") == "userName":
            gone |= {n for n in (await self._user_names(list(remove))).values()}
        members = (have | set(add)) - gone
        if members == have:
            return True
        version = (group.get("meta") or {}).get("version") or resp.etag
        if_match = str(version) if version and self.dialect.get("etag") else None
        if versioned and if_match is None:
            return False
        if patch:
            await self.transport.send(p.patch(self.group_path(group_id), patches.replace_members_patch(
                members, self._ref_base()), if_match=if_match))
        else:
            await self.transport.send(p.put(self.group_path(group_id), p.group_replacement(
                group, members, self._ref_base()), if_match=if_match))
        return True

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
        if (caps.filter and self.dialect.get("filter:members") is True and self.dialect.get("filter_or") is not False
                and self.dialect.get("members_or") is not False):
            return await self._checked_together(uid)
        return await self._groups_by_filter(uid)

    async def _groups_by_filter(self, uid: str) -> frozenset[str]:
        caps = await self.capabilities()
        if caps.filter and self.dialect.get("filter:members") is not False:
            verified = self.dialect.get("filter:members") is True
            try:
                found = [g async for g in self.paginate(self.groups_endpoint, p.eq_filter("members.value", uid),
                                                        excluded="members" if verified else None)]
            except PermanentError as e:
                if e.status != 400:
                    raise
                self.dialect.learn("filter:members", False, f"filter rejected: {e.vendor_message}")
            else:
                if verified or all(uid in p.member_ids(g) for g in found):
                    self.dialect.learn("filter:members", True, "filter on members.value answers only their groups")
                    return frozenset(self.group_grant(str(g.get("displayName"))) for g in found)
                self.dialect.learn("filter:members", False, "filter ignored: groups without the member returned")
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

