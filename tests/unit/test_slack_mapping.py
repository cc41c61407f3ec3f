"""Slack handles (userName) and Slack error bodies: pure, table-driven and property-based."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.slack import (
    AUTH_HELP,
    SLACK_USERNAME_MAX,
    SlackConflict,
    candidate_levels,
    classify_slack,
    slack_error,
    slack_username,
    valid_slack_username,
)
from jml.errors import NotFoundError, PermanentError, RetryableError


@pytest.mark.parametrize(
    ("employee_id", "attributes", "level", "expected"),
    [
        ("E1", {"email": "ada.lovelace@acme.example"}, 0, "ada.lovelace"),
        ("E1", {"email": "Ada.Lovelace+slack@acme.example"}, 0, "ada.lovelace"),
        ("E2", {"email": "jose.muñoz-garcía@acme.example"}, 0, "jose.munoz-garcia"),
        ("E3", {"email": "o'brien@acme.example"}, 0, "o.brien"),
        ("E4", {"email": "maximilian.alexander.von.humboldt@acme.example"}, 0, "maximilian.alexander"),
        ("E5", {"given_name": "Grace", "family_name": "Hopper"}, 0, "grace.hopper"),
        ("E6", {"email": "李@acme.example", "given_name": "李", "family_name": ""}, 0, "e6"),
        ("E7", {}, 0, "e7"),
        ("", {}, 0, "user"),
        # sha256("E1") in lowercase base32 starts eisjvjq72jmu4uerbks…
        ("E1", {"email": "ada.lovelace@acme.example"}, 1, "ada.lovelace-eisjvj"),
        ("E1", {"email": "maximilian.alexander.von.humboldt@acme.example"}, 1, "maximilian.ale-eisjvj"),
        ("E1", {"email": "ada.lovelace@acme.example"}, 2, "ada.lovela-eisjvjq72j"),
        ("E1", {"email": "ada.lovelace@acme.example"}, 3, "a-eisjvjq72jmu4uerbks"),
    ],
)
def test_username_table(employee_id: str, attributes: dict[str, str], level: int, expected: str) -> None:
    assert slack_username(employee_id, attributes, level) == expected


def test_level_3_is_nearly_all_hash() -> None:
    name = slack_username("E1", {"email": "ada.lovelace@acme.example"}, 3)
    assert name.startswith("a-") and len(name) == SLACK_USERNAME_MAX


def test_planner_username_used_when_no_email_attribute() -> None:
    assert slack_username("E9", {}, 0, username="Linus.T@acme.example") == "linus.t"


def test_level_out_of_range() -> None:
    with pytest.raises(ValueError):
        slack_username("E1", {}, candidate_levels)


emails = st.emails() | st.text(min_size=0, max_size=60)
ids = st.text(min_size=1, max_size=30)
names = st.text(max_size=40)


@given(eid=ids, email=emails, first=names, last=names, level=st.integers(0, candidate_levels - 1))
def test_always_valid_and_deterministic(eid: str, email: str, first: str, last: str, level: int) -> None:
    attrs = {"email": email, "given_name": first, "family_name": last}
    name = slack_username(eid, attrs, level)
    assert len(name) <= SLACK_USERNAME_MAX
    assert valid_slack_username(name), name
    assert name == slack_username(eid, dict(attrs), level)


@given(a=ids, b=ids, email=emails, level=st.integers(1, candidate_levels - 1))
def test_collision_path_distinct_for_distinct_people(a: str, b: str, email: str, level: int) -> None:
    """Two people with the same email local part (or name) get different handles once
    the collision suffix is in play."""
    if a == b:
        return
    attrs = {"email": email}
    assert slack_username(a, attrs, level) != slack_username(b, attrs, level)


@given(eid=ids, email=emails)
def test_levels_differ_from_each_other(eid: str, email: str) -> None:
    attrs = {"email": email}
    seen = [slack_username(eid, attrs, lvl) for lvl in range(1, candidate_levels)]
    assert len(set(seen)) == len(seen)


# ---- error bodies -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Errors": {"description": "invalid_authentication", "code": 401}}, "invalid_authentication"),
        ({"Errors": {"description": "email_taken", "code": 409}}, "email_taken"),
        ({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": "username_taken", "status": 409},
         "username_taken"),
        ({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "409", "scimType": "uniqueness",
          "detail": "One or more of the attribute values are already in use"}, "uniqueness"),
        ("resource_locked", "resource_locked"),
        (None, ""),
    ],
)
def test_error_code_read_from_either_shape(body: object, code: str) -> None:
    assert slack_error(body).code == code


def test_auth_error_says_plain_words() -> None:
    err = classify_slack("slack", 401, {"Errors": {"description": "invalid_authentication", "code": 401}})
    assert isinstance(err, PermanentError)
    assert AUTH_HELP in str(err)


def test_email_taken_is_an_adoptable_conflict() -> None:
    err = classify_slack("slack", 409, {"Errors": {"description": "email_taken", "code": 409}})
    assert isinstance(err, SlackConflict) and err.taken == "email"
    err = classify_slack("slack", 409, {"detail": "username_taken", "status": 409})
    assert isinstance(err, SlackConflict) and err.taken == "username"


@pytest.mark.parametrize("code", ["too_many_requests", "resource_locked"])
def test_429_codes_retry_after_retry_after(code: str) -> None:
    err = classify_slack("slack", 429, {"Errors": {"description": code, "code": 429}}, retry_after=7)
    assert isinstance(err, RetryableError) and err.retry_after == 7
    assert err.reason == ("resource_locked" if code == "resource_locked" else "rate_limited")


def test_other_statuses() -> None:
    assert isinstance(classify_slack("slack", 404, None), NotFoundError)
    assert isinstance(classify_slack("slack", 503, "oops"), RetryableError)
    assert type(classify_slack("slack", 400, {"Errors": {"description": "invalid_username", "code": 400}})) \
        is PermanentError
