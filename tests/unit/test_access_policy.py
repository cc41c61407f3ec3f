"""Access requests' pure policy: who may approve what (table-driven), how long, and desired()
with requested grants (`extra`) and denials (`deny`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jml.access_rules import APPROVER, MANAGER, OWNER, Parties, approvals_required, check_duration, judge, may_request
from jml.model import ConnectorTraits, Lifecycle, Person, Phase, Status
from jml.policy import Policy, desired

H = dt.timedelta(hours=1)


def _p(**kw: Any) -> Parties:
    base: dict[str, Any] = dict(approver_key="person:bob", requested_by="person:ana", is_grantee=False,
                                is_manager=False, is_owner=False, can_approve=False)
    base.update(kw)
    return Parties(**base)


@pytest.mark.parametrize(
    ("risk", "parties", "basis", "words"),
    [
        ("low", _p(is_manager=True), MANAGER, ""),
        ("low", _p(is_owner=True), OWNER, ""),
        ("low", _p(can_approve=True), APPROVER, ""),
        ("low", _p(), None, "manager, the entitlement's owner or an approver"),
        ("medium", _p(is_owner=True), OWNER, ""),
        ("medium", _p(is_manager=True), None, "owner or an approver"),  # a manager alone is not enough
        ("medium", _p(is_manager=True, can_approve=True), APPROVER, ""),
        ("high", _p(is_manager=True), MANAGER, ""),
        ("high", _p(is_owner=True, is_manager=True), MANAGER, ""),
        ("high", _p(can_approve=True), APPROVER, ""),
        ("high", _p(), None, "high-risk"),
        # Never the requester, never the person who gets the access, whatever their role.
        ("low", _p(approver_key="person:ana", is_owner=True, can_approve=True), None, "you requested it"),
        ("high", _p(is_grantee=True, is_manager=True, can_approve=True), None, "the access is for you"),
        # A request jml opened itself (no requester) can still be approved.
        ("medium", _p(requested_by=None, is_owner=True), OWNER, ""),
    ],
)
def test_who_may_approve(risk: str, parties: Parties, basis: str | None, words: str) -> None:
    v = judge(risk, parties)
    assert v.basis == basis
    assert words in v.refusal


@pytest.mark.parametrize(("risk", "n"), [("low", 1), ("medium", 1), ("high", 2)])
def test_approvals_required(risk: str, n: int) -> None:
    assert approvals_required(risk) == n


@pytest.mark.parametrize(
    ("is_self", "is_manager", "any_", "ok"),
    [(True, False, False, True), (False, True, False, True), (False, False, True, True),
     (False, False, False, False)],
)
def test_who_may_request(is_self: bool, is_manager: bool, any_: bool, ok: bool) -> None:
    assert may_request(is_self=is_self, is_manager=is_manager, can_request_any=any_) is ok


@pytest.mark.parametrize(
    ("asked", "maximum", "got", "words"),
    [(None, None, 30 * 24 * H, ""), (8 * H, 7 * 24 * H, 8 * H, ""), (8 * 24 * H, 7 * 24 * H, None, "maximum 7d"),
     (dt.timedelta(0), None, None, "longer than 0s")],
)
def test_duration(asked: dt.timedelta | None, maximum: dt.timedelta | None, got: dt.timedelta | None,
                  words: str) -> None:
    if got is None:
        with pytest.raises(ValueError, match=words):
            check_duration(asked, 30 * 24 * H, maximum)
    else:
        assert check_duration(asked, 30 * 24 * H, maximum) == got


APP = ConnectorTraits("app")
AWS = ConnectorTraits("aws", kind="aws_identity_center", assignment_grants=True)
POLICY = Policy.build("{work_email}", [("eng", {"department": "Engineering"}, {"app": ["Engineering"]})], [])


def _person(dept: str = "Engineering") -> Person:
    return Person("E1", Status.ACTIVE, first_name="Ana", last_name="Smith", work_email="ana@acme.example",
                  department=dept, hire_date=dt.date(2020, 1, 6))


ACTIVE = Lifecycle(Phase.ACTIVE)


def _grants(person: Person, lc: Lifecycle = ACTIVE, **kw: Any) -> dict[str, dict[str, str]]:
    return {d.connector: dict(d.grants) for d in desired(person, lc, [APP, AWS], POLICY, **kw)}


@pytest.mark.parametrize(
    ("person", "lc", "kw", "expected"),
    [
        (_person(), ACTIVE, {}, {"app": {"group:Engineering": "eng"}}),
        # A requested grant joins the rules' (normalized the planner's way).
        (_person(), ACTIVE, {"extra": {"app": {"Prod Admins": "request:ar-1"}}},
         {"app": {"group:Engineering": "eng", "group:Prod Admins": "request:ar-1"}}),
        # A rule's reason wins over a request for the same grant: the grant outlives the request.
        (_person(), ACTIVE, {"extra": {"app": {"group:Engineering": "request:ar-1"}}},
         {"app": {"group:Engineering": "eng"}}),
        # Requested access where no rule gives an account: the account follows the request.
        (_person("Sales"), ACTIVE, {"extra": {"aws": {"Admin@111": "jit:jit-1"}}}, {"aws": {"Admin@111": "jit:jit-1"}}),
        # A denial removes the grant whatever grants it: a rule, a request.
        (_person(), ACTIVE, {"deny": {"app": frozenset({"group:Engineering"})}}, {"app": {}}),
        (_person(), ACTIVE, {"extra": {"app": {"group:X": "request:ar-2"}}, "deny": {"app": frozenset({"X"})}},
         {"app": {"group:Engineering": "eng"}}),
        # A leaver holds nothing, requests included.
        (_person(), Lifecycle(Phase.LEAVER), {"extra": {"app": {"group:X": "request:ar-2"}}}, {"app": {}, "aws": {}}),
    ],
    ids=["rules", "extra", "rule-wins", "account-for-request", "deny-rule", "deny-request", "leaver"],
)
def test_desired_with_extra_and_deny(person: Person, lc: Lifecycle, kw: dict[str, Any],
                                     expected: dict[str, dict[str, str]]) -> None:
    assert _grants(person, lc, **kw) == expected


def test_memo_is_not_changed_by_extras() -> None:
    """The rules' memo is shared by everyone with the same attributes: a request must not leak into it."""
    _grants(_person(), extra={"app": {"group:X": "request:ar-1"}}, deny={"app": frozenset({"group:Engineering"})})
    assert _grants(_person()) == {"app": {"group:Engineering": "eng"}}
