"""Properties of the planner over arbitrary desired and recorded states.

A: closed under its own application — apply every operation, plan again: nothing left.
B: deterministic whatever the input order; a leaver's operations run at leaver priority,
   before everything else.
C: a protected account is never deactivated or deleted.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from jml.model import AccountRecord, Action, ConnectorTraits, DesiredAccount, Priority
from jml.plan import Key, Plan, apply, diff

TRAITS: dict[str, ConnectorTraits] = {
    "demo": ConnectorTraits("demo"),
    "aws": ConnectorTraits("aws", kind="aws_identity_center", assignment_grants=True),
    "github": ConnectorTraits("github", kind="github", create_action="invite", can_delete=False),
}
GRANTS = {
    "demo": ["group:all", "group:eng", "group:ops"],
    "aws": ["Dev@111", "Admin@222", "group:all"],
    "github": ["team:eng", "team:ops", "group:all"],
}
PEOPLE = [f"E{i}" for i in range(6)]
USERNAMES = ["ana", "Ana", "bo", "cy", "di", "ed", "fay"]
ATTR_KEYS = ["given_name", "title", "department"]
ATTR_VALUES = ["", "x", "y"]

attributes = st.dictionaries(st.sampled_from(ATTR_KEYS), st.sampled_from(ATTR_VALUES), max_size=3)


def grant_sets(connector: str) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(GRANTS[connector]))


@st.composite
def desired_account(draw: st.DrawFn, key: Key) -> DesiredAccount:
    connector, eid = key
    username, active, attrs, grants, rule, leaver, delete, protected, create = draw(st.tuples(
        st.sampled_from(USERNAMES), st.booleans(), attributes, grant_sets(connector), st.sampled_from(["r1", "r2"]),
        st.booleans(), st.booleans(), st.booleans(), st.booleans()))
    if leaver:
        # policy.desired() gives a leaver an inactive account, no grants, and never creates
        # one (a leaver with create=True would be re-created after a conversion adopted its
        # account). Only a leaver (GONE) is ever deleted.
        active, grants, create = False, frozenset(), False
    else:
        delete = False
    return DesiredAccount(connector, eid, username, active, attrs, {g: rule for g in sorted(grants)},
                          delete=delete, leaver=leaver, protected=protected, create=create)


@st.composite
def account_record(draw: st.DrawFn, key: Key) -> AccountRecord:
    connector, eid = key
    username, active, attrs, grants, remote, deleted = draw(st.tuples(
        st.sampled_from(USERNAMES), st.booleans(), attributes, grant_sets(connector), st.booleans(), st.booleans()))
    return AccountRecord(connector, eid, username, active, attrs, grants,
                         remote_id=f"r-{connector}-{eid}" if remote else None, deleted=deleted)


KEYS = ["given_name", "title", "department"]
ATTR_VALUES = ["", "x", "y"]

attributes = st.dictionaries(st.sampled_from(ATTR_KEYS), st.sampled_from(ATTR_VALUES), max_size=3)


@st.composite
def desired_account(draw: st.DrawFn, key: Key) -> DesiredAccount:
    connector, eid = key
    grants = draw(st.lists(st.sampled_from(GRANTS[connector]), unique=True))
    return DesiredAccount(
        connector, eid, draw(st.sampled_from(USERNAMES)), draw(st.booleans()), draw(attributes),
        {g: draw(st.sampled_from(["r1", "r2"])) for g in grants},
        delete=draw(st.booleans()), leaver=draw(st.booleans()), protected=draw(st.booleans()),
        create=draw(st.booleans()),
    )


@st.composite
def account_record(draw: st.DrawFn, key: Key) -> AccountRecord:
    connector, eid = key
    return AccountRecord(
        connector, eid, draw(st.sampled_from(USERNAMES)), draw(st.booleans()), draw(attributes),
        frozenset(draw(st.lists(st.sampled_from(GRANTS[connector]), unique=True))),
        remote_id=draw(st.sampled_from([None, f"r-{connector}-{eid}"])), deleted=draw(st.booleans()),
    )


KEYS = [(c, e) for c in TRAITS for e in PEOPLE]


@dataclass(frozen=True)
class World:
    desired: list[DesiredAccount]
    records: dict[Key, AccountRecord]
    scope: list[str]
    known_groups: dict[str, frozenset[str]] | None

    def plan(self, records: Mapping[Key, AccountRecord] | None = None) -> Plan:
        return diff(self.desired, self.records if records is None else records, TRAITS,
                    scope=self.scope, known_groups=self.known_groups)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    wanted = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=10))
    held = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=10))
    desired = [draw(desired_account(k)) for k in wanted]
    records = {k: draw(account_record(k)) for k in held}
    scope = draw(st.lists(st.sampled_from(PEOPLE), unique=True, max_size=3))
    known = draw(st.none() | st.dictionaries(
        st.sampled_from(list(TRAITS)), st.frozensets(st.sampled_from([g for gs in GRANTS.values() for g in gs]))))
    return World(desired, records, scope, known)


SETTINGS = settings(max_examples=int(os.environ.get("JML_PROPERTY_EXAMPLES", "200")), deadline=None)


@SETTINGS
@given(worlds())
def test_a_applying_a_plan_leaves_nothing_to_do(world: World) -> None:
    plan = world.plan()
    state = dict(world.records)
    for i, op in enumerate(plan.operations):
        state = apply(state, op, remote_id=f"new-{i}")
    again = world.plan(state)
    assert again.operations == [], (plan.operations, again.operations)


@SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_b_deterministic_and_leavers_first(world: World, rnd: random.Random) -> None:
    plan = world.plan()
    shuffled_desired = list(world.desired)
    rnd.shuffle(shuffled_desired)
    items = list(world.records.items())
    rnd.shuffle(items)
    again = diff(shuffled_desired, dict(items), TRAITS, scope=list(reversed(world.scope)),
                 known_groups=world.known_groups)
    assert again.operations == plan.operations
    assert again.skipped == plan.skipped

    leavers = {(d.connector, d.employee_id) for d in world.desired if d.leaver}
    for op in plan.operations:
        if (op.connector, op.employee_id) in leavers:
            assert op.priority is Priority.LEAVER, op
    priorities = [op.priority for op in plan.operations]
    assert priorities == sorted(priorities)


@SETTINGS
@given(worlds())
def test_c_protected_accounts_are_never_deactivated_or_deleted(world: World) -> None:
    protected = {(d.connector, d.employee_id) for d in world.desired if d.protected}
    for op in world.plan().operations:
        if (op.connector, op.employee_id) in protected:
            assert op.action not in (Action.DEACTIVATE, Action.DELETE), op
