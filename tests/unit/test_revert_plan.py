"""The pure inverse of an applied plan (jml/revert_plan.py): each applied operation's inverse
against today's records, what cannot be restored and why, who is refused, and the person
state written back."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from jml import guard
from jml import plan as planner
from jml.lifecycle import LifecycleRules
from jml.model import (
    AccountRecord,
    Action,
    ConnectorTraits,
    Operation,
    Override,
    OverrideKind,
    Person,
    PersonState,
    Priority,
    Status,
)
from jml.revert_plan import Prior, inverse, restore_person, restore_reasons

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
RULES = LifecycleRules(timezone=ZoneInfo("UTC"))
TRAITS = {
    "scim": ConnectorTraits("scim"),
    "gh": ConnectorTraits("gh", kind="github", create_action="invite", can_delete=False,
                          supports_inactive_create=False),
    "aws": ConnectorTraits("aws", kind="aws_identity_center", assignment_grants=True),
}


def rec(c: str = "scim", eid: str = "E1", *, active: bool = True, grants: tuple[str, ...] = (),
        attrs: dict[str, str] | None = None, deleted: bool = False, username: str = "pat") -> AccountRecord:
    return AccountRecord(c, eid, username, active, attrs or {}, frozenset(grants), deleted=deleted)


def op(action: Action, c: str = "scim", eid: str = "E1", **detail: object) -> Operation:
    return Operation(c, action, eid, {"username": "pat", **detail}, Priority.LEAVER)


def key(o: Operation) -> tuple[str, str, str, str]:
    return (o.connector, o.action.value, o.employee_id, str(o.detail.get("group") or o.detail.get("grant") or ""))


# (applied ops, record before, record today) -> expected inverse (connector, action, person, target)
CASES = [
    ("deactivate -> reactivate", [op(Action.DEACTIVATE)], rec(), rec(active=False),
     [("scim", "reactivate", "E1", "")]),
    ("removed group -> re-added", [op(Action.REMOVE_MEMBER, group="Eng")], rec(grants=("Eng",)), rec(),
     [("scim", "add_member", "E1", "Eng")]),
    ("added group -> removed", [op(Action.ADD_MEMBER, group="Eng")], rec(), rec(grants=("Eng",)),
     [("scim", "remove_member", "E1", "Eng")]),
    ("created -> deactivated", [op(Action.CREATE, attributes={})], None, rec(),
     [("scim", "deactivate", "E1", "")]),
    ("reactivated -> deactivated", [op(Action.REACTIVATE)], rec(active=False), rec(),
     [("scim", "deactivate", "E1", "")]),
    ("already put back by a later plan: nothing", [op(Action.DEACTIVATE), op(Action.REMOVE_MEMBER, group="Eng")],
     rec(grants=("Eng",)), rec(grants=("Eng",)), []),
    ("a leaver's whole chain, in plan order", [op(Action.DEACTIVATE), op(Action.REMOVE_MEMBER, group="A"),
                                               op(Action.REMOVE_MEMBER, group="B")],
     rec(grants=("A", "B")), rec(active=False),
     [("scim", "reactivate", "E1", ""), ("scim", "add_member", "E1", "A"), ("scim", "add_member", "E1", "B")]),
    ("AWS assignment removed -> assigned", [op(Action.UNASSIGN, "aws", grant="Admin@111")],
     rec("aws", grants=("Admin@111",)), rec("aws"), [("aws", "assign", "E1", "Admin@111")]),
    ("GitHub org removal -> re-invited", [op(Action.DEACTIVATE, "gh"), op(Action.REMOVE_MEMBER, "gh", group="team:x")],
     rec("gh", grants=("team:x",)), rec("gh", active=False),
     [("gh", "reactivate", "E1", ""), ("gh", "add_member", "E1", "team:x")]),
    ("GitHub invite -> invitation cancelled", [op(Action.INVITE, "gh", attributes={})], None, rec("gh"),
     [("gh", "cancel_invite", "E1", "")]),
]


@pytest.mark.parametrize(("name", "applied", "before", "today", "expected"), CASES, ids=[c[0] for c in CASES])
def test_inverse_of_each_applied_operation(name: str, applied: list[Operation], before: AccountRecord | None,
                                           today: AccountRecord, expected: list[tuple[str, str, str, str]]) -> None:
    k = (today.connector, today.employee_id)
    prior = {k: before} if before is not None else {}
    inv = inverse(applied, prior, {k: today}, TRAITS, source="p1")
    assert [key(o) for o in inv.operations] == expected
    assert all(o.priority is Priority.NORMAL for o in inv.operations)


def test_inverse_put_through_apply_gives_the_records_before_the_plan() -> None:
    """Closed: the records after the plan, with the inverse applied, are the records before it."""
    before = {("scim", "E1"): rec(grants=("A", "B"), attrs={"title": "Eng", "dept": "R&D"})}
    plan_ops = [op(Action.DEACTIVATE), op(Action.REMOVE_MEMBER, group="A"), op(Action.ADD_MEMBER, group="C"),
                op(Action.UPDATE, previous_username="pat", attributes={"title": "Boss", "dept": ""})]
    after = dict(before)
    for o in plan_ops:
        after = planner.apply(after, o)
    inv = inverse(plan_ops, before, after, TRAITS, source="p1")
    back = dict(after)
    for o in inv.operations:
        back = planner.apply(back, o)
    assert back == before


def test_update_puts_back_previous_values_and_username() -> None:
    before = {("scim", "E1"): rec(attrs={"title": "Eng"}, username="pat")}
    today = {("scim", "E1"): rec(attrs={"title": "Boss"}, username="patricia")}
    applied = [op(Action.UPDATE, username="patricia", previous_username="pat", attributes={"title": "Boss"})]
    (u,) = inverse(applied, before, today, TRAITS).operations
    assert u.action is Action.UPDATE and u.detail["username"] == "pat" and u.detail["attributes"] == {"title": "Eng"}
    assert u.detail["previous_username"] == "patricia"


@pytest.mark.parametrize(("applied", "today", "traits", "says"), [
    ([op(Action.DELETE)], rec(deleted=True, active=False), TRAITS, "final; it is gone"),
    ([op(Action.DEACTIVATE)], rec(deleted=True, active=False), TRAITS, "no longer exists"),
    ([op(Action.UPDATE, attributes={"title": "x"})], rec(), TRAITS, "previous values were not recorded"),
    ([op(Action.DEACTIVATE)], rec(active=False), {}, "connector no longer configured"),
    ([op(Action.UPDATE, previous_employee_id="E0", attributes={})], rec(), TRAITS, "taken over from E0"),
], ids=["delete", "deleted-since", "update-without-prior", "connector-gone", "conversion"])
def test_what_cannot_be_restored_says_why(applied: list[Operation], today: AccountRecord,
                                          traits: dict[str, ConnectorTraits], says: str) -> None:
    inv = inverse(applied, {}, {("scim", "E1"): today}, traits)
    assert inv.operations == []
    assert len(inv.cannot) == 1 and says in inv.cannot[0].reason and inv.cannot[0].employee_id == "E1"


def test_github_org_membership_comes_back_only_as_an_invitation() -> None:
    inv = inverse([op(Action.DEACTIVATE, "gh")], {}, {("gh", "E1"): rec("gh", active=False)}, TRAITS)
    assert [n.connector for n in inv.partly] == ["gh"] and "invitation" in inv.partly[0].reason
    scim = inverse([op(Action.DEACTIVATE)], {}, {("scim", "E1"): rec(active=False)}, TRAITS)
    assert scim.partly == []


def test_refused_people_get_nothing_the_rest_goes_on() -> None:
    applied = [op(Action.DEACTIVATE, eid="E1"), op(Action.DEACTIVATE, eid="E2")]
    today = {("scim", "E1"): rec(active=False), ("scim", "E2"): rec(eid="E2", active=False)}
    inv = inverse(applied, {}, today, TRAITS, refused={"E1"})
    assert [(o.employee_id, o.action) for o in inv.operations] == [("E2", Action.REACTIVATE)]


def test_regrant_names_the_revert_as_its_rule() -> None:
    (o,) = inverse([op(Action.REMOVE_MEMBER, group="A")], {}, {("scim", "E1"): rec()}, TRAITS, source="abc").operations
    assert o.detail["rule"] == "revert:abc"


# ---- the person state written back -------------------------------------------------------------
ACTIVE = Person("E1", Status.ACTIVE, hire_date=dt.date(2020, 1, 1))
TERMINATED = Person("E1", Status.TERMINATED, hire_date=dt.date(2020, 1, 1), termination_date=dt.date(2026, 3, 1))
OFFBOARD = Override(OverrideKind.OFFBOARD, NOW - dt.timedelta(hours=1), "by mistake", "hr@acme")
HR_TERM = Override(OverrideKind.HR_TERMINATION, NOW - dt.timedelta(hours=1), "", "hr")


def state(person: Person, override: Override | None = None, missing: int = 0) -> PersonState:
    return PersonState("E1", person, override=override, missing_count=missing)


@pytest.mark.parametrize(("origin", "prior", "today", "want_override", "refused"), [
    ("offboard", state(ACTIVE, OFFBOARD), state(ACTIVE, OFFBOARD), None, None),
    ("event", state(ACTIVE, Override(OverrideKind.IDP_DEACTIVATE, NOW, "", "okta")),
     state(ACTIVE, Override(OverrideKind.IDP_DEACTIVATE, NOW - dt.timedelta(minutes=5), "", "okta")), None, None),
    ("offboard", state(ACTIVE, OFFBOARD), state(TERMINATED, OFFBOARD), None, "leaver"),
    ("event", state(ACTIVE, HR_TERM), state(ACTIVE, HR_TERM), None, "leaver"),
    ("export", state(ACTIVE), state(ACTIVE, missing=2), None, "leaver"),
], ids=["offboard-lifted", "idp-lifted", "hr-terminated-refused", "hr-termination-refused", "missing-refused"])
def test_restore_person(origin: str, prior: PersonState, today: PersonState, want_override: Override | None,
                        refused: str | None) -> None:
    r = restore_person(origin, Prior("E1", prior, "h0", {}), today, NOW, RULES)
    if refused:
        assert r.refused is not None and refused in r.refused and r.state is None
    else:
        assert r.refused is None and r.state is not None and r.state.override == want_override


def test_export_plan_restores_the_hr_data_and_row_hash_from_before() -> None:
    mover = Person("E1", Status.ACTIVE, department="Sales", hire_date=dt.date(2020, 1, 1))
    r = restore_person("export", Prior("E1", state(ACTIVE), "before", {}), state(mover), NOW, RULES)
    assert r.state is not None and r.state.person == ACTIVE and r.row_hash == "before"


def test_a_revert_that_gives_no_access_back_is_never_refused_and_a_revert_of_a_revert_restores_whole() -> None:
    r = restore_person("revert:p1", Prior("E1", state(ACTIVE, OFFBOARD), "h", {}), state(ACTIVE), NOW, RULES,
                       gives_access=False)
    assert r.refused is None and r.state is not None and r.state.override == OFFBOARD


def test_nothing_to_write_back_when_nothing_changed() -> None:
    assert restore_person("offboard", None, state(ACTIVE), NOW, RULES).state is None


@pytest.mark.parametrize(("people", "managed", "held"), [(10, 1000, False), (10, 100, True), (101, 100000, True)])
def test_restoring_access_to_many_people_is_held(people: int, managed: int, held: bool) -> None:
    ops = [Operation("scim", Action.REACTIVATE, f"E{i}", {"username": f"u{i}"}) for i in range(people)]
    reasons = restore_reasons(ops, managed={"scim": managed}, limits=guard.Limits())
    assert bool(reasons) is held
    assert all("restore access" in r for r in reasons)
