"""Pure SCIM request building and response reading (no I/O)."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scim2_models import PatchOp

from connectors.scim import patches
from connectors.scim import protocol as p
from connectors.scim.transport import default_classify
from jml.errors import ConflictError, NotFoundError, PermanentError, RetryableError


@pytest.mark.parametrize(("raw", "escaped"), [
    ('plain', 'plain'),
    ('o"brien', 'o\\"brien'),
    ('back\\slash', 'back\\\\slash'),
    ('\\"', '\\\\\\"'),  # backslash first, else the quote's escape would be doubled
])
def test_filter_value_escaping(raw: str, escaped: str) -> None:
    assert p.escape_filter_value(raw) == escaped
    assert p.eq_filter("userName", raw) == f'userName eq "{escaped}"'


def test_search_request_carries_filter_and_paging() -> None:
    req = p.search("Users", p.eq_filter("externalId", "E1"), count=3, start_index=4)
    assert req.method == "GET" and not req.write
    assert dict(req.params) == {"filter": 'externalId eq "E1"', "count": "3", "startIndex": "4"}


def test_build_user_maps_core_and_enterprise() -> None:
    attrs = {"given_name": "Ada", "family_name": "Lovelace", "email": "ada@acme.example", "title": "",
             "department": "R&D", "cost_center": "C1", "employee_number": "42", "location": "London",
             "country": "GB", "employment_type": "Contractor", "github_username": "ada"}
    body = p.creation_payload(p.build_user("ada", "E1", False, attrs, enterprise=True, manager_ref="m-1"))
    assert body["userName"] == "ada" and body["externalId"] == "E1" and body["active"] is False
    assert body["name"] == {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"}
    assert body["displayName"] == "Ada Lovelace"  # derived: apps require it
    assert body["emails"] == [{"value": "ada@acme.example", "type": "work", "primary": True}]
    assert "title" not in body  # empty values are left out, not sent as ""
    assert body[p.ENTERPRISE] == {"employeeNumber": "42", "costCenter": "C1", "department": "R&D",
                                  "manager": {"value": "m-1"}}
    assert p.ENTERPRISE in body["schemas"]
    assert p.user_attributes(body) == {**{k: v for k, v in attrs.items() if v and k != "github_username"},
                                       "display_name": "Ada Lovelace"}


def test_build_user_without_enterprise_drops_extension() -> None:
    body = p.creation_payload(p.build_user("ada", "E1", True, {"department": "R&D"}, enterprise=False))
    assert p.ENTERPRISE not in body and body["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User"]


def test_user_patch_replaces_and_removes() -> None:
    body = patches.user_patch({"active": False, "title": "", "department": "Ops", "username": "new"},
                              enterprise=True, manager_ref=None)
    PatchOp[p.FullUser].model_validate(body)  # a valid PatchOp message for User+enterprise
    ops = {(o["op"], o["path"]): o.get("value") for o in body["Operations"]}
    assert ops == {("replace", "active"): False, ("remove", "title"): None,
                   ("replace", f"{p.ENTERPRISE}:department"): "Ops", ("replace", "userName"): "new"}


def test_replacement_payload_keeps_unmanaged_attributes() -> None:
    current = {"id": "1", "meta": {"version": 'W/"3"'}, "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
               "userName": "ada", "nickName": "Countess", "title": "Old", "groups": [{"value": "g"}]}
    desired = p.build_user("ada", "E1", False, {"given_name": "Ada"}, enterprise=False)
    body = p.replacement_payload(current, desired, removed=["title"])
    assert body["nickName"] == "Countess" and body["active"] is False
    assert body["name"] == {"givenName": "Ada", "formatted": "Ada"}
    assert "id" not in body and "meta" not in body and "groups" not in body and "title" not in body


def test_group_member_patches() -> None:
    add = patches.add_members_patch(["u1", "u2"])
    assert add["Operations"] == [{"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}]
    rm = patches.remove_members_filtered(['we"ird'])
    assert rm["Operations"] == [{"op": "remove", "path": 'members[value eq "we\\"ird"]'}]
    by_value = patches.remove_members_by_value(["u1"])
    assert by_value["Operations"] == [{"op": "remove", "path": "members", "value": [{"value": "u1"}]}]
    assert p.group_name_of("group:eng") == p.group_name_of("eng") == "eng"


def test_capabilities_from_discovery() -> None:
    spc = {"patch": {"supported": False}, "etag": {"supported": True}, "filter": {"supported": True, "maxResults": 50},
           "vendorThing": 1, "pagination": {"cursor": True, "index": False}}
    rtypes = {"Resources": [{"id": "User", "name": "User", "schemaExtensions": [{"schema": p.ENTERPRISE}]}]}
    caps = p.capabilities(spc, rtypes, None)
    assert caps == p.Capabilities(patch=False, etag=True, filter=True, max_results=50, cursor=True, enterprise=True)
    assert p.capabilities(None, None, None) == p.Capabilities()


@pytest.mark.parametrize(("body", "message"), [
    ({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "409", "scimType": "uniqueness",
      "detail": "taken"}, "uniqueness: taken"),
    ({"Errors": {"description": "email_taken", "code": 409}}, "email_taken"),  # Slack legacy
    ({"message": "Bad credentials"}, "Bad credentials"),  # GitHub REST
    ("upstream exploded", "upstream exploded"),
])
def test_error_message_reads_vendor_bodies(body: object, message: str) -> None:
    assert p.error_message(body) == message


def test_default_classification() -> None:
    assert isinstance(default_classify("x", 409, {"detail": "dup"}, None), ConflictError)
    assert isinstance(default_classify("x", 404, None, None), NotFoundError)
    limited = default_classify("x", 429, None, 2.5)
    assert isinstance(limited, RetryableError) and limited.retry_after == 2.5 and limited.reason == "rate_limited"
    assert isinstance(default_classify("x", 412, None, None), RetryableError)
    assert isinstance(default_classify("x", 503, None, None), RetryableError)
    denied = default_classify("x", 401, {"detail": "Bearer abcdefghijk invalid"}, None)
    assert isinstance(denied, PermanentError) and "abcdefghijk" not in str(denied)


def test_active_and_mismatches_read_leniently() -> None:
    assert p.is_active({}) and p.is_active({"active": "True"}) and not p.is_active({"active": False})
    body = {"title": "A", p.ENTERPRISE: {"department": "X"}}
    assert p.mismatches(body, {"title": "A", "department": "Y", "manager_id": "M"}, enterprise=True) == ["department"]
    assert p.mismatches(body, {"department": "Y"}, enterprise=False) == []


@pytest.mark.parametrize(("body", "expected"), [
    ("<html><head><title>Error</title><style>p{}</style></head><body><h1>Internal Server Error</h1></body></html>",
     "Error"),
    ("<!DOCTYPE html>\n<html><body>\n\n<p>Bad &amp; worse</p></body></html>", "Bad & worse"),
    ("plain text\nsecond line", "plain text"),
    ("x" * 500, "x" * 199 + "…"),
    ({"Errors": [{"description": "invalid_authentication"}]}, "invalid_authentication"),
])
def test_error_bodies_read_as_one_line(body: object, expected: str) -> None:
    assert p.error_message(body) == expected


@pytest.mark.parametrize(("message", "sent", "refused"), [
    ("Unknown attribute: title", {"title", "department"}, ["title"]),
    ("Unsupported sub-attribute: emails.type", {"emails.type", "email"}, ["emails.type"]),
    ("invalidSyntax: Unknown attribute: urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
     {"department", "title"}, ["department"]),
    ("userName is required", {"title"}, []),
    ("Unknown attribute: userType", {"employment_type"}, ["employment_type"]),
])
def test_refusals_name_the_attributes_to_drop(message: str, sent: set[str], refused: list[str]) -> None:
    from connectors.scim.learning import refused_optional

    assert refused_optional(message, sent) == refused


@pytest.mark.parametrize("enterprise", [True, False])
def test_deactivation_patch_is_the_built_body_and_a_copy_each_time(enterprise: bool) -> None:
    built = patches.user_patch({"active": False}, enterprise=enterprise, manager_ref=None)
    first = patches.deactivation_patch(enterprise)
    assert first == built == {"schemas": [p.PATCH_SCHEMA],
                              "Operations": [{"op": "replace", "path": "active", "value": False}]}
    first["Operations"].append({"op": "remove", "path": "title"})  # a caller adding to its body
    assert patches.deactivation_patch(enterprise) == built


_KEYS = ["username", "external_id", "active", "given_name", "family_name", "display_name", "title",
         "employment_type", "email", "location", "country", "department", "cost_center", "employee_number",
         "manager_id"]
_texts = st.one_of(st.just(""), st.text(max_size=12), st.sampled_from(['o"brien', "back\\slash", "Émile", "\u2028"]))


def _slow_patch(changes: dict[str, str | bool], enterprise: bool, manager_ref: str | None) -> dict[str, object]:
    saved = set(patches._PLAIN_OPS), dict(patches._PATCH_HEAD)
    patches._PLAIN_OPS.clear()
    patches._PATCH_HEAD.clear()
    try:
        return patches.user_patch(changes, enterprise=enterprise, manager_ref=manager_ref)
    finally:
        patches._PLAIN_OPS.update(saved[0])
        patches._PATCH_HEAD.update(saved[1])


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.dictionaries(st.sampled_from(_KEYS), st.one_of(_texts, st.booleans()), max_size=6),
                        min_size=1, max_size=4),
       enterprise=st.booleans(), manager_ref=st.one_of(st.none(), st.just("m-1")))
def test_a_patch_of_checked_kinds_equals_what_scim2_models_builds(changes: list[dict[str, str | bool]],
                                                                  enterprise: bool, manager_ref: str | None) -> None:
    """A PATCH whose operations are all of kinds scim2-models has checked and left as given is
    built without it (0.3 ms an update): byte for byte what it would build, valid, its own copy."""
    for one in changes:
        one = {k: (bool(v) if k == "active" else ("" if v is False else ("x" if v is True else v)))
               for k, v in one.items()}
        for _ in range(2):  # the first time may check and learn, the second may take the fast path
            try:
                slow = _slow_patch(one, enterprise, manager_ref)
            except pydantic.ValidationError:  # (removing userName): refused either way
                with pytest.raises(pydantic.ValidationError):
                    patches.user_patch(one, enterprise=enterprise, manager_ref=manager_ref)
                continue
            body = patches.user_patch(one, enterprise=enterprise, manager_ref=manager_ref)
            assert body == slow and list(body) == list(slow)
            assert [list(o) for o in body.get("Operations", [])] == [list(o) for o in slow.get("Operations", [])]
            if body:
                PatchOp[p.FullUser if enterprise else p.User].model_validate(body)
                body["schemas"].append("mutated")  # a caller changing its body changes no later one


def test_a_second_patch_of_the_same_kinds_is_not_built_by_the_models_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patches, "_PLAIN_OPS", set())  # nothing learnt by earlier tests
    monkeypatch.setattr(patches, "_PATCH_HEAD", {})
    patches.user_patch({"title": "A", "department": ""}, enterprise=True, manager_ref=None)

    def no_models(_cls: type) -> None:
        raise AssertionError("built by scim2-models again")

    monkeypatch.setattr(patches, "_patch_models", no_models)
    assert patches.user_patch({"title": "B", "department": ""}, enterprise=True, manager_ref=None) == {
        "schemas": [p.PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "title", "value": "B"},
                                                    {"op": "remove", "path": f"{p.ENTERPRISE}:department"}]}
    with pytest.raises(AssertionError):  # a kind not checked yet still is
        patches.user_patch({"title": "B", "employment_type": "x"}, enterprise=True, manager_ref=None)


_ids = st.one_of(st.uuids().map(str), st.integers(0, 10**9).map(str), st.text(max_size=8),
                 st.sampled_from(['a"b', "a]b", "x\\y", "a b", "ä"]))


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(_ids, min_size=1, max_size=6), min_size=1, max_size=4))
def test_a_filtered_member_removal_equals_what_scim2_models_builds(batches: list[list[str]]) -> None:
    for ids in batches:
        for _ in range(2):
            saved = set(patches._PLAIN_OPS), dict(patches._PATCH_HEAD)
            patches._PLAIN_OPS.clear()
            patches._PATCH_HEAD.clear()
            try:
                slow: dict[str, object] | None = patches.remove_members_filtered(iter(ids))
            except pydantic.ValidationError:
                slow = None
            finally:
                patches._PLAIN_OPS.update(saved[0])
                patches._PATCH_HEAD.update(saved[1])
            if slow is None:
                with pytest.raises(pydantic.ValidationError):
                    patches.remove_members_filtered(iter(ids))
                continue
            body = patches.remove_members_filtered(iter(ids))  # (an iterator: read once)
            assert body == slow and len(body["Operations"]) == len(ids)
            PatchOp[p.Group].model_validate(body)
