"""Four independently written SCIM 2.0 servers, each as a real subprocess on loopback, and what
each of them actually does (tests/scim_peers/FINDINGS.md explains every fact).

The facts are data (FACTS, one dict per peer) and every test asserts them: when a peer's
behaviour changes (a package upgrade), a test fails and names the fact. Nothing here is
skipped or expected to fail; a "quirk" is asserted like any other behaviour.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest

from tests.peers import ScimPeer
from tests.scim_peers import ALL_PEERS

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

# What each peer does, observed against the package versions pinned in tests/scim_peers and the
# dev extra. Keys are explained in FINDINGS.md ("Fact keys").
FACTS: dict[str, dict[str, Any]] = {
    "scim2-server": {
        "patch_noop_status": 204,
        "spc": {"etag": True, "bulk": True, "sort": True, "filter_max": 1000},
        "location_header_on_create": True,
        "meta_location": "absolute",
        "etag": "version",
        "dropped_on_create": set(),
        "filter_username_case_insensitive": True,
        "filter_escaped_quote": 200,
        "dup_external_id": 201,
        "filter_external_id_case_insensitive": False,
        "filter_and": 200,
        "filter_sw": 200,
        "filter_members_value": 200,
        "bad_filter": (400, "json"),
        "items_per_page": "returned",
        "excluded_attributes": True,
        "dup_username": 409,
        "dup_username_other_case": 409,
        "dup_group_display_name": 201,
        "patch_status": 204,
        "title_kept": True,
        "patch_entra_string_active": (204, False),
        "patch_unknown_path": 400,
        "patch_without_schemas": 204,
        "patch_stale_if_match": 412,
        "patch_attributes_query": (200, "projected"),
        "add_existing_member_duplicates": False,
        "add_unknown_member": {"uuid": (204, True), "not_uuid": (204, True)},
        "remove_member": {"filter_path": True, "value_list": 400, "replace_list": True, "remove_all": True},
        "empty_members": "absent",
        "delete_user": {"status": 204, "get_after": 404, "still_member": True, "second_delete": 404},
    },
    "scimmy": {
        "patch_noop_status": 204,
        "spc": {"etag": False, "bulk": True, "sort": True, "filter_max": 200},
        "location_header_on_create": False,
        "meta_location": "relative",
        "etag": "body-hash",
        "dropped_on_create": set(),
        "filter_username_case_insensitive": False,
        "filter_escaped_quote": 400,
        "dup_external_id": 201,
        "filter_external_id_case_insensitive": False,
        "filter_and": 200,
        "filter_sw": 200,
        "filter_members_value": 200,
        "bad_filter": (200, "empty list"),
        "items_per_page": "page size",
        "excluded_attributes": True,
        "dup_username": 409,
        "dup_username_other_case": 409,
        "dup_group_display_name": 409,
        "patch_status": 200,
        "title_kept": True,
        "patch_entra_string_active": (400, True),
        "patch_unknown_path": 400,
        "patch_without_schemas": 400,
        "patch_stale_if_match": 200,
        "patch_attributes_query": (500, "error"),
        "add_existing_member_duplicates": True,
        "add_unknown_member": {"uuid": (200, True), "not_uuid": (200, True)},
        "remove_member": {"filter_path": True, "value_list": True, "replace_list": True, "remove_all": True},
        "empty_members": "absent",
        "delete_user": {"status": 204, "get_after": 404, "still_member": True, "second_delete": 404},
    },
    "better-auth": {
        "patch_noop_status": 200,
        "spc": {"etag": False, "bulk": False, "sort": False, "filter_max": 100},
        "location_header_on_create": True,
        "meta_location": "absolute",
        "etag": None,
        "dropped_on_create": set(),
        "filter_username_case_insensitive": True,
        "filter_escaped_quote": 200,
        "dup_external_id": 409,
        "filter_external_id_case_insensitive": False,
        "filter_and": 400,
        "filter_sw": 400,
        "filter_members_value": 400,
        "bad_filter": (400, "json"),
        "items_per_page": "returned",
        "excluded_attributes": True,
        "dup_username": 409,
        "dup_username_other_case": 409,
        "dup_group_display_name": 409,
        "patch_status": 200,
        "title_kept": True,
        "patch_entra_string_active": (200, False),
        "patch_unknown_path": 400,
        "patch_without_schemas": 400,
        "patch_stale_if_match": 200,
        "patch_attributes_query": (200, "projected"),
        "add_existing_member_duplicates": False,
        "add_unknown_member": {"uuid": (400, False), "not_uuid": (400, False)},
        "remove_member": {"filter_path": True, "value_list": True, "replace_list": True, "remove_all": True},
        "empty_members": "empty list",
        "delete_user": {"status": 204, "get_after": 404, "still_member": False, "second_delete": 404},
    },
    "django": {
        "patch_noop_status": 200,
        "spc": {"etag": False, "bulk": False, "sort": False, "filter_max": 200},
        "location_header_on_create": False,
        "meta_location": "absolute",
        "etag": None,
        "dropped_on_create": {"title", "displayName", "name.formatted", "emails.type"},
        "filter_username_case_insensitive": True,
        "filter_escaped_quote": 200,
        "dup_external_id": 201,
        "filter_external_id_case_insensitive": True,
        "filter_and": 200,
        "filter_sw": 200,
        "filter_members_value": 400,
        "bad_filter": (500, "html"),
        "items_per_page": "returned",
        "excluded_attributes": False,
        "dup_username": 409,
        "dup_username_other_case": 201,
        "dup_group_display_name": 500,
        "patch_status": 200,
        "title_kept": False,
        "patch_entra_string_active": (200, False),
        "patch_unknown_path": 200,
        "patch_without_schemas": 400,
        "patch_stale_if_match": 200,
        "patch_attributes_query": (200, "full"),
        "add_existing_member_duplicates": False,
        "add_unknown_member": {"uuid": (200, False), "not_uuid": (500, False)},
        "remove_member": {"filter_path": True, "value_list": True, "replace_list": True, "remove_all": 400},
        "empty_members": "absent",
        "delete_user": {"status": 204, "get_after": 200, "still_member": True, "second_delete": 204},
    },
}


def test_facts_cover_every_peer() -> None:
    assert set(FACTS) == set(ALL_PEERS)
    keys = set(FACTS["scim2-server"])
    assert all(set(f) == keys for f in FACTS.values())


# --- a small synchronous SCIM client ------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: Message
    body: Any  # parsed JSON, or the text when it is not JSON, or None when empty


@dataclass
class Peer:
    name: str
    scim: ScimPeer
    facts: dict[str, Any]

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             auth: bool = True) -> Answer:
        h = {"Accept": "application/scim+json"}
        if auth:
            h.update(self.scim.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/scim+json"
        h.update(headers or {})
        req = urllib.request.Request(self.scim.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                status, hdrs, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, e.headers, e.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        return Answer(status, hdrs, parsed)

    def get(self, path: str) -> Answer:
        return self.call("GET", path)

    def patch(self, path: str, *ops: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
        return self.call("PATCH", path, {"schemas": [PATCH_OP], "Operations": list(ops)}, headers=headers)

    def search(self, endpoint: str, filter_: str, extra: str = "") -> Answer:
        return self.get(f"{endpoint}?filter={urllib.parse.quote(filter_, safe='')}{extra}")


_n = itertools.count(1)


def realistic_user(tag: str | None = None) -> dict[str, Any]:
    n = tag or str(next(_n))
    return {
        "schemas": [USER],
        "userName": f"conor.o'brien.{n}@example.com",
        "externalId": f"HR-{n}",
        "name": {"givenName": "Conor", "familyName": "O'Brien", "formatted": "Conor O'Brien"},
        "displayName": "Conor O'Brien",
        "title": "Analyst",
        "emails": [{"value": f"conor.o'brien.{n}@example.com", "type": "work", "primary": True}],
        "active": True,
    }


@pytest.fixture(scope="module", params=list(ALL_PEERS))
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    name = request.param
    with ALL_PEERS[name]() as scim:
        yield Peer(name, scim, FACTS[name])


def create_user(peer: Peer, user: dict[str, Any] | None = None) -> dict[str, Any]:
    a = peer.call("POST", "Users", user or realistic_user())
    assert a.status == 201, a.body
    assert isinstance(a.body, dict)
    return a.body


def create_group(peer: Peer, members: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [GROUP], "displayName": f"Engineering {next(_n)}", "externalId": f"G-{next(_n)}"}
    if members is not None:
        body["members"] = [{"value": m} for m in members]
    a = peer.call("POST", "Groups", body)
    assert a.status == 201, a.body
    assert isinstance(a.body, dict)
    return a.body


def member_ids(peer: Peer, gid: str) -> list[str]:
    a = peer.get(f"Groups/{gid}")
    assert a.status == 200, a.body
    return [m["value"] for m in a.body.get("members") or []]


def assert_scim_error(a: Answer, status: int) -> None:
    assert a.status == status, (a.status, a.body)
    assert isinstance(a.body, dict), a.body
    assert a.body["schemas"] == [ERROR]
    assert a.body["status"] == str(status)  # RFC 7644 §3.12: a string, and every peer sends one
    assert isinstance(a.body.get("detail"), str) and a.body["detail"]


# --- discovery and auth -------------------------------------------------------------------------


def test_service_provider_config(peer: Peer) -> None:
    a = peer.get("ServiceProviderConfig")
    assert a.status == 200
    spc = a.body
    assert spc["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert spc["patch"]["supported"] is True
    assert spc["filter"]["supported"] is True
    want = peer.facts["spc"]
    assert {"etag": spc["etag"]["supported"], "bulk": spc["bulk"]["supported"], "sort": spc["sort"]["supported"],
            "filter_max": spc["filter"]["maxResults"]} == want
    assert any(s["type"] == "oauthbearertoken" for s in spc["authenticationSchemes"])


def test_bearer_token_required(peer: Peer) -> None:
    assert_scim_error(peer.call("GET", "Users", auth=False), 401)
    assert_scim_error(peer.call("GET", "Users", auth=False, headers={"Authorization": "Bearer wrong"}), 401)


# --- users --------------------------------------------------------------------------------------


def _flatten(user: dict[str, Any]) -> dict[str, Any]:
    emails = user.get("emails") or [{}]
    return {"externalId": user.get("externalId"), "title": user.get("title"), "displayName": user.get("displayName"),
            "name.formatted": (user.get("name") or {}).get("formatted"), "emails.type": emails[0].get("type")}


def test_create_and_get_user(peer: Peer) -> None:
    sent = realistic_user()
    a = peer.call("POST", "Users", sent)
    assert a.status == 201, a.body
    made = a.body
    uid = made["id"]
    assert made["userName"] == sent["userName"]  # the apostrophe survives
    assert made["name"]["familyName"] == "O'Brien"
    assert made["name"]["givenName"] == "Conor"
    assert made["emails"][0]["value"] == sent["emails"][0]["value"]
    assert made["active"] is True
    assert made["meta"]["resourceType"] == "User"
    dropped = {k for k, v in _flatten(sent).items() if _flatten(made)[k] != v}
    assert dropped == peer.facts["dropped_on_create"]

    assert (a.headers.get("Location") is not None) == peer.facts["location_header_on_create"]
    loc = made["meta"]["location"]
    if peer.facts["meta_location"] == "absolute":
        assert loc == peer.scim.url + f"Users/{uid}"
    else:
        assert loc.startswith("/") and loc.endswith(f"/Users/{uid}")

    g = peer.get(f"Users/{uid}")
    assert g.status == 200
    assert {k: v for k, v in g.body.items() if k != "meta"} == {k: v for k, v in made.items() if k != "meta"}

    etag = g.headers.get("ETag")
    if peer.facts["etag"] == "version":
        assert etag and etag == g.body["meta"]["version"]
    elif peer.facts["etag"] == "body-hash":  # express's weak hash of the body; no meta.version
        assert etag and etag.startswith('W/"') and "version" not in g.body["meta"]
    else:
        assert etag is None and "version" not in g.body["meta"]


def test_get_unknown_user_is_scim_404(peer: Peer) -> None:
    assert_scim_error(peer.get("Users/00000000-0000-0000-0000-000000000000"), 404)


def test_filter_by_user_name(peer: Peer) -> None:
    user = create_user(peer)
    name = user["userName"]

    a = peer.search("Users", f'userName eq "{name}"')
    assert a.status == 200
    assert a.body["totalResults"] == 1
    assert [r["id"] for r in a.body["Resources"]] == [user["id"]]

    upper = peer.search("Users", f'userName eq "{name.upper()}"')
    assert upper.status == 200
    found = [r["id"] for r in upper.body["Resources"]]
    assert found == ([user["id"]] if peer.facts["filter_username_case_insensitive"] else [])

    ext = peer.search("Users", f'externalId eq "{user["externalId"]}"')
    assert ext.status == 200 and [r["id"] for r in ext.body["Resources"]] == [user["id"]]

    none = peer.search("Users", 'userName eq "nobody@example.com"')
    assert none.status == 200 and none.body["totalResults"] == 0 and none.body.get("Resources", []) == []

    both = peer.search("Users", f'userName eq "{name}" and active eq true')
    assert both.status == peer.facts["filter_and"]
    if both.status == 200:
        assert [r["id"] for r in both.body["Resources"]] == [user["id"]]
    else:
        assert_scim_error(both, both.status)
        assert both.body["scimType"] == "invalidFilter"

    sw = peer.search("Users", f'userName sw "{name[:12]}"')
    assert sw.status == peer.facts["filter_sw"]
    if sw.status == 200:
        assert user["id"] in [r["id"] for r in sw.body["Resources"]]


def test_escaped_quote_external_id_and_put(peer: Peer) -> None:
    n = next(_n)
    tricky = f'o"brien\\x.{n}@acme.example'  # a double quote and a backslash
    user = create_user(peer, {**realistic_user(), "userName": tricky, "externalId": f"Q-{n}"})
    assert user["userName"] == tricky

    # RFC 7644 §3.4.2.2 / RFC 7159 escaping: backslash first, then the quote
    escaped = tricky.replace("\\", "\\\\").replace('"', '\\"')
    a = peer.search("Users", f'userName eq "{escaped}"')
    assert a.status == peer.facts["filter_escaped_quote"]
    if a.status == 200:
        assert [r["id"] for r in a.body["Resources"]] == [user["id"]]
    else:  # SCIMMY's lexer ends the string at the escaped quote
        assert_scim_error(a, 400)
        assert a.body["scimType"] == "invalidFilter"

    ext = peer.search("Users", f'externalId eq "q-{n}"')  # externalId is caseExact (RFC 7643 §3.1)
    assert ext.status == 200
    assert [r["id"] for r in ext.body["Resources"]] == (
        [user["id"]] if peer.facts["filter_external_id_case_insensitive"] else [])

    other = peer.call("POST", "Users", {**realistic_user(), "externalId": f"Q-{n}"})
    assert other.status == peer.facts["dup_external_id"]
    if other.status == 409:
        assert_scim_error(other, 409)
        assert other.body["scimType"] == "uniqueness"

    # PUT replaces: an attribute left out is gone, on every peer
    put = {**realistic_user(), "userName": tricky, "externalId": f"Q-{n}"}
    del put["title"]
    a = peer.call("PUT", f"Users/{user['id']}", put)
    assert a.status == 200 and "title" not in a.body
    assert "title" not in peer.get(f"Users/{user['id']}").body

    # a rename by PATCH works on every peer
    a = peer.patch(f"Users/{user['id']}", {"op": "replace", "path": "userName", "value": f"renamed.{n}@acme.example"})
    assert a.status == peer.facts["patch_status"]
    assert peer.get(f"Users/{user['id']}").body["userName"] == f"renamed.{n}@acme.example"


def test_malformed_filter(peer: Peer) -> None:
    a = peer.search("Users", "userName eq")
    status, shape = peer.facts["bad_filter"]
    assert a.status == status
    if shape == "json":
        assert_scim_error(a, status)
        assert a.body["scimType"] == "invalidFilter"
    elif shape == "empty list":  # SCIMMY: no error, nothing matches
        assert a.body["totalResults"] == 0
    else:  # Django's debug-off 500 page
        assert isinstance(a.body, str) and "Server Error (500)" in a.body
        assert a.headers.get_content_type() == "text/html"


def test_count_and_start_index(peer: Peer) -> None:
    for _ in range(3):
        create_user(peer)
    total = peer.get("Users").body["totalResults"]
    assert total >= 3

    one = peer.get("Users?count=1")
    assert one.status == 200
    assert len(one.body["Resources"]) == 1
    assert one.body["totalResults"] == total
    second = peer.get("Users?count=1&startIndex=2")
    assert second.status == 200 and len(second.body["Resources"]) == 1
    assert second.body["startIndex"] == 2
    assert second.body["Resources"][0]["id"] != one.body["Resources"][0]["id"]
    zero = peer.get("Users?count=0")
    assert zero.status == 200 and zero.body.get("Resources", []) == [] and zero.body["totalResults"] == total

    found = peer.search("Users", 'userName eq "nobody@example.com"')
    if peer.facts["items_per_page"] == "returned":
        assert one.body["itemsPerPage"] == 1
        assert found.body["itemsPerPage"] == 0
    else:  # SCIMMY: itemsPerPage is the page size asked for (default 20), not what came back
        assert one.body["itemsPerPage"] == 1
        assert found.body["itemsPerPage"] == 20


def test_excluded_attributes(peer: Peer) -> None:
    create_user(peer)
    a = peer.get("Users?excludedAttributes=emails&count=5")
    assert a.status == 200
    has_emails = any("emails" in r for r in a.body["Resources"])
    assert has_emails is (not peer.facts["excluded_attributes"])


def test_duplicate_user_name(peer: Peer) -> None:
    user = create_user(peer)
    again = peer.call("POST", "Users", {**realistic_user(), "userName": user["userName"]})
    assert_scim_error(again, peer.facts["dup_username"])
    assert again.body["scimType"] == "uniqueness"

    other_case = peer.call("POST", "Users", {**realistic_user(), "userName": user["userName"].upper()})
    assert other_case.status == peer.facts["dup_username_other_case"]
    if other_case.status == 201:  # Django: a second user, and a userName filter now finds both
        a = peer.search("Users", f'userName eq "{user["userName"]}"')
        assert sorted(r["id"] for r in a.body["Resources"]) == sorted([user["id"], other_case.body["id"]])


def test_patch_title_and_active(peer: Peer) -> None:
    uid = create_user(peer)["id"]
    a = peer.patch(f"Users/{uid}", {"op": "replace", "path": "title", "value": "Engineer"},
                   {"op": "replace", "path": "active", "value": False})
    assert a.status == peer.facts["patch_status"], a.body
    if a.status == 204:
        assert a.body is None
    else:
        assert a.body["id"] == uid and a.body["active"] is False
    got = peer.get(f"Users/{uid}").body
    assert got["active"] is False
    assert got.get("title") == ("Engineer" if peer.facts["title_kept"] else None)

    # the path-less form (Okta's deactivation) works on every peer
    a = peer.patch(f"Users/{uid}", {"op": "replace", "value": {"title": "Lead", "active": True}})
    assert a.status == peer.facts["patch_status"]
    got = peer.get(f"Users/{uid}").body
    assert got["active"] is True
    assert got.get("title") == ("Lead" if peer.facts["title_kept"] else None)

    # a dotted sub-attribute path works on every peer
    a = peer.patch(f"Users/{uid}", {"op": "replace", "path": "name.familyName", "value": "O'Brien-Smith"})
    assert a.status == peer.facts["patch_status"]
    assert peer.get(f"Users/{uid}").body["name"]["familyName"] == "O'Brien-Smith"


def test_patch_entra_style_active(peer: Peer) -> None:
    """Entra without its flag: capitalised op and the string "False"."""
    uid = create_user(peer)["id"]
    a = peer.patch(f"Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})
    status, active_after = peer.facts["patch_entra_string_active"]
    assert a.status == status, a.body
    if status == 400:
        assert_scim_error(a, 400)
        assert a.body["scimType"] == "invalidValue"
    assert peer.get(f"Users/{uid}").body["active"] is active_after
    # a capitalised op with a real boolean is accepted everywhere
    a = peer.patch(f"Users/{uid}", {"op": "Replace", "path": "active", "value": False})
    assert a.status == peer.facts["patch_status"]
    assert peer.get(f"Users/{uid}").body["active"] is False


def test_patch_refusals(peer: Peer) -> None:
    uid = create_user(peer)["id"]
    unknown = peer.patch(f"Users/{uid}", {"op": "replace", "path": "nonexistentAttr", "value": "x"})
    assert unknown.status == peer.facts["patch_unknown_path"]
    if unknown.status == 400:
        assert_scim_error(unknown, 400)
        assert unknown.body["scimType"] == "invalidPath"

    bare = peer.call("PATCH", f"Users/{uid}", {"Operations": [{"op": "replace", "path": "active", "value": True}]})
    assert bare.status == peer.facts["patch_without_schemas"]
    if bare.status == 400:
        assert_scim_error(bare, 400)

    stale = peer.patch(f"Users/{uid}", {"op": "replace", "path": "active", "value": False},
                       headers={"If-Match": 'W/"does-not-match"'})
    assert stale.status == peer.facts["patch_stale_if_match"]
    if stale.status == 412:
        assert_scim_error(stale, 412)
    assert peer.get(f"Users/{uid}").body["active"] is (stale.status != 200)


def test_patch_that_changes_nothing(peer: Peer) -> None:
    user = create_user(peer)
    a = peer.patch(f"Users/{user['id']}", {"op": "replace", "path": "active", "value": True})
    assert a.status == peer.facts["patch_noop_status"]
    if a.status == 204:  # SCIMMY: 204 and no body when the PATCH changed nothing (200 + body otherwise)
        assert a.body is None
    else:
        assert a.body["active"] is True


def test_patch_with_attributes_query(peer: Peer) -> None:
    uid = create_user(peer)["id"]
    a = peer.patch(f"Users/{uid}?attributes=id,active", {"op": "replace", "path": "active", "value": False})
    status, shape = peer.facts["patch_attributes_query"]
    assert a.status == status
    if shape == "projected":
        assert a.body == {"schemas": [USER], "id": uid, "active": False} or a.body == {"id": uid, "active": False}
    elif shape == "full":
        assert a.body["active"] is False and "userName" in a.body
    else:  # SCIMMY reads the resource through the projection, then fails validating it
        assert_scim_error(a, 500)
        assert a.body["detail"] == "Required attribute 'userName' is missing"
        # ...before the write: the PATCH did not happen
        assert peer.get(f"Users/{uid}").body["active"] is True


# --- groups -------------------------------------------------------------------------------------


def test_group_create_and_duplicate(peer: Peer) -> None:
    g = create_group(peer, members=[])
    assert g["meta"]["resourceType"] == "Group"
    if peer.facts["empty_members"] == "empty list":
        assert g["members"] == []
    # on create with members: [] SCIMMY echoes [], the others leave it out or send []
    assert g.get("members") in (None, [])

    found = peer.search("Groups", f'displayName eq "{g["displayName"]}"')
    assert found.status == 200 and [r["id"] for r in found.body["Resources"]] == [g["id"]]

    again = peer.call("POST", "Groups", {"schemas": [GROUP], "displayName": g["displayName"]})
    assert again.status == peer.facts["dup_group_display_name"]
    if again.status == 409:
        assert_scim_error(again, 409)
        assert again.body["scimType"] == "uniqueness"
    elif again.status == 500:  # Django: auth.Group.name is unique; IntegrityError, HTML 500 page
        assert isinstance(again.body, str) and "Server Error (500)" in again.body


def test_group_membership_by_patch(peer: Peer) -> None:
    u1, u2 = create_user(peer)["id"], create_user(peer)["id"]
    gid = create_group(peer)["id"]
    add_both = {"op": "add", "path": "members", "value": [{"value": u1}, {"value": u2}]}

    a = peer.patch(f"Groups/{gid}", add_both)
    assert a.status == peer.facts["patch_status"], a.body
    assert sorted(member_ids(peer, gid)) == sorted([u1, u2])

    by_member = peer.search("Groups", f'members.value eq "{u1}"')
    assert by_member.status == peer.facts["filter_members_value"]
    if by_member.status == 200:
        assert gid in [r["id"] for r in by_member.body["Resources"]]
    else:
        assert_scim_error(by_member, 400)
        assert by_member.body["scimType"] == "invalidFilter"

    # adding a member that is already there
    peer.patch(f"Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": u1}]})
    ids = member_ids(peer, gid)
    assert (ids.count(u1) == 2) is peer.facts["add_existing_member_duplicates"]
    peer.patch(f"Groups/{gid}", {"op": "replace", "path": "members", "value": [{"value": u1}, {"value": u2}]})
    assert sorted(member_ids(peer, gid)) == sorted([u1, u2])

    forms = peer.facts["remove_member"]

    # 1. remove by a filtered path: RFC 7644 §3.5.2.2's own example
    a = peer.patch(f"Groups/{gid}", {"op": "remove", "path": f'members[value eq "{u1}"]'})
    assert a.status == peer.facts["patch_status"]
    assert (member_ids(peer, gid) == [u2]) is forms["filter_path"]

    # 2. remove with path "members" and a value list (Entra without its flag, GitHub EMU)
    peer.patch(f"Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": u1}]})
    assert sorted(member_ids(peer, gid)) == sorted([u1, u2])
    a = peer.patch(f"Groups/{gid}", {"op": "remove", "path": "members", "value": [{"value": u1}]})
    if forms["value_list"] is True:
        assert a.status == peer.facts["patch_status"]
        assert member_ids(peer, gid) == [u2]
    else:
        assert_scim_error(a, forms["value_list"])
        assert a.body["scimType"] == "invalidValue"
        assert sorted(member_ids(peer, gid)) == sorted([u1, u2])
        peer.patch(f"Groups/{gid}", {"op": "remove", "path": f'members[value eq "{u1}"]'})

    # 3. replace the whole list
    assert member_ids(peer, gid) == [u2]
    a = peer.patch(f"Groups/{gid}", {"op": "replace", "path": "members", "value": [{"value": u1}]})
    assert a.status == peer.facts["patch_status"]
    assert (member_ids(peer, gid) == [u1]) is forms["replace_list"]

    # 4. remove every member: path "members", no value
    a = peer.patch(f"Groups/{gid}", {"op": "remove", "path": "members"})
    if forms["remove_all"] is True:
        assert a.status == peer.facts["patch_status"]
        assert member_ids(peer, gid) == []
        g = peer.get(f"Groups/{gid}").body
        assert ("members" in g) is (peer.facts["empty_members"] == "empty list")
    else:
        assert_scim_error(a, forms["remove_all"])
        assert member_ids(peer, gid) == [u1]


def test_add_unknown_member(peer: Peer) -> None:
    for kind, unknown in (("uuid", "00000000-0000-0000-0000-00000000beef"), ("not_uuid", "no-such-user")):
        gid = create_group(peer)["id"]
        a = peer.patch(f"Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": unknown}]})
        status, kept = peer.facts["add_unknown_member"][kind]
        assert a.status == status, (kind, a.status, a.body)
        if status == 400:
            assert_scim_error(a, 400)
            assert a.body["scimType"] == "invalidValue"
        elif status == 500:  # Django: a non-UUID in id__in raises; HTML 500 page
            assert isinstance(a.body, str) and "Server Error (500)" in a.body
        # kept: stored as given, a dangling member; not kept: dropped (Django: silently, with 200)
        assert member_ids(peer, gid) == ([unknown] if kept else [])


def test_delete_user(peer: Peer) -> None:
    uid, other = create_user(peer)["id"], create_user(peer)["id"]
    gid = create_group(peer)["id"]
    peer.patch(f"Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": uid}, {"value": other}]})
    want = peer.facts["delete_user"]

    a = peer.call("DELETE", f"Users/{uid}")
    assert a.status == want["status"] and a.body is None
    after = peer.get(f"Users/{uid}")
    assert after.status == want["get_after"]
    if after.status == 404:
        assert_scim_error(after, 404)
    else:  # Django: DELETE deactivates; the user is still there
        assert after.body["active"] is False
    assert (uid in member_ids(peer, gid)) is want["still_member"]
    assert other in member_ids(peer, gid)

    again = peer.call("DELETE", f"Users/{uid}")
    assert again.status == want["second_delete"]

    assert peer.call("DELETE", f"Groups/{gid}").status == 204
    assert_scim_error(peer.get(f"Groups/{gid}"), 404)
