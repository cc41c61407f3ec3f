"""Access review campaigns, the pure part (jml/review_items.py): why, who reviews, who may decide,
what a revocation pushes."""

from __future__ import annotations

import datetime as dt

import pytest

from jml.model import Action, ConnectorTraits
from jml.review_items import (
    ACCOUNT,
    Holding,
    RequestGrant,
    build_items,
    classify,
    progress,
    refusal,
    revoke_operation,
    revoke_operations,
    revoked_in_app,
    state_of,
)

T = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
REQ = RequestGrant("ar-1", "boss@example.com", T + dt.timedelta(days=30))


@pytest.mark.parametrize(("entitlement", "rules", "requests", "kind", "detail"), [
    ("group:Eng", {"group:Eng": "engineering"}, {}, "rule", {"rule": "engineering"}),
    # a rule wins over a request for the same grant: the rule is what keeps it
    ("group:Eng", {"group:Eng": "engineering"}, {"group:Eng": REQ}, "rule", {"rule": "engineering"}),
    ("group:Prod", {"group:Eng": "engineering"}, {"group:Prod": REQ}, "request",
     {"request": "ar-1", "approver": "boss@example.com", "expires_at": (T + dt.timedelta(days=30)).isoformat()}),
    ("group:Prod", {"group:Eng": "engineering"}, {}, "none", {}),
    ("group:Prod", None, {}, "none", {}),
    (ACCOUNT, {"group:Eng": "engineering", "group:All": "everyone"}, {}, "rule", {"rule": "engineering, everyone"}),
    (ACCOUNT, {}, {}, "rule", {"rule": "(a rule names the connector)"}),
    (ACCOUNT, None, {"group:Prod": REQ}, "request",
     {"request": "ar-1", "approver": "boss@example.com", "expires_at": (T + dt.timedelta(days=30)).isoformat()}),
    (ACCOUNT, None, {}, "none", {}),
])
def test_classify(entitlement: str, rules: dict[str, str] | None, requests: dict[str, RequestGrant], kind: str,
                  detail: dict[str, str]) -> None:
    why = classify(entitlement, rules, requests)
    assert (why.kind, dict(why.detail)) == (kind, detail)
    assert why.text()


def _h(eid: str, ent: str, *, c: str = "scim", by: str = "jml", user: str = "") -> Holding:
    return Holding(c, eid, user or f"{eid}@example.com", ent, by, T if by == "jml" else None)


def test_build_items_by_app_and_manager() -> None:
    holdings = [_h("e1", ACCOUNT), _h("e1", "group:Eng"), _h("e1", "group:Eng", by="app"),
                _h("e1", "group:Secret", by="app"), _h("e2", ACCOUNT, c="aws"), _h("", ACCOUNT, by="app", user="ghost")]
    rules = {("scim", "e1"): {"group:Eng": "engineering"}}
    kw = dict(rule_grants=rules, requests={}, managers={"e1": "m1", "e2": "e2"},
              emails={"m1": "Boss@Example.com", "e1": "e1@example.com"}, default_reviewer="Sec@example.com")
    by_app = build_items(holdings, by="app", connector=None, owners={("scim", "group:Eng"): "Eng.Owner@example.com",
                                                                   ("aws", "*"): "cloud@example.com"}, **kw)
    got = {(d.holding.connector, d.holding.employee_id, d.holding.entitlement): (d.holding.held_by, d.reviewer,
                                                                                   d.why.kind) for d in by_app}
    assert got == {
        ("scim", "e1", ACCOUNT): ("jml", "sec@example.com", "rule"),
        ("scim", "e1", "group:Eng"): ("jml", "eng.owner@example.com", "rule"),  # recorded wins over found
        ("scim", "e1", "group:Secret"): ("app", "sec@example.com", "none"),
        ("aws", "e2", ACCOUNT): ("jml", "cloud@example.com", "none"),
        ("scim", "", ACCOUNT): ("app", "sec@example.com", "none"),  # an orphan: nobody's, unexplained
    }
    by_mgr = build_items(holdings, by="manager", connector="scim", owners={}, **kw)
    assert {d.holding.connector for d in by_mgr} == {"scim"}
    reviewers = {(d.holding.employee_id, d.holding.entitlement): d.reviewer for d in by_mgr}
    # e1's manager reviews e1; the orphan (no person, no manager) goes to the default reviewer
    assert reviewers[("e1", "group:Secret")] == "boss@example.com"
    assert reviewers[("", ACCOUNT)] == "sec@example.com"
    e2 = build_items([_h("e2", ACCOUNT)], by="manager", connector=None, owners={}, **kw)
    assert e2[0].reviewer == "sec@example.com"  # their own manager_id: never themselves
    with pytest.raises(ValueError, match="by must be"):
        build_items([], by="team", connector=None, owners={}, **kw)


@pytest.mark.parametrize(("who_person", "who_email", "admin", "decided", "refused"), [
    (None, "boss@example.com", False, False, None),
    (None, "BOSS@example.com", False, False, None),  # e-mail case does not matter
    (None, "other@example.com", False, False, "another reviewer"),
    (None, "", False, False, "another reviewer"),
    (None, "other@example.com", True, False, None),  # an admin decides any item...
    ("e1", "admin@example.com", True, False, "own access"),  # ...but never their own
    (None, "e1@example.com", True, False, "own access"),
    (None, "boss@example.com", False, True, "already decided"),
])
def test_refusal(who_person: str | None, who_email: str, admin: bool, decided: bool, refused: str | None) -> None:
    why = refusal(subject_id="e1", subject_email="e1@example.com", reviewer="boss@example.com",
                  who_person=who_person, who_email=who_email, admin=admin, decided=decided)
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_self_review_refused_even_when_assigned_to_themselves() -> None:
    # a manager with no manager of their own, reviewing items that fell back to them
    assert refusal(subject_id="e1", subject_email="e1@example.com", reviewer="e1@example.com", who_person=None,
                   who_email="e1@example.com", admin=False, decided=False) == "nobody may decide on their own access"


@pytest.mark.parametrize(("holding", "traits", "action", "detail_key"), [
    (_h("e1", "group:Eng"), ConnectorTraits("scim"), Action.REMOVE_MEMBER, ("group", "group:Eng")),
    (_h("e1", "Admin@123456789012", c="aws"), ConnectorTraits("aws", assignment_grants=True), Action.UNASSIGN,
     ("grant", "Admin@123456789012")),
    (_h("e1", "team:core", c="gh"), ConnectorTraits("gh"), Action.REMOVE_MEMBER, ("group", "team:core")),
    (_h("e1", ACCOUNT), ConnectorTraits("scim"), Action.DEACTIVATE, ("username", "e1@example.com")),
    (Holding("scim", "", "ghost", ACCOUNT, "app", None, "r-9"), ConnectorTraits("scim"), Action.DELETE,
     ("remote_id", "r-9")),
    # an HR person's account made outside jml: no record to deactivate, deleted by its id
    (Holding("scim", "e9", "e9@example.com", ACCOUNT, "app", None, "r-1"), ConnectorTraits("scim"), Action.DELETE,
     ("remote_id", "r-1")),
])
def test_revoke_operation(holding: Holding, traits: ConnectorTraits, action: Action,
                          detail_key: tuple[str, str]) -> None:
    op = revoke_operation(holding, traits)
    assert op.action is action
    assert op.detail[detail_key[0]] == detail_key[1]
    assert op.detail["review"] is True


def test_revoking_an_account_takes_its_grants_too() -> None:
    ops = revoke_operations(_h("e1", ACCOUNT), ConnectorTraits("scim"), {"group:B", "group:A"})
    assert [(op.action, op.detail.get("group")) for op in ops] == [
        (Action.DEACTIVATE, None), (Action.REMOVE_MEMBER, "group:A"), (Action.REMOVE_MEMBER, "group:B")]
    orphan = Holding("scim", "", "ghost", ACCOUNT, "app", None, "r-9")
    assert [op.action for op in revoke_operations(orphan, ConnectorTraits("scim"), {"group:A"})] == [Action.DELETE]
    assert len(revoke_operations(_h("e1", "group:A"), ConnectorTraits("scim"), {"group:B"})) == 1


@pytest.mark.parametrize(("entitlement", "active", "groups", "gone"), [
    ("group:Eng", True, frozenset({"group:All"}), True),
    ("group:Eng", True, frozenset({"group:Eng"}), False),
    ("group:Eng", None, None, True),  # the account is gone from the app
    (ACCOUNT, False, frozenset(), True),
    (ACCOUNT, True, frozenset(), False),
])
def test_revoked_in_app(entitlement: str, active: bool | None, groups: frozenset[str] | None, gone: bool) -> None:
    assert revoked_in_app(_h("e1", entitlement), active, groups) is gone


def test_progress_and_state() -> None:
    assert progress([("a", True), ("b", False), ("a", False), ("a", True)]) == {"a": (2, 3), "b": (0, 1)}
    assert [state_of(None, False, None), state_of("keep", False, None), state_of("revoke", False, None),
            state_of("revoke", True, None), state_of("revoke", False, "still there")] == [
        "open", "kept", "revoking", "revoked", "revoke_failed"]
