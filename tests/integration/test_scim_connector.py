"""The generic SCIM connector against a real scim2-server: dialects, escaping, paging,
the enterprise extension, and group writes under concurrency."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from connectors.scim import ScimConnector
from jml.errors import RetryableError
from jml.model import AccountRecord, Action, Operation
from tests.integration.contract.target_scim import ERROR, PeerReader, WriteFaultProxy, connector_for
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.proxy import VendorProxy

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


class NoPatchProxy(VendorProxy):
    """A server without PATCH: the SPC says so and PATCH answers 501 (RFC 7644 §3.5.2)."""

    async def check(self, request: Any, body: Any) -> Any:
        if request.method == "PATCH":
            return aiohttp.web.json_response({"schemas": [ERROR], "status": "501", "detail": "PATCH unsupported"},
                                             status=501)
        return None

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        if path.endswith("/ServiceProviderConfig") and isinstance(body, dict):
            body = {**body, "patch": {"supported": False}}
        return status, body


class SilentPatchProxy(VendorProxy):
    """Announces PATCH, answers 204 to PATCH on Users and does nothing: trust no 2xx."""

    async def check(self, request: Any, body: Any) -> Any:
        if request.method == "PATCH" and "/Users/" in request.path:
            return aiohttp.web.Response(status=204)
        return None


class ResourceLockProxy(WriteFaultProxy):
    """A resource is locked while one write to it is in flight; a second write meanwhile gets
    412 (Slack answers 429 the same way). scim2-server 0.8.3 itself only answers 412 to a stale
    If-Match, so the window is widened here to make overlapping writes observable."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.busy: set[str] = set()

    async def check(self, request: Any, body: Any) -> Any:
        if request.method not in ("PATCH", "PUT"):
            return await super().check(request, body)
        if request.path in self.busy:
            return aiohttp.web.json_response({"schemas": [ERROR], "status": "412", "detail": "locked"}, status=412)
        self.busy.add(request.path)
        await asyncio.sleep(0.02)
        return None

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        self.busy.discard(path)
        return status, body


class ReversedListsProxy(WriteFaultProxy):
    """Lists in the reverse order (RFC 7644 promises no order without sortBy)."""

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        if isinstance(body, dict) and isinstance(body.get("Resources"), list):
            body = {**body, "Resources": body["Resources"][::-1]}
        return status, body


@pytest.fixture
def peer() -> Iterator[ScimPeer]:
    with scim2_server() as p:
        yield p


def _proxied(peer: ScimPeer, proxy: VendorProxy, **cfg: Any) -> ScimConnector:
    proxy.start()
    return connector_for(proxy.url + "v2/", peer.token, **cfg)


@pytest.fixture
async def plain(peer: ScimPeer) -> AsyncIterator[tuple[ScimConnector, WriteFaultProxy]]:
    proxy = WriteFaultProxy(peer.url.removesuffix("/v2/"))
    c = _proxied(peer, proxy)
    await c.open()
    yield c, proxy
    await c.close()
    proxy.stop()


def op(action: Action, employee_id: str, **detail: Any) -> Operation:
    return Operation("scim", action, employee_id, detail)


ATTRS = {"given_name": "Grace", "family_name": "Hopper", "email": "grace@acme.example", "title": "Admiral"}


async def test_server_without_patch_gets_put(peer: ScimPeer) -> None:
    proxy = NoPatchProxy(peer.url.removesuffix("/v2/"))
    c = _proxied(peer, proxy)
    reader = PeerReader(peer)
    try:
        await c.open()
        assert c.caps is not None and not c.caps.patch
        res = await c.apply(op(Action.CREATE, "E1", username="grace@acme.example", active=True, attributes=ATTRS), None)
        await c.apply(op(Action.DEACTIVATE, "E1", username="grace@acme.example"), None)
        u = await reader.find("E1", "")
        assert u is not None and u["active"] is False and u["title"] == "Admiral"  # PUT kept the rest
        await c.apply(op(Action.UPDATE, "E1", username="grace@acme.example", attributes={"title": "Rear Admiral"},
                         all_attributes={**ATTRS, "title": "Rear Admiral"}), None)
        await c.apply(op(Action.ADD_MEMBER, "E1", username="grace@acme.example", group="group:navy"), None)
        await c.apply(op(Action.ADD_MEMBER, "E1", username="grace@acme.example", group="cobol"), None)
        await c.apply(op(Action.REMOVE_MEMBER, "E1", username="grace@acme.example", group="navy"), None)
        u = await reader.find("E1", "")
        assert u is not None and u["title"] == "Rear Admiral" and u["name"]["familyName"] == "Hopper"
        assert await reader.groups(res.remote_id or "") == {"cobol": 1}
        assert not [s for s in proxy.seen if s.method == "PATCH"]
        assert {s.method for s in proxy.writes()} == {"POST", "PUT"}
    finally:
        await c.close()
        proxy.stop()


async def test_silently_ignored_patch_falls_back_to_put_and_is_remembered(peer: ScimPeer) -> None:
    proxy = SilentPatchProxy(peer.url.removesuffix("/v2/"))
    c = _proxied(peer, proxy)
    reader = PeerReader(peer)
    try:
        await c.open()
        await c.apply(op(Action.CREATE, "E2", username="ann@acme.example", active=True, attributes=ATTRS), None)
        await c.apply(op(Action.DEACTIVATE, "E2", username="ann@acme.example"), None)
        u = await reader.find("E2", "")
        assert u is not None and u["active"] is False
        assert c.dialect.get("active") == "put"
        patches = len([s for s in proxy.seen if s.method == "PATCH"])
        await c.apply(op(Action.REACTIVATE, "E2", username="ann@acme.example"), None)
        assert len([s for s in proxy.seen if s.method == "PATCH"]) == patches  # straight to PUT now
        u = await reader.find("E2", "")
        assert u is not None and u["active"] is True
    finally:
        await c.close()
        proxy.stop()


async def test_username_with_quote_and_backslash_round_trips(plain: tuple[ScimConnector, WriteFaultProxy]) -> None:
    c, proxy = plain
    tricky = 'o"brien\\x@acme.example'
    res = await c.apply(op(Action.CREATE, "E3", username=tricky, active=True, attributes={}), None)
    # found by userName alone (no employee id, no remote id): the filter must be escaped right
    acct = await c.read_account("", tricky, None)
    assert acct is not None and acct.remote_id == res.remote_id and acct.username == tricky
    again = await c.apply(op(Action.CREATE, "E3-other", username=tricky, active=True, attributes={}), None)
    assert again.adopted and again.remote_id == res.remote_id
    # the proxy sees the decoded query: backslash escaped first, then the quote (RFC 7644 §3.4.2.2)
    assert any(s.query.startswith('filter=userName eq "o\\"brien\\\\x@acme.example"') for s in proxy.seen)


async def test_pagination_over_several_pages(plain: tuple[ScimConnector, WriteFaultProxy]) -> None:
    c, proxy = plain
    c.page_size = 3
    for i in range(8):
        await c.apply(op(Action.CREATE, f"P{i}", username=f"page{i}@acme.example", active=True, attributes={}), None)
    await c.apply(op(Action.ADD_MEMBER, "P5", username="page5@acme.example", group="paged"), None)
    accounts = [a async for a in c.list_accounts()]
    assert sorted(a.username for a in accounts) == sorted(f"page{i}@acme.example" for i in range(8))
    assert next(a for a in accounts if a.external_id == "P5").groups == {"group:paged"}
    user_pages = [s for s in proxy.seen if s.method == "GET" and s.path.endswith("/Users") and "startIndex" in s.query]
    assert len(user_pages) >= 3


async def test_enterprise_extension_mapping(plain: tuple[ScimConnector, WriteFaultProxy], peer: ScimPeer) -> None:
    c, _ = plain
    reader = PeerReader(peer)
    boss = await c.apply(op(Action.CREATE, "M1", username="boss@acme.example", active=True, attributes={}), None)
    attrs = {**ATTRS, "department": "Navy", "cost_center": "CC-7", "employee_number": "1906",
             "manager_id": "M1", "location": "Arlington", "country": "US", "employment_type": "Employee"}
    await c.apply(op(Action.CREATE, "E4", username="hopper@acme.example", active=True, attributes=attrs), None)
    u = await reader.find("E4", "")
    assert u is not None
    assert u[ENTERPRISE] == {"department": "Navy", "costCenter": "CC-7", "employeeNumber": "1906",
                             "manager": {"value": boss.remote_id}}
    assert u["addresses"][0]["locality"] == "Arlington" and u["userType"] == "Employee"
    await c.apply(op(Action.UPDATE, "E4", username="hopper@acme.example", attributes={"department": "Research"},
                     all_attributes={**attrs, "department": "Research"}), None)
    u = await reader.find("E4", "")
    assert u is not None and u[ENTERPRISE]["department"] == "Research" and u[ENTERPRISE]["costCenter"] == "CC-7"

    off = connector_for(c.transport.base_url, peer.token, enterprise_extension=False)
    try:
        await off.apply(op(Action.CREATE, "E5", username="noext@acme.example", active=True, attributes=attrs), None)
    finally:
        await off.close()
    u = await reader.find("E5", "")
    assert u is not None and ENTERPRISE not in u


async def test_concurrent_group_adds_avoid_412(peer: ScimPeer) -> None:
    proxy = ResourceLockProxy(peer.url.removesuffix("/v2/"))
    c = _proxied(peer, proxy)
    try:
        await _concurrent_adds(c, proxy, peer)
    finally:
        await c.close()
        proxy.stop()


async def _concurrent_adds(c: ScimConnector, proxy: VendorProxy, peer: ScimPeer) -> None:
    ids = []
    for i in range(20):
        made = await c.apply(op(Action.CREATE, f"C{i}", username=f"crowd{i}@acme.example", active=True,
                                attributes={}), None)
        ids.append(made.remote_id)
    await asyncio.gather(*(
        c.apply(op(Action.ADD_MEMBER, f"C{i}", username=f"crowd{i}@acme.example", group="group:crowd"), None)
        for i in range(20)
    ))
    async with aiohttp.ClientSession(headers=peer.headers) as s, \
            s.get(peer.url + "Groups", params={"filter": 'displayName eq "crowd"'}) as r:
        groups = (await r.json(content_type=None))["Resources"]
    assert len(groups) == 1, "the group is created once"
    assert {m["value"] for m in groups[0]["members"]} == set(ids)
    assert not [s for s in proxy.seen if s.status == 412]


async def test_check_names_a_bad_token_without_leaking_it(peer: ScimPeer) -> None:
    c = connector_for(peer.url, "wrong-token-value-123")
    try:
        findings = await c.check()
    finally:
        await c.close()
    # scim2-server serves ServiceProviderConfig without auth (RFC 7644 §4 allows it): /Users tells.
    bad = [f for f in findings if not f.ok]
    assert bad and "token was rejected" in bad[0].message and "/Users" in bad[0].message
    assert all("wrong-token-value-123" not in f.message for f in findings)
    good = connector_for(peer.url, peer.token)
    try:
        assert all(f.ok for f in await good.check())
    finally:
        await good.close()


async def test_delete_and_missing_targets_are_success(plain: tuple[ScimConnector, WriteFaultProxy]) -> None:
    c, _ = plain
    res = await c.apply(op(Action.CREATE, "D1", username="gone@acme.example", active=True, attributes={}), None)
    await c.apply(op(Action.REMOVE_MEMBER, "D1", username="gone@acme.example", group="never-made"), None)
    await c.apply(op(Action.DELETE, "D1", username="gone@acme.example"), None)
    await c.apply(op(Action.DELETE, "D1", username="gone@acme.example"), None)
    assert await c.read_account("D1", "gone@acme.example", res.remote_id) is None


def _record(employee_id: str, username: str, remote_id: str) -> AccountRecord:
    return AccountRecord("scim", employee_id, username, True, dict(ATTRS), frozenset(), remote_id=remote_id)


async def test_leaver_with_a_recorded_id_is_one_patch(plain: tuple[ScimConnector, WriteFaultProxy],
                                                      peer: ScimPeer) -> None:
    """The leaver fast path: no read before the write, and scim2-server's PATCH answer (the
    resource, RFC 7644 §3.5.2) is the read-back."""
    c, proxy = plain
    res = await c.apply(op(Action.CREATE, "E7", username="lin@acme.example", active=True, attributes=ATTRS), None)
    assert res.remote_id
    before = len(proxy.seen)
    out = await c.apply(op(Action.DEACTIVATE, "E7", username="lin@acme.example"),
                        _record("E7", "lin@acme.example", res.remote_id))
    assert out.remote_id == res.remote_id
    assert [(s.method, s.status) for s in proxy.seen[before:]] == [("PATCH", 200)]
    u = await PeerReader(peer).find("E7", "")
    assert u is not None and u["active"] is False


async def test_leaver_with_a_stale_recorded_id_is_found_by_its_keys(
        plain: tuple[ScimConnector, WriteFaultProxy], peer: ScimPeer) -> None:
    c, proxy = plain
    await c.apply(op(Action.CREATE, "E8", username="kim@acme.example", active=True, attributes=ATTRS), None)
    out = await c.apply(op(Action.DEACTIVATE, "E8", username="kim@acme.example"),
                        _record("E8", "kim@acme.example", "no-such-id"))
    u = await PeerReader(peer).find("E8", "")
    assert u is not None and u["active"] is False and out.remote_id == u["id"]
    assert ("PATCH", 404) in [(s.method, s.status) for s in proxy.seen]


async def test_leaver_fast_path_on_a_server_that_ignores_patch_learns_put(peer: ScimPeer) -> None:
    proxy = SilentPatchProxy(peer.url.removesuffix("/v2/"))
    c = _proxied(peer, proxy)
    try:
        await c.open()
        res = await c.apply(op(Action.CREATE, "E9", username="eve@acme.example", active=True, attributes=ATTRS),
                            None)
        assert res.remote_id
        await c.apply(op(Action.DEACTIVATE, "E9", username="eve@acme.example"),
                      _record("E9", "eve@acme.example", res.remote_id))
        u = await PeerReader(peer).find("E9", "")
        assert u is not None and u["active"] is False
        assert c.dialect.get("active") == "put"
    finally:
        await c.close()
        proxy.stop()


async def test_changes_to_a_busy_group_ride_together(plain: tuple[ScimConnector, WriteFaultProxy],
                                                     peer: ScimPeer) -> None:
    """Leavers trickling in one by one: the first removal goes at once, the ones arriving
    while the group is busy wait `group_linger` and share one PATCH."""
    c, proxy = plain
    c.group_linger = 0.5  # wide, so a slow test machine cannot split the batch
    made = []
    for i in range(10):
        res = await c.apply(op(Action.CREATE, f"T{i}", username=f"trickle{i}@acme.example", active=True,
                               attributes={}), None)
        made.append(AccountRecord("scim", f"T{i}", f"trickle{i}@acme.example", True, {}, frozenset(),
                                  remote_id=res.remote_id))
        await c.apply(op(Action.ADD_MEMBER, f"T{i}", username=f"trickle{i}@acme.example", group="trickle"), made[-1])
    before = len([s for s in proxy.seen if s.method == "PATCH" and "/Groups/" in s.path])

    async def leave(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        await c.apply(op(Action.REMOVE_MEMBER, f"T{i}", username=f"trickle{i}@acme.example", group="trickle"),
                      made[i])

    await asyncio.gather(*(leave(i) for i in range(10)))
    patches = len([s for s in proxy.seen if s.method == "PATCH" and "/Groups/" in s.path]) - before
    assert patches <= 2, patches  # one at once (the group was written moments ago: it waited), then the rest
    async with aiohttp.ClientSession(headers=peer.headers) as s, \
            s.get(peer.url + "Groups", params={"filter": 'displayName eq "trickle"'}) as r:
        [group] = (await r.json(content_type=None))["Resources"]
    assert not group.get("members")


async def test_twin_groups_every_process_picks_the_oldest(plain: tuple[ScimConnector, WriteFaultProxy],
                                                          peer: ScimPeer) -> None:
    """Two groups with one displayName (a create that landed after its retry made another):
    every connector instance must use the same one, the oldest, so members never split."""
    c, _ = plain
    made = await c.apply(op(Action.CREATE, "W1", username="twin1@acme.example", active=True, attributes={}), None)
    async with aiohttp.ClientSession(headers=peer.headers) as s:
        for _ in range(2):
            async with s.post(peer.url + "Groups", json={
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "twins"}) as r:
                assert r.status == 201
            await asyncio.sleep(0.01)  # distinct meta.created
        async with s.get(peer.url + "Groups", params={"filter": 'displayName eq "twins"'}) as r:
            twins = (await r.json(content_type=None))["Resources"]
    oldest = min(twins, key=lambda g: (g["meta"]["created"], g["id"]))
    for proxy in (ReversedListsProxy(peer.url.removesuffix("/v2/")), WriteFaultProxy(peer.url.removesuffix("/v2/"))):
        fresh = _proxied(peer, proxy)  # a fresh instance each time: nothing cached; lists in either order
        try:
            await fresh.open()
            await fresh.apply(op(Action.ADD_MEMBER, "W1", username="twin1@acme.example", group="twins"),
                              AccountRecord("scim", "W1", "twin1@acme.example", True, {}, frozenset(),
                                            remote_id=made.remote_id))
        finally:
            await fresh.close()
            proxy.stop()
    async with aiohttp.ClientSession(headers=peer.headers) as s, \
            s.get(peer.url + "Groups", params={"filter": 'displayName eq "twins"'}) as r:
        after = {g["id"]: [m["value"] for m in g.get("members") or []]
                 for g in (await r.json(content_type=None))["Resources"]}
    assert after[oldest["id"]] == [made.remote_id]
    assert all(not v for k, v in after.items() if k != oldest["id"])


class MembersOrLiesProxy(WriteFaultProxy):
    """An `or` of members.value filters answers no group at all (a parser that gives up)."""

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        q = urllib.parse.unquote_plus(self.last_query)
        if method == "GET" and "/Groups" in path and " or " in q and isinstance(body, dict):
            body = {**body, "totalResults": 0, "Resources": []}
        return status, body

    async def rewrite(self, method: str, path: str, query: str, body: Any) -> tuple[str, str, str, Any]:
        self.last_query = query
        return method, path, query, body


def _group_queries(proxy: VendorProxy) -> list[str]:
    out = []
    for s in proxy.seen:
        if s.method == "GET" and s.path.endswith("/Groups"):
            out += urllib.parse.parse_qs(s.query).get("filter", [])
    return [f for f in out if "members.value" in f]


async def _leavers(c: ScimConnector, n: int, prefix: str) -> list[str]:
    """n users in "staff" (the first stays a member, the canary), the rest removed again."""
    ids = []
    for i in range(n):
        made = await c.apply(op(Action.CREATE, f"{prefix}{i}", username=f"{prefix}{i}@acme.example", active=True,
                                attributes={}), None)
        ids.append(str(made.remote_id))
    rec = {i: AccountRecord("scim", f"{prefix}{i}", f"{prefix}{i}@acme.example", True, {}, frozenset(),
                            remote_id=ids[i]) for i in range(n)}
    await asyncio.gather(*(c.apply(op(Action.ADD_MEMBER, f"{prefix}{i}", username=f"{prefix}{i}@acme.example",
                                      group="staff"), rec[i]) for i in range(n)))
    await asyncio.gather(*(c.apply(op(Action.REMOVE_MEMBER, f"{prefix}{i}", username=f"{prefix}{i}@acme.example",
                                      group="staff"), rec[i]) for i in range(1, n)))
    return ids


async def _read_back(c: ScimConnector, prefix: str, ids: list[str], which: range) -> list[frozenset[str]]:
    accounts = await asyncio.gather(*(c.read_account(f"{prefix}{i}", f"{prefix}{i}@acme.example", ids[i])
                                      for i in which))
    return [a.groups for a in accounts if a is not None]


async def test_leavers_group_checks_go_together_once_verified(plain: tuple[ScimConnector, WriteFaultProxy]) -> None:
    """Leavers read back together ask for their groups in one `or` search; the first time a
    known member rides along and the answer is compared with one search each."""
    c, proxy = plain
    ids = await _leavers(c, 12, "L")
    await c.read_account("L0", "L0@acme.example", ids[0])  # one alone: learns the members filter works
    proxy.seen.clear()
    first = await _read_back(c, "L", ids, range(1, 6))
    assert first == [frozenset()] * 5
    assert c.dialect.get("verified:members_or") is True
    assert any(" or " in f and ids[0] in f for f in _group_queries(proxy))  # the canary rode along
    proxy.seen.clear()
    again = await _read_back(c, "L", ids, range(6, 12))
    assert again == [frozenset()] * 6
    queries = _group_queries(proxy)
    assert len(queries) == 1 and queries[0].count(" or ") == 5 and ids[0] not in queries[0]
    # A member among them: the combined answer is not empty, each is asked apart.
    proxy.seen.clear()
    mixed = await _read_back(c, "L", ids, range(0, 3))
    assert mixed == [frozenset({"group:staff"}), frozenset(), frozenset()]


async def test_leavers_group_checks_apart_where_or_lies(peer: ScimPeer) -> None:
    proxy = MembersOrLiesProxy(peer.url.removesuffix("/v2/"))
    proxy.last_query = ""
    c = _proxied(peer, proxy)
    try:
        await c.open()
        ids = await _leavers(c, 6, "M")
        await c.read_account("M0", "M0@acme.example", ids[0])
        got = await _read_back(c, "M", ids, range(1, 6))
        assert got == [frozenset()] * 5
        assert c.dialect.get("members_or") is False and c.dialect.get("verified:members_or") is None
        proxy.seen.clear()
        assert await _read_back(c, "M", ids, range(0, 3)) == [frozenset({"group:staff"}), frozenset(), frozenset()]
        assert not any(" or " in f for f in _group_queries(proxy))
    finally:
        await c.close()
        proxy.stop()


def _user_searches(proxy: VendorProxy) -> list[str]:
    return [f for s in proxy.seen if s.method == "GET" and s.path.endswith("/Users")
            for f in urllib.parse.parse_qs(s.query).get("filter", [])]


async def test_joiners_found_together(plain: tuple[ScimConnector, WriteFaultProxy], peer: ScimPeer) -> None:
    """Joiners created together share one `externalId or userName` search; each still finds
    only its own account (one made by hand beforehand is adopted, the rest are created)."""
    c, proxy = plain
    async with aiohttp.ClientSession(headers=peer.headers) as s, s.post(peer.url + "Users", json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "J3@acme.example"}) as r:
        assert r.status == 201
        by_hand = (await r.json(content_type=None))["id"]
    proxy.seen.clear()
    made = await asyncio.gather(*(c.apply(op(Action.CREATE, f"J{i}", username=f"J{i}@acme.example", active=True,
                                             attributes={"title": f"T{i}"}), None) for i in range(8)))
    searches = _user_searches(proxy)
    assert len(searches) == 1 and searches[0].count(" or ") == 15, searches
    assert made[3].remote_id == by_hand and made[3].adopted
    assert len({m.remote_id for m in made}) == 8 and not any(m.adopted for i, m in enumerate(made) if i != 3)
    reader = PeerReader(peer)
    for i in range(8):
        u = await reader.find(f"J{i}", "")
        assert u is not None and u["userName"] == f"J{i}@acme.example" and u["title"] == f"T{i}"


class MixedPatchProxy(WriteFaultProxy):
    """A group PATCH carrying both adds and removals: `refuse` answers 400, `half` applies
    only the removals and answers 204 (the 2xx that lies)."""

    def __init__(self, upstream: str, mode: str) -> None:
        super().__init__(upstream)
        self.mode = mode

    @staticmethod
    def mixed(body: Any) -> bool:
        kinds = {o.get("op") for o in (body or {}).get("Operations", [])} if isinstance(body, dict) else set()
        return {"add", "remove"} <= kinds

    async def check(self, request: Any, body: Any) -> Any:
        if request.method == "PATCH" and "/Groups/" in request.path and self.mixed(body) and self.mode == "refuse":
            return aiohttp.web.json_response({"schemas": [ERROR], "status": "400", "scimType": "invalidSyntax",
                                              "detail": "one operation kind per request"}, status=400)
        return await super().check(request, body)

    async def rewrite(self, method: str, path: str, query: str, body: Any) -> tuple[str, str, str, Any]:
        if method == "PATCH" and "/Groups/" in path and self.mixed(body) and self.mode == "half":
            body = {**body, "Operations": [o for o in body["Operations"] if o.get("op") == "remove"]}
        return method, path, query, body


@pytest.mark.parametrize("mode", ["rfc", "refuse", "half"])
async def test_adds_and_removals_share_one_patch_where_the_server_takes_it(peer: ScimPeer, mode: str) -> None:
    """Joiners' adds and movers' removals queued on one group together: one PATCH with both
    kinds of operation on a server that applies it (remembered once read back); a server that
    refuses it (400) or drops half of it (204) gets one PATCH per kind, remembered too; every
    member ends where asked either way."""
    proxy = MixedPatchProxy(peer.url.removesuffix("/v2/"), mode)
    c = _proxied(peer, proxy)
    try:
        await c.open()
        made = []
        for i in range(6):
            res = await c.apply(op(Action.CREATE, f"M{i}", username=f"mix{i}@acme.example", active=True,
                                   attributes={}), None)
            assert res.remote_id
            made.append(_record(f"M{i}", f"mix{i}@acme.example", res.remote_id))
        for rec in made[:3]:  # three members; the add and remove forms learnt and verified on the way
            await c.apply(op(Action.ADD_MEMBER, rec.employee_id, username=rec.username, group="mixers"), rec)
        await c.apply(op(Action.REMOVE_MEMBER, "M0", username="mix0@acme.example", group="mixers"), made[0])
        await c.apply(op(Action.ADD_MEMBER, "M0", username="mix0@acme.example", group="mixers"), made[0])
        before = len(proxy.seen)
        # Movers out (M0, M1), joiners in (M3..M5), queued together (nobody waits on them).
        await asyncio.gather(*(c.apply(op(Action.REMOVE_MEMBER, r.employee_id, username=r.username, group="mixers"), r)
                               for r in made[:2]),
                             *(c.apply(op(Action.ADD_MEMBER, r.employee_id, username=r.username, group="mixers"), r)
                               for r in made[3:]))
        patches = [s for s in proxy.seen[before:] if s.method == "PATCH" and "/Groups/" in s.path]
        if mode == "rfc":
            assert len(patches) == 1 and MixedPatchProxy.mixed(patches[0].body), patches
            assert c.dialect.get("mixed_members") is True
        else:
            assert c.dialect.get("mixed_members") is False
            assert [MixedPatchProxy.mixed(s.body) for s in patches] == [True, False, False], patches
        reader = PeerReader(peer)
        for i, rec in enumerate(made):
            assert await reader.groups(str(rec.remote_id)) == ({} if i < 2 else {"mixers": 1}), i
        # Learnt is learnt: the next mixed batch goes as asked the first time.
        before = len(proxy.seen)
        await asyncio.gather(c.apply(op(Action.REMOVE_MEMBER, "M2", username="mix2@acme.example", group="mixers"),
                                     made[2]),
                             c.apply(op(Action.ADD_MEMBER, "M0", username="mix0@acme.example", group="mixers"),
                                     made[0]))
        patches = [s for s in proxy.seen[before:] if s.method == "PATCH" and "/Groups/" in s.path]
        assert len(patches) == (1 if mode == "rfc" else 2), patches
        assert [s for s in proxy.seen[before:] if s.method == "GET" and "/Groups/" in s.path] == []
    finally:
        await c.close()
        proxy.stop()


class CountingProxy(WriteFaultProxy):
    """Holds every request 50 ms and counts how many are at the app at once."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.now = self.most = 0

    async def check(self, request: Any, body: Any) -> Any:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.now -= 1
        return await super().check(request, body)


async def test_requests_at_the_app_at_once_are_capped(peer: ScimPeer) -> None:
    """However many callers the engine lets go on (a parked chain gives its seat away), the
    app sees at most twice the connector's `concurrency` requests at once."""
    proxy = CountingProxy(peer.url.removesuffix("/v2/"))
    c = _proxied(peer, proxy, concurrency=2)
    try:
        await c.open()
        await asyncio.gather(*(c.get_user(f"missing-{i}") for i in range(20)))
        assert proxy.most == 4, proxy.most
    finally:
        await c.close()
        proxy.stop()


class CostlyRemovalProxy(WriteFaultProxy):
    """A server whose filtered removal costs 0.1 s per member (scim2-server passes over the
    group once per `members[value eq …]` operation). `mode`: `rfc` takes a replacement of
    the member list; `refuse` answers it 400 (AWS); `unversioned` sends groups without a
    version and announces no ETags; `versionless-groups` announces ETags but sends groups
    without a version. Records the If-Match of each group PATCH."""

    def __init__(self, upstream: str, mode: str) -> None:
        super().__init__(upstream)
        self.mode = mode
        self.if_match: list[str | None] = []

    @staticmethod
    def replaces(body: Any) -> bool:
        return isinstance(body, dict) and any(o.get("op") == "replace" for o in body.get("Operations", []))

    async def check(self, request: Any, body: Any) -> Any:
        if request.method == "PATCH" and "/Groups/" in request.path and isinstance(body, dict):
            self.if_match.append(request.headers.get("If-Match"))
            if self.replaces(body) and self.mode == "refuse":
                return aiohttp.web.json_response({"schemas": [ERROR], "status": "400", "scimType": "invalidValue",
                                                  "detail": "members cannot be replaced"}, status=400)
            await asyncio.sleep(0.1 * sum(1 for o in body.get("Operations", [])
                                          if str(o.get("path", "")).startswith("members[")))
        return await super().check(request, body)

    def keeps_etag(self, path: str) -> bool:
        return self.mode != "unversioned" and not (self.mode == "versionless-groups" and "/Groups" in path)

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        if self.mode in ("unversioned", "versionless-groups") and isinstance(body, dict):
            if path.endswith("/ServiceProviderConfig"):
                if self.mode == "unversioned":
                    body = {**body, "etag": {"supported": False}}
            elif isinstance(body.get("meta"), dict) and (self.mode == "unversioned" or "/Groups" in path):
                body = {**body, "meta": {k: v for k, v in body["meta"].items() if k != "version"}}
        return status, body


@pytest.mark.parametrize("mode", ["rfc", "refuse", "unversioned", "versionless-groups"])
async def test_costly_removals_replace_the_member_list_where_that_is_cheaper(peer: ScimPeer, mode: str) -> None:
    """Filtered removals timed per member; a batch predicted over the budget goes as one read
    of the group and one replacement of its member list with If-Match (read back once, then
    trusted, and chosen while measured cheaper); a server that refuses the replacement, or
    versions nothing to guard it with, keeps the filtered form. Every member ends where asked."""
    proxy = CostlyRemovalProxy(peer.url.removesuffix("/v2/"), mode)
    c = _proxied(peer, proxy)
    try:
        await c.open()
        c.removal_costs.budget = 0.2
        made = []
        for i in range(10):
            res = await c.apply(op(Action.CREATE, f"R{i}", username=f"rm{i}@acme.example", active=True,
                                   attributes={}), None)
            assert res.remote_id
            made.append(_record(f"R{i}", f"rm{i}@acme.example", res.remote_id))
        for rec in made:
            await c.apply(op(Action.ADD_MEMBER, rec.employee_id, username=rec.username, group="all"), rec)
        await c.apply(op(Action.REMOVE_MEMBER, "R0", username="rm0@acme.example", group="all"), made[0])
        per_member, _ = c.removal_costs.figures(next(iter(c._group_names)))
        assert per_member is not None and per_member >= 0.1

        async def remove(recs: list[AccountRecord]) -> list[Any]:
            before = len(proxy.seen)
            await asyncio.gather(*(c.apply(op(Action.REMOVE_MEMBER, r.employee_id, username=r.username,
                                              group="all"), r) for r in recs))
            return [s for s in proxy.seen[before:] if "/Groups/" in s.path]

        first = await remove(made[1:4])
        second = await remove(made[4:7])
        reader = PeerReader(peer)
        for i, rec in enumerate(made):
            assert await reader.groups(str(rec.remote_id)) == ({} if i < 7 else {"all": 1}), i
        if mode == "rfc":
            # read, replace, read back (the form is new); then read and replace only
            assert [(s.method, CostlyRemovalProxy.replaces(s.body)) for s in first] == \
                [("GET", False), ("PATCH", True), ("GET", False)], first
            assert [(s.method, CostlyRemovalProxy.replaces(s.body)) for s in second] == \
                [("GET", False), ("PATCH", True)], second
            assert proxy.if_match[-1] and proxy.if_match[-2], proxy.if_match
            assert c.dialect.get("replace_members") is True
        else:
            patches = [s for s in first + second if s.method == "PATCH"]
            assert not any(CostlyRemovalProxy.replaces(s.body) for s in patches[1:]), patches
            assert len([s for s in second if s.method == "PATCH"]) == 1, second
            assert c.dialect.get("replace_members") is (None if mode == "unversioned" else False)
            if mode == "versionless-groups":
                # ETags announced, a group read back without a version: learnt once, so the next
                # costly batch is not preceded by a read that cannot guard a replacement.
                assert [s.method for s in first] == ["GET", "PATCH"] and [s.method for s in second] == ["PATCH"]
    finally:
        await c.close()
        proxy.stop()


async def test_a_cancelled_group_write_fails_the_changes_that_rode_in_it(
        plain: tuple[ScimConnector, WriteFaultProxy]) -> None:
    """The chain holding a group's lock sends everyone's queued changes; cancelled mid-PATCH
    (the engine's limit on an attempt), the others' changes fail as retryable at once instead
    of waiting for a PATCH nobody will send."""
    c, _ = plain
    made = []
    for i in range(2):
        res = await c.apply(op(Action.CREATE, f"K{i}", username=f"k{i}@acme.example", active=True, attributes={}),
                            None)
        made.append(_record(f"K{i}", f"k{i}@acme.example", str(res.remote_id)))
    await c.apply(op(Action.ADD_MEMBER, "K0", username="k0@acme.example", group="stuck"), made[0])
    sending = asyncio.Event()

    async def hung_flush(gid: str, batch: list[Any]) -> None:
        sending.set()
        await asyncio.sleep(3600)

    c._flush = hung_flush  # type: ignore[method-assign]
    # Both queued before the PATCH goes (grants nobody waits on are held a moment): one batch.
    first = asyncio.ensure_future(c.apply(op(Action.ADD_MEMBER, "K1", username="k1@acme.example",
                                             group="stuck"), made[1]))
    second = asyncio.ensure_future(c.apply(op(Action.REMOVE_MEMBER, "K0", username="k0@acme.example",
                                              group="stuck"), made[0]))
    await asyncio.wait_for(sending.wait(), 5)
    first.cancel()  # the lock holder, sending both
    with pytest.raises(RetryableError, match="interrupted"):
        await asyncio.wait_for(second, 5)
