"""Properties of the planner over arbitrary desired and recorded states.

A: closed under its own application — apply every operation, plan again: nothing left.
B: deterministic whatever the input order; a leaver's operations run at leaver priority,
   before everything else.
C: a protected account is never deactivated or deleted.

JML_PROPERTY_EXAMPLES raises the example count for a longer local hunt.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

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
KEYS: list[Key] = [(c, e) for c in TRAITS for e in PEOPLE]
USERNAMES = ["ana", "Ana", "bo", "cy", "di"]
ATTR_KEYS = ["given_name", "title", "department"]
ATTR_VALUES = ["", "x", "y"]

attributes = st.dictionaries(st.sampled_from(ATTR_KEYS), st.sampled_from(ATTR_VALUES), max_size=3)


# Strategies are built once: building them per draw costs more than the planner itself.
_DESIRED_FIELDS = {c: st.tuples(
    st.sampled_from(USERNAMES), st.booleans(), attributes, st.frozensets(st.sampled_from(GRANTS[c])),
    st.sampled_from(["r1", "r2"]), st.booleans(), st.booleans(), st.booleans(), st.booleans()) for c in TRAITS}
_RECORD_FIELDS = {c: st.tuples(
    st.sampled_from(USERNAMES), st.booleans(), attributes, st.frozensets(st.sampled_from(GRANTS[c])),
    st.booleans(), st.booleans()) for c in TRAITS}


def desired_account(draw: st.DrawFn, key: Key) -> DesiredAccount:
    connector, eid = key
    username, active, attrs, grants, rule, leaver, delete, protected, create = draw(_DESIRED_FIELDS[connector])
    if leaver:
        # policy.desired() never creates a leaver's account. Without this, a leaver whose
        # account a successor adopted (conversion) would be re-created on the next plan.
        create = False
    else:
        # policy.desired() deletes only for a leaver (GONE). A non-leaver wanting deletion
        # whose account is gone would adopt a same-named leaver's account by conversion and
        # delete that too, on every plan.
        delete = False
    return DesiredAccount(connector, eid, username, active, attrs, {g: rule for g in sorted(grants)},
                          delete=delete, leaver=leaver, protected=protected, create=create)


def account_record(draw: st.DrawFn, key: Key) -> AccountRecord:
    connector, eid = key
    username, active, attrs, grants, remote, deleted = draw(_RECORD_FIELDS[connector])
    return AccountRecord(connector, eid, username, active, attrs, grants,
                         remote_id=f"r-{connector}-{eid}" if remote else None, deleted=deleted)


def _unique_records(items: list[AccountRecord]) -> dict[Key, AccountRecord]:
    """One live account per userName per connector (case-insensitive): the apps enforce it,
    and records hold only what an app accepted."""
    seen: set[tuple[str, str]] = set()
    out = {}
    for r in items:
        if not r.deleted:
            if (r.connector, r.username.casefold()) in seen:
                r = replace(r, username=f"{r.username}-{r.employee_id}")
            seen.add((r.connector, r.username.casefold()))
        out[(r.connector, r.employee_id)] = r
    return out


@dataclass(frozen=True)
class World:
    desired: list[DesiredAccount]
    records: dict[Key, AccountRecord]
    scope: list[str]
    known_groups: dict[str, frozenset[str]] | None

    def plan(self, records: Mapping[Key, AccountRecord] | None = None) -> Plan:
        return diff(self.desired, self.records if records is None else records, TRAITS,
                    scope=self.scope, known_groups=self.known_groups)


ALL_GROUPS = sorted({g for gs in GRANTS.values() for g in gs})


_KEY_LISTS = st.lists(st.sampled_from(KEYS), unique=True, max_size=8)
_SCOPE = st.lists(st.sampled_from(PEOPLE), unique=True, max_size=3)
_KNOWN_GROUPS = st.none() | st.dictionaries(st.sampled_from(list(TRAITS)), st.frozensets(st.sampled_from(ALL_GROUPS)))


@st.composite
def worlds(draw: st.DrawFn) -> World:
    wanted = draw(_KEY_LISTS)
    held = draw(_KEY_LISTS)
    desired = [desired_account(draw, k) for k in wanted]
    records = _unique_records([account_record(draw, k) for k in held])
    scope = draw(_SCOPE)
    known = draw(_KNOWN_GROUPS)
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
@given(worlds(), st.integers(0, 2**32))
def test_b_deterministic_and_leavers_first(world: World, seed: int) -> None:
    rnd = random.Random(seed)
    plan = world.plan()
    shuffled = list(world.desired)
    rnd.shuffle(shuffled)
    items = list(world.records.items())
    rnd.shuffle(items)
    again = diff(shuffled, dict(items), TRAITS, scope=list(reversed(world.scope)), known_groups=world.known_groups)
    assert again.operations == plan.operations
    assert again.skipped == plan.skipped

    leavers = {(d.connector, d.employee_id) for d in world.desired if d.leaver}
    for op in plan.operations:
        if (op.connector, op.employee_id) in leavers:
            assert op.priority is Priority.LEAVER, op
    priorities = [op.priority for op in plan.operations]
    assert priorities == sorted(priorities), "leavers' operations come first"


@SETTINGS
@given(worlds())
def test_c_protected_accounts_are_never_deactivated_or_deleted(world: World) -> None:
    protected = {(d.connector, d.employee_id) for d in world.desired if d.protected}
    for op in world.plan().operations:
        if (op.connector, op.employee_id) in protected:
            assert op.action not in (Action.DEACTIVATE, Action.DELETE), op
