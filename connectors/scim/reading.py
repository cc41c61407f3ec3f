"""Reading a SCIM server: list and search requests, paging, and finding users and groups,
without trusting what a server says it supports (connectors/scim/dialect.py).

A mixin of ScimConnector: pagination follows `itemsPerPage`/`totalResults` as given; a
server that errors on `count` or `excludedAttributes` is asked without; a filter whose
answers do not match it is replaced by a paged index (connectors/scim/index.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from connectors.base import ConnectorContext
from connectors.scim import protocol as p
from connectors.scim.dialect import Dialect
from connectors.scim.index import ResourceIndex
from connectors.scim.transport import ScimTransport
from jml.errors import ConnectorError, NotFoundError, RetryableError
from jml.model import RemoteAccount

log = logging.getLogger("connectors.scim.connector")

User = Mapping[str, Any]


class ReadingMixin:
    name: str
    users_endpoint: str
    groups_endpoint: str
    page_size: int
    transport: ScimTransport
    dialect: Dialect
    user_index: ResourceIndex
    group_index: ResourceIndex
    _manager_refs: dict[str, str]
    ctx: ConnectorContext

    if TYPE_CHECKING:  # provided by the other mixins / ScimConnector (no runtime stubs: MRO)
        async def capabilities(self) -> p.Capabilities:
            raise NotImplementedError

        @property
        def enterprise(self) -> bool:
            raise NotImplementedError

        def find_user_filters(self, employee_id: str, username: str) -> list[tuple[str, str]]:
            raise NotImplementedError

        async def groups_of(self, user: Mapping[str, Any]) -> frozenset[str]:
            raise NotImplementedError

        async def all_memberships(self) -> dict[str, set[str]]:
            raise NotImplementedError

    # People looked up together share one `or` search: those waiting when it starts (after one
    # pass of the event loop, so a burst's joiners ride together) and those that queue while it
    # is in flight. No timed linger: at 8 workers, 20 ms of it held creates to 0.73 of what a
    # bare client reaches against the same server; without it, 0.95-1.03 (bench/bench_apply.py).
    search_linger: float = 0.0
    max_people_per_search: int = 10

    def __init__(self) -> None:
        super().__init__()
        self._searches: list[tuple[list[tuple[str, str]], asyncio.Future[tuple[User | None, bool]]]] = []
        self._search_task: asyncio.Task[None] | None = None

    async def query(self, endpoint: str, filter_: str | None = None, *, count: int | None = None,
                    start_index: int | None = None, cursor: str | None = None,
                    excluded: str | None = None) -> Any:
        """One list/search request. `count` and `excludedAttributes` are optional to a
        server: one that errors on them (some answer any `?count=` with a 500 page) is asked
        again without, and that is remembered."""
        if self.dialect.get("count") is False:
            count = None
        if self.dialect.get("excluded") is False:
            excluded = None
        req = p.search(endpoint, filter_, count=count, start_index=start_index, cursor=cursor, excluded=excluded)
        try:
            return (await self.transport.send(req)).body
        except ConnectorError as e:
            if (count is None and excluded is None) or e.status not in (400, 500, 501):
                raise
            bare = p.search(endpoint, filter_, start_index=start_index, cursor=cursor)
            try:
                body = (await self.transport.send(bare)).body
            except ConnectorError:
                raise e from None
            if count is not None:
                self.dialect.learn("count", False, f"HTTP {e.status} to ?count=: {e.vendor_message}")
            else:
                self.dialect.learn("excluded", False, f"HTTP {e.status} to excludedAttributes")
            return body

    async def paginate(self, endpoint: str, filter_: str | None = None, *,
                       excluded: str | None = None) -> AsyncIterator[User]:
        caps = await self.capabilities()
        if caps.cursor:
            cursor = ""
            while True:  # RFC 9865 §2: follow nextCursor until it is absent
                body = await self.query(endpoint, filter_, count=self.page_size, cursor=cursor, excluded=excluded)
                for r in p.resources_of(body):
                    yield r
                next_cursor = body.get("nextCursor") if isinstance(body, Mapping) else None
                if not next_cursor:
                    return
                cursor = str(next_cursor)
        start, seen = 1, set[str]()
        while True:  # RFC 7644 §3.4.2.4: 1-based startIndex; stop on an empty page or past the total
            body = await self.query(endpoint, filter_, count=self.page_size, start_index=start, excluded=excluded)
            page = p.resources_of(body)
            ids = {str(r.get("id")) for r in page}
            if page and ids <= seen:  # a server that ignores startIndex answers page one again
                self.dialect.learn("start_index", False, "startIndex ignored: the same page again")
                return
            seen |= ids
            for r in page:
                yield r
            total = body.get("totalResults") if isinstance(body, Mapping) else None
            per_page = body.get("itemsPerPage") if isinstance(body, Mapping) else None
            if isinstance(per_page, int) and page and per_page < self.page_size and isinstance(total, int) \
                    and total > per_page:
                self.dialect.learn("page_cap", per_page, f"asked for {self.page_size}, got pages of {per_page}")
            start += len(page)
            if not page or (isinstance(total, int) and start > total):
                return

    def user_path(self, remote_id: str) -> str:
        return f"{self.users_endpoint}/{quote(remote_id, safe='')}"

    async def get_user(self, remote_id: str) -> User | None:
        try:
            body = (await self.transport.send(p.get(self.user_path(remote_id)))).body
        except NotFoundError:
            return None
        return body if isinstance(body, Mapping) and body.get("id") else None

    async def find_user(self, employee_id: str, username: str, remote_id: str | None = None, *,
                        old_username: str | None = None, combined: bool = True) -> User | None:
        if remote_id:
            user = await self.get_user(remote_id)
            if user is not None:
                return user
        tried = self.find_user_filters(employee_id, username)
        if old_username and old_username != username:
            tried += self.find_user_filters("", old_username)  # a rename still in flight
        if combined and len(tried) > 1:
            found, answered = await self._search_any(tried)
            if answered:
                return found
        for attribute, value in tried:
            found = await self.search_one(self.users_endpoint, attribute, value)
            if found is not None:
                return found
        return None

    async def _search_any(self, tried: list[tuple[str, str]]) -> tuple[User | None, bool]:
        """All the ways to find a person in one request (`a eq "x" or b eq "y"`, RFC 7644
        §3.4.2.2), the first clause that matches wins. (None, False) when this server cannot
        be asked so (or lied about it once): the caller searches one attribute at a time.
        People looked up together (a day's joiners) share one request: their clauses go as one
        `or` (at most `max_people_per_search` people) with those of everyone else waiting."""
        caps = await self.capabilities()
        if self.dialect.get("filter_or") is False or not caps.filter or any(
                self.dialect.get(f"filter:{self.users_endpoint}:{a}") is False for a, _ in tried):
            return None, False
        fut: asyncio.Future[tuple[User | None, bool]] = asyncio.get_running_loop().create_future()
        self._searches.append((tried, fut))
        if self._search_task is None or self._search_task.done():
            self._search_task = asyncio.ensure_future(self._run_searches())
        return await fut

    async def _run_searches(self) -> None:
        await asyncio.sleep(self.search_linger)
        while self._searches:
            batch = self._searches[: self.max_people_per_search]
            del self._searches[: len(batch)]
            try:
                answers = await self._search_batch([t for t, _ in batch])
            except BaseException as e:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else RetryableError(self.name, "interrupted"))
                if not isinstance(e, Exception):
                    raise
                continue
            for (_, fut), answer in zip(batch, answers, strict=True):
                if not fut.done():
                    fut.set_result(answer)

    async def _search_batch(self, trieds: list[list[tuple[str, str]]]) -> list[tuple[User | None, bool]]:
        clauses = list(dict.fromkeys(c for tried in trieds for c in tried))
        asked_apart: list[tuple[User | None, bool]] = [(None, False)] * len(trieds)
        try:
            body = await self.query(self.users_endpoint, " or ".join(p.eq_filter(a, v) for a, v in clauses),
                                    count=10 * len(trieds))
        except ConnectorError as e:
            if e.status not in (400, 501):
                raise
            self.dialect.learn("filter_or", False, f"`or` refused: HTTP {e.status} {e.vendor_message}")
            return asked_apart
        resources = p.resources_of(body)
        if any(not any(_matches(r, a, v) for a, v in clauses) for r in resources):
            self.dialect.learn("filter_or", False, "`or` answered resources that match no clause")
            return asked_apart
        total = body.get("totalResults") if isinstance(body, Mapping) else None
        if isinstance(total, int) and total > len(resources):
            return asked_apart  # a page short of the answer: ask each alone rather than page an `or`
        out: list[tuple[User | None, bool]] = []
        for tried in trieds:
            for attribute, value in tried:
                found = _oldest(self.name, self.users_endpoint, attribute, value,
                                [r for r in resources if _matches(r, attribute, value)])
                if found is not None:
                    out.append((found, True))
                    break
            else:
                out.append((None, True))
        return out

    async def search_one(self, endpoint: str, attribute: str, value: str) -> User | None:
        """The resource whose `attribute` equals `value`. By filter while the server's
        answers match it; a server that ignores or refuses the filter is read through a
        paged index instead (never `Resources[0]` on trust)."""
        key = f"filter:{endpoint}:{attribute}"
        caps = await self.capabilities()
        if self.dialect.get(key) is False or not caps.filter:
            return await self.indexed(endpoint, attribute, value)
        try:
            body = await self.query(endpoint, p.eq_filter(attribute, value), count=10)
        except ConnectorError as e:
            if e.status not in (400, 403, 501) or (e.status == 403 and "filter" not in e.vendor_message.lower()):
                raise
            if '"' not in value and "\\" not in value:
                # Only a plain value's refusal speaks for the filter; an escaped quote or
                # backslash that a server's parser chokes on is about this value alone.
                self.dialect.learn(key, False, f"filter refused: HTTP {e.status} {e.vendor_message}")
            return await self.indexed(endpoint, attribute, value)
        resources = p.resources_of(body)
        matches = [r for r in resources if _matches(r, attribute, value)]
        if len(matches) < len(resources):
            self.dialect.learn(key, False, "filter ignored: answered resources that do not match")
            return await self.indexed(endpoint, attribute, value)
        return _oldest(self.name, endpoint, attribute, value, matches)

    async def indexed(self, endpoint: str, attribute: str, value: str) -> User | None:
        """Look `value` up in the paged listing, then read the resource itself (fresh)."""
        index = self.user_index if endpoint == self.users_endpoint else self.group_index
        if index.stale:
            await index.rebuild(self.paginate(endpoint))
        found = []
        for rid in index.lookup(attribute, value):
            try:
                body = (await self.transport.send(p.get(f"{endpoint}/{quote(rid, safe='')}"))).body
            except NotFoundError:
                index.remove(rid)
                continue
            if isinstance(body, Mapping) and _matches(body, attribute, value):
                found.append(body)
        return _oldest(self.name, endpoint, attribute, value, found)

    async def manager_ref(self, attrs: Mapping[str, str]) -> str | None:
        """The manager's remote id: as jml recorded it, else found by externalId (= their
        employee_id), else None."""
        manager = attrs.get("manager_id")
        if not manager or not self.enterprise:
            return None
        if manager not in self._manager_refs:
            ref = self.ctx.remote_id_of(manager)
            if ref is None:
                found = await self.search_one(self.users_endpoint, "externalId", manager)
                if found is None:
                    return None
                ref = str(found["id"])
            self._manager_refs[manager] = ref
        return self._manager_refs[manager]

    # ---- reading --------------------------------------------------------------------
    async def read_account(self, employee_id: str, username: str, remote_id: str | None) -> RemoteAccount | None:
        await self.capabilities()
        user = await self.find_user(employee_id, username, remote_id)
        if user is None:
            return None
        return self.to_remote(user, await self.groups_of(user))

    def to_remote(self, user: User, groups: frozenset[str]) -> RemoteAccount:
        ext = user.get("externalId")
        return RemoteAccount(remote_id=str(user["id"]), username=str(user.get("userName") or ""),
                             active=p.is_active(user), external_id=str(ext) if ext else None,
                             attributes=p.user_attributes(user), groups=groups)

    async def list_accounts(self) -> AsyncIterator[RemoteAccount]:
        await self.capabilities()
        memberships = await self.all_memberships()
        async for user in self.paginate(self.users_endpoint):
            if user.get("id"):
                yield self.to_remote(user, frozenset(memberships.get(str(user["id"]), set())))


def _matches(resource: Mapping[str, Any], attribute: str, value: str) -> bool:
    have = str(resource.get(attribute) or "")
    # userName and displayName are caseExact=false (RFC 7643 §4.1.1, §4.2); ids are exact.
    return have == value or (attribute not in ("externalId", "id") and have.casefold() == value.casefold())


def _oldest(connector: str, endpoint: str, attribute: str, value: str,
            matches: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if len(matches) > 1:
        # Twins (displayName need not be unique, RFC 7643 §4.2): e.g. a create that stalled
        # past its timeout and landed after the retry made another. Every process must pick
        # the same one, or members split between them: the oldest, then the smallest id.
        log.warning("%s: %d resources in %s with %s %r: using the oldest", connector, len(matches), endpoint,
                    attribute, value)
        return min(matches, key=_age)
    return matches[0] if matches else None


def _age(resource: Mapping[str, Any]) -> tuple[str, str]:
    meta = resource.get("meta")
    created = str(meta.get("created") or "") if isinstance(meta, Mapping) else ""
    return created or "\uffff", str(resource.get("id") or "")

