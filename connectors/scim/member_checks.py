"""Which groups is each leaver in? Asked together.

The SLA read-back of a leaver ends with "which groups is this account in?" — one
`members.value eq "id"` search each. Leavers finish together (their removals share a group
PATCH), so their questions wait `member_check_linger` and go as one `members.value eq a or
members.value eq b …` search without members: the usual answer is empty, which proves every one
of them out of every group in one request; any group found → each is asked apart.

An empty answer proves absence only from a server whose `or` is known to work: until
`verified:members_or`, a member jml added (the canary) rides along and the combined answer is
compared with one search each; a server whose `or` answers other groups learns
`members_or = false` and is asked one by one from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from connectors.scim import protocol as p
from connectors.scim.dialect import VERIFIED, Dialect
from jml.errors import PermanentError, RetryableError


class MemberChecksMixin:
    name: str
    groups_endpoint: str
    dialect: Dialect
    _canary: str | None
    member_check_linger: float = 0.05
    max_members_per_check: int = 20

    def __init__(self) -> None:
        self._checks: list[tuple[str, asyncio.Future[frozenset[str]]]] = []
        self._check_task: asyncio.Task[None] | None = None

    # provided by MembershipMixin / ScimConnector
    async def _groups_by_filter(self, uid: str) -> frozenset[str]:
        raise NotImplementedError

    def paginate(self, endpoint: str, filter_: str | None = None, *,
                 excluded: str | None = None) -> AsyncIterator[Mapping[str, Any]]:
        raise NotImplementedError

    def group_grant(self, display_name: str) -> str:
        raise NotImplementedError

    async def _checked_together(self, uid: str) -> frozenset[str]:
        fut: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._checks.append((uid, fut))
        if self._check_task is None or self._check_task.done():
            self._check_task = asyncio.ensure_future(self._run_checks())
        return await fut

    async def _run_checks(self) -> None:
        await asyncio.sleep(self.member_check_linger)
        while self._checks:
            batch = self._checks[: self.max_members_per_check]
            del self._checks[: len(batch)]
            try:
                answers = await self._check_batch(list(dict.fromkeys(u for u, _ in batch)))
            except BaseException as e:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else RetryableError(self.name, "interrupted"))
                if not isinstance(e, Exception):
                    raise
                continue
            for u, fut in batch:
                if not fut.done():
                    fut.set_result(answers[u])

    async def _check_batch(self, uids: list[str]) -> dict[str, frozenset[str]]:
        """Groups of each of `uids`. Trusted to prove absence only once `verified:members_or`:
        learnt by asking with a known member (the canary) beside them and comparing the
        combined answer with one search each."""
        trusted = self.dialect.get(VERIFIED + "members_or") is True
        canary = None if trusted or self._canary in uids else self._canary
        if len(uids) == 1 or (not trusted and canary is None):
            return {u: await self._groups_by_filter(u) for u in uids}
        asked = uids + ([canary] if canary else [])
        query = " or ".join(p.eq_filter("members.value", u) for u in asked)
        try:
            found = {str(g.get("displayName") or "") async for g in
                     self.paginate(self.groups_endpoint, query, excluded="members")}
        except PermanentError as e:
            if e.status not in (400, 403, 501):
                raise
            self.dialect.learn("members_or", False, f"`or` of member filters refused: HTTP {e.status}")
            return {u: await self._groups_by_filter(u) for u in uids}
        if trusted and not found:
            return {u: frozenset() for u in uids}
        each = {u: await self._groups_by_filter(u) for u in asked}
        if not trusted:
            union = {self.group_grant(n) for n in found if n}
            if union == set().union(*each.values()) and each[canary or uids[0]]:
                self.dialect.learn(VERIFIED + "members_or", True, "`or` of member filters found the canary's groups")
            else:
                self.dialect.learn("members_or", False, "`or` of member filters answered other groups than one by one")
        return {u: each[u] for u in uids}
