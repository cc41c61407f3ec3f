"""The planner: given recorded accounts and desired accounts, expect these operations.

Operations are written compactly as "[!]connector action employee_id [group|grant]",
"!" marking leaver priority, in the order the plan must run them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from jml.model import AccountRecord, Action, ConnectorTraits, DesiredAccount, Operation, Priority
from jml.plan import Key, Plan, apply, diff

DEMO = ConnectorTraits("demo")
AWS = ConnectorTraits("aws", kind="aws_identity_center", assignment_grants=True)
GITHUB = ConnectorTraits("github", kind="github", create_action="invite", can_delete=False,
                         required_attribute="github_username")
TRAITS = {t.name: t for t in (DEMO, AWS, GITHUB)}

ANA = "ana@acme.example"
ATTRS = {"given_name": "Ana", "family_name": "Smith", "title": "Engineer", "department": "Engineering"}


def want(connector: str = "demo", eid: str = "E1", username: str = ANA, *, active: bool = True,
         attributes: Mapping[str, str] = ATTRS, grants: Mapping[str, str] | None = None,
         **kw: Any) -> DesiredAccount:
    return DesiredAccount(connector, eid, username, active, dict(attributes), dict(grants or {}), **kw)


def leaver(connector: str = "demo", eid: str = "E1", username: str = ANA, **kw: Any) -> DesiredAccount:
    return want(connector, eid, username, active=False, leaver=True, create=False, **kw)


def rec(connector: str = "demo", eid: str = "E1", username: str = ANA, *, active: bool = True,
        attributes: Mapping[str, str] = ATTRS, grants: Iterable[str] = (), **kw: Any) -> AccountRecord:
    return AccountRecord(connector, eid, username, active, dict(attributes), frozenset(grants),
                         remote_id=f"r-{connector}-{eid}", **kw)


def records(*rs: AccountRecord) -> dict[Key, AccountRecord]:
    return {(r.connector, r.employee_id): r for r in rs}


def show(op: Operation) -> str:
    target = op.detail.get("group", op.detail.get("grant", ""))
    mark = "!" if op.priority is Priority.LEAVER else ""
    return f"{mark}{op.connector} {op.action.value} {op.employee_id or '-'} {target}".rstrip()


def plan(ds: Iterable[DesiredAccount], rs: Iterable[AccountRecord] = (), **kw: Any) -> Plan:
    return diff(list(ds), records(*rs), TRAITS, **kw)


EVERYONE = {"group:All Staff": "everyone"}
ENG = {"group:All Staff": "everyone", "group:Engineering": "engineering"}

# (id, desired, records, diff kwargs, expected operations in order)
CASES: list[tuple[str, list[DesiredAccount], list[AccountRecord], dict[str, Any], list[str]]] = [
    ("joiner-create-then-grants", [want(grants=ENG)], [], {},
     ["demo create E1", "demo add_member E1 group:All Staff", "demo add_member E1 group:Engineering"]),
    ("joiner-without-grants", [want()], [], {}, ["demo create E1"]),
    ("joiner-invite-style-connector", [want("github", username="ana-gh", grants={"team:engineering": "eng"})], [], {},
     ["github invite E1", "github add_member E1 team:engineering"]),
    ("joiner-aws-assignments-and-groups",
     [want("aws", grants={"Developer@111111111111": "eng", "group:Admins": "ops"})], [], {},
     ["aws create E1", "aws add_member E1 group:Admins", "aws assign E1 Developer@111111111111"]),
    ("prehire-created-inactive-without-grants", [want(active=False)], [], {}, ["demo create E1"]),
    ("not-yet-hire-no-account-nothing", [want(active=False, create=False)], [], {}, []),
    ("unchanged-nothing", [want(grants=ENG)], [rec(grants=ENG)], {}, []),
    ("mover-gains-and-loses-groups", [want(grants={"group:All Staff": "e", "group:Sales": "s"})],
     [rec(grants=ENG)], {},
     ["demo remove_member E1 group:Engineering", "demo add_member E1 group:Sales"]),
    ("mover-aws-unassign", [want("aws", grants={"Developer@111111111111": "eng"})],
     [rec("aws", grants={"Developer@111111111111", "Admin@333333333333", "group:Admins"})], {},
     ["aws unassign E1 Admin@333333333333", "aws remove_member E1 group:Admins"]),
    ("mover-attribute-change-is-update", [want(attributes={**ATTRS, "title": "Lead"})], [rec()], {},
     ["demo update E1"]),
    ("username-change-is-update", [want(username="ana.smith@acme.example")], [rec()], {}, ["demo update E1"]),
    ("suspended-deactivated-grants-kept", [want(active=False, grants=ENG)], [rec(grants=ENG)], {},
     ["demo deactivate E1"]),
    ("leaver-deactivate-then-remove-every-grant", [leaver()], [rec(grants=ENG)], {},
     ["!demo deactivate E1", "!demo remove_member E1 group:All Staff", "!demo remove_member E1 group:Engineering"]),
    ("leaver-aws-unassign", [leaver("aws")], [rec("aws", grants={"Developer@111111111111", "group:Admins"})], {},
     ["!aws deactivate E1", "!aws unassign E1 Developer@111111111111", "!aws remove_member E1 group:Admins"]),
    ("leaver-already-deactivated-nothing", [leaver()], [rec(active=False)], {}, []),
    ("leaver-without-account-nothing", [leaver()], [], {}, []),
    ("leaver-attribute-change-ignored", [leaver(attributes={}, username="")], [rec(active=False)], {}, []),
    ("leaver-before-normal-work",
     [want(eid="E0", username="bo@acme.example", grants=EVERYONE), leaver(eid="E9")],
     [rec(eid="E9", grants=EVERYONE)], {},
     ["!demo deactivate E9", "!demo remove_member E9 group:All Staff",
      "demo create E0", "demo add_member E0 group:All Staff"]),
    ("leavers-first-across-connectors",
     [want("aws", "E0"), leaver("github", "E9", "ana-gh")], [rec("github", "E9", "ana-gh")], {},
     ["!github deactivate E9", "aws create E0"]),
    ("rehire-reactivates-and-regrants", [want(grants=EVERYONE)], [rec(active=False)], {},
     ["demo reactivate E1", "demo add_member E1 group:All Staff"]),
    ("gone-deletes", [leaver(delete=True)], [rec(active=False)], {}, ["!demo delete E1"]),
    ("gone-straight-from-active", [leaver(delete=True)], [rec(grants=EVERYONE)], {},
     ["!demo deactivate E1", "!demo remove_member E1 group:All Staff", "!demo delete E1"]),
    ("gone-already-deleted-nothing", [leaver(delete=True)], [rec(active=False, deleted=True)], {}, []),
    ("protected-gone-not-deleted", [leaver(delete=True, protected=True)], [rec(active=False)], {}, []),
    ("protected-leaver-not-deactivated", [leaver(protected=True)], [rec()], {}, []),
    ("protected-suspended-not-deactivated", [want(active=False, protected=True)], [rec()], {}, []),
    ("deleted-then-rehired-one-new-account", [want(grants=EVERYONE)], [rec(active=False, deleted=True)], {},
     ["demo create E1", "demo add_member E1 group:All Staff"]),
    ("deleted-not-recreated-for-not-yet-hire", [want(active=False, create=False)],
     [rec(active=False, deleted=True)], {}, []),
    ("not-yet-hire-with-old-account-deactivated", [want(active=False, create=False)], [rec(grants=EVERYONE)], {},
     ["demo deactivate E1", "demo remove_member E1 group:All Staff"]),
    ("scoped-person-out-of-connector-rules",
     [want(grants=EVERYONE)], [rec(grants=EVERYONE), rec("github", username="ana-gh", grants={"team:eng"})], {},
     ["github deactivate E1", "github remove_member E1 team:eng"]),
    ("scope-without-desired-accounts", [], [rec("aws", grants={"Developer@111111111111"})], {"scope": ["E1"]},
     ["aws deactivate E1", "aws unassign E1 Developer@111111111111"]),
    ("out-of-scope-records-untouched", [want(eid="E0")],
     [rec(eid="E0"), rec(eid="E5", grants=EVERYONE), rec("aws", "E6")], {"scope": ["E0"]}, []),
    ("unknown-connector-ignored", [want("okta-legacy")], [], {}, []),
    ("create-group-for-unknown-group",
     [want(grants=ENG)], [], {"known_groups": {"demo": frozenset({"group:All Staff"})}},
     ["demo create_group - group:Engineering", "demo create E1", "demo add_member E1 group:All Staff",
      "demo add_member E1 group:Engineering"]),
    ("no-create-group-when-known",
     [want(grants=ENG)], [], {"known_groups": {"demo": frozenset({"group:All Staff", "group:Engineering"})}},
     ["demo create E1", "demo add_member E1 group:All Staff", "demo add_member E1 group:Engineering"]),
    ("create-group-once-for-two-people",
     [want(grants=EVERYONE), want(eid="E2", username="bo@acme.example", grants=EVERYONE)], [], {"known_groups": {}},
     ["demo create_group - group:All Staff", "demo create E1", "demo add_member E1 group:All Staff",
      "demo create E2", "demo add_member E2 group:All Staff"]),
    ("no-create-group-for-assignments",
     [want("aws", grants={"Developer@111111111111": "eng"})], [], {"known_groups": {}},
     ["aws create E1", "aws assign E1 Developer@111111111111"]),
    ("conversion-adopts-leavers-account",
     [leaver(eid="E1"), want(eid="E2", grants=ENG)], [rec(eid="E1", grants=EVERYONE)], {},
     ["demo update E2", "demo add_member E2 group:Engineering"]),
    ("conversion-of-deactivated-account-reactivates",
     [leaver(eid="E1"), want(eid="E2", username="Ana@ACME.example")], [rec(eid="E1", active=False)], {},
     ["demo update E2", "demo reactivate E2"]),
    ("two-successors-with-one-username-only-one-adopts",
     [leaver(eid="E1"), want(eid="E2"), want(eid="E3")], [rec(eid="E1")], {},
     ["demo update E2", "demo create E3"]),
    ("no-conversion-when-old-owner-is-not-leaving",
     [want(eid="E1", username="ana.old@acme.example"), want(eid="E2")], [rec(eid="E1")], {},
     ["demo update E1", "demo create E2"]),
]


@pytest.mark.parametrize(("ds", "rs", "kw", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_diff(ds: list[DesiredAccount], rs: list[AccountRecord], kw: dict[str, Any], expected: list[str]) -> None:
    p = plan(ds, rs, **kw)
    assert [show(op) for op in p.operations] == expected
    # Closed under its own application: replaying the plan leaves nothing to do.
    state = records(*rs)
    for i, op in enumerate(p.operations):
        state = apply(state, op, remote_id=f"new-{i}")
    assert [show(op) for op in diff(ds, state, TRAITS, **kw).operations] == []


def test_create_detail_carries_everything_and_grants_name_their_rule() -> None:
    ops = plan([want(grants=ENG)]).operations
    assert ops[0].detail == {"username": ANA, "active": True, "attributes": ATTRS}
    assert [op.detail for op in ops[1:]] == [
        {"username": ANA, "rule": "everyone", "group": "group:All Staff"},
        {"username": ANA, "rule": "engineering", "group": "group:Engineering"},
    ]
    assert all(op.priority is Priority.NORMAL for op in ops)


def test_assign_detail() -> None:
    (_create, assign) = plan([want("aws", grants={"Developer@111111111111": "eng"})]).operations
    assert assign.action is Action.ASSIGN
    assert assign.detail == {"username": ANA, "rule": "eng", "grant": "Developer@111111111111"}


def test_update_carries_only_changed_attributes_and_removals_as_empty() -> None:
    old = {"title": "Engineer", "department": "Engineering", "location": "Berlin"}
    new = {"title": "Lead", "department": "Engineering", "cost_center": "CC1"}
    (op,) = plan([want(attributes=new)], [rec(attributes=old)]).operations
    assert op.action is Action.UPDATE
    assert op.detail["attributes"] == {"title": "Lead", "cost_center": "CC1", "location": ""}
    assert op.detail["all_attributes"] == new
    assert (op.detail["username"], op.detail["previous_username"]) == (ANA, ANA)


def test_username_change_update() -> None:
    (op,) = plan([want(username="ana.smith@acme.example")], [rec()]).operations
    assert op.detail["username"] == "ana.smith@acme.example"
    assert op.detail["previous_username"] == ANA
    assert op.detail["attributes"] == {}


def test_leaver_ops_address_the_recorded_username() -> None:
    ops = plan([leaver(username="", attributes={})], [rec(grants=EVERYONE)]).operations
    assert [op.detail["username"] for op in ops] == [ANA, ANA]
    assert all(op.priority is Priority.LEAVER for op in ops)


@pytest.mark.parametrize(
    ("d", "r", "reason"),
    [
        pytest.param(leaver(protected=True), rec(), "protected account: not deactivated", id="leaver"),
        pytest.param(leaver(protected=True, delete=True), rec(active=False), "protected account: not deleted",
                     id="gone"),
        pytest.param(want(active=False, protected=True), rec(), "protected account: not deactivated",
                     id="suspended"),
    ],
)
def test_protected_skips_are_recorded(d: DesiredAccount, r: AccountRecord, reason: str) -> None:
    p = plan([d], [r])
    assert not [op for op in p.operations if op.action in (Action.DEACTIVATE, Action.DELETE)]
    assert [(s.connector, s.employee_id, s.reason) for s in p.skipped] == [("demo", "E1", reason)]


def test_conversion_detail_and_no_deactivate_of_old_id() -> None:
    p = plan([leaver(eid="E1"), want(eid="E2", grants=EVERYONE)], [rec(eid="E1", grants=EVERYONE)])
    (op,) = p.operations
    assert (op.action, op.employee_id, op.priority) == (Action.UPDATE, "E2", Priority.NORMAL)
    assert op.detail == {"username": ANA, "attributes": ATTRS, "all_attributes": ATTRS, "external_id": "E2",
                         "previous_employee_id": "E1"}
    after = apply(records(rec(eid="E1", grants=EVERYONE)), op)
    assert set(after) == {("demo", "E2")}
    assert after[("demo", "E2")].remote_id == "r-demo-E1"
    assert after[("demo", "E2")].grants == frozenset(EVERYONE)


def test_conversion_runs_before_the_new_owners_other_steps() -> None:
    p = plan([leaver(eid="E1"), want(eid="E2", grants=ENG)], [rec(eid="E1", active=False)])
    assert [show(op) for op in p.operations] == [
        "demo update E2", "demo reactivate E2", "demo add_member E2 group:All Staff",
        "demo add_member E2 group:Engineering"]


def test_deterministic_whatever_the_input_order() -> None:
    ds = [want(grants=ENG), leaver(eid="E2", username="bo@acme.example"), want("aws", grants={"A@1": "r"}),
          want("github", "E3", "cy", grants={"team:x": "r"}), leaver("aws", "E2", "bo@acme.example", delete=True),
          want(eid="E4", username="di@acme.example", active=False)]
    rs = [rec(eid="E2", username="bo@acme.example", grants=EVERYONE), rec("aws", "E2", "bo@acme.example"),
          rec(eid="E4", username="di@acme.example"), rec("github", "E3", "cy", active=False),
          rec("demo", "E7", "gi@acme.example")]
    reference = plan(ds, rs, scope=["E7"], known_groups={"demo": frozenset()})
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(ds)
        rng.shuffle(rs)
        again = plan(ds, rs, scope=["E7"], known_groups={"demo": frozenset()})
        assert again.operations == reference.operations
        assert again.skipped == reference.skipped
    assert [op.priority for op in reference.operations] == sorted(op.priority for op in reference.operations)


def test_summary_counts_by_action() -> None:
    p = plan([want(grants=ENG), leaver(eid="E2", username="bo@acme.example")],
             [rec(eid="E2", username="bo@acme.example", grants=EVERYONE)])
    assert p.summary() == {"add_member": 2, "create": 1, "deactivate": 1, "remove_member": 1}
