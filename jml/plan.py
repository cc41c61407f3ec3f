"""The planner: desired accounts vs recorded accounts -> ordered operations. Pure.

Deterministic (sorted by Operation.key: leavers first, then connector, person, step),
minimal (an update carries only changed attributes), and closed under its own
application: `apply(plan(d, s), s)` re-planned against `d` yields nothing.
"""

from __future__ import annotations

import bisect
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from jml.model import (
    AccountRecord,
    Action,
    ConnectorTraits,
    DesiredAccount,
    Operation,
    Priority,
    keyshared_dict,
)

Key = tuple[str, str]  # (connector, employee_id)


@dataclass(frozen=True, slots=True)
class Skip:
    connector: str
    employee_id: str
    reason: str


@dataclass(slots=True)
class Plan:
    operations: list[Operation] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        # Counted by the enum member, named once per action (an enum's .value is a property:
        # read per operation it cost more than the counting, 290k operations a plan).
        counts = Counter(op.action for op in self.operations)
        return dict(sorted((a.value, n) for a, n in counts.items()))


def _is_assignment(grant: str, traits: ConnectorTraits) -> bool:
    return traits.assignment_grants and "@" in grant and not grant.startswith("group:")


# Empty classes whose instances' __dict__ are operations' details (jml.model.keyshared_dict):
# a first import makes ~3 operations a person, each detail with the same few keys.
class _GroupDetail:
    pass


class _GrantDetail:
    pass


class _CreateDetail:
    pass


def _grant_op(connector: str, eid: str, username: str, grant: str, add: bool, traits: ConnectorTraits,
              priority: Priority, rule: str | None = None) -> Operation:
    assignment = _is_assignment(grant, traits)
    detail: dict[str, str] = keyshared_dict(_GrantDetail if assignment else _GroupDetail)
    detail["username"] = username
    if rule:
        detail["rule"] = rule  # which rule granted it: kept with the grant for the audit trail
    if assignment:
        detail["grant"] = grant
        return Operation(connector, Action.ASSIGN if add else Action.UNASSIGN, eid, detail, priority)
    detail["group"] = grant
    return Operation(connector, Action.ADD_MEMBER if add else Action.REMOVE_MEMBER, eid, detail, priority)


def _changed(desired: Mapping[str, str], recorded: Mapping[str, str]) -> dict[str, str]:
    # An empty value and an absent one are the same (apply() drops empties), or an update
    # setting "" would be planned again forever.
    out = {k: v for k, v in desired.items() if recorded.get(k, "") != v}
    out.update({k: "" for k, v in recorded.items() if k not in desired and v})
    return out


def diff(
    desired: Iterable[DesiredAccount],
    records: Mapping[Key, AccountRecord],
    traits: Mapping[str, ConnectorTraits],
    *,
    scope: Iterable[str] = (),
    known_groups: Mapping[str, frozenset[str]] | None = None,
    protected: frozenset[str] = frozenset(),
) -> Plan:
    """Operations that make the recorded state match `desired`.

    `scope` lists employee_ids whose *every* account is being planned: a recorded account
    of a scoped person with no desired counterpart loses its access (a mover out of a
    connector's rules). Records of people out of scope are left alone.
    """
    plan = Plan()
    wanted: dict[Key, DesiredAccount] = {(d.connector, d.employee_id): d for d in desired}
    scoped = set(scope)
    scoped.update(eid for _, eid in wanted)
    for key, recorded in records.items():
        if key[1] in scoped and key not in wanted and not recorded.deleted:
            # `protected` (casefolded userNames / employee_ids) covers accounts no rule names any more.
            guarded = recorded.username.casefold() in protected or key[1].casefold() in protected
            wanted[key] = DesiredAccount(key[0], key[1], recorded.username, False, recorded.attributes, {},
                                         create=False, protected=guarded)
    adopted = _conversions(wanted, records)
    consumed = {(r.connector, r.employee_id) for r in adopted.values()}
    for key in sorted(wanted):
        d = wanted[key]
        t = traits.get(d.connector)
        if t is None or key in consumed:
            continue  # unknown connector, or an old account now owned by its converted successor
        old = adopted.get(key)
        rec: AccountRecord | None = old if old is not None else records.get(key)
        _plan_account(plan, d, rec, t, converted_from=old.employee_id if old is not None else None)
    # Sorted by Operation.key without a key tuple per operation (288k of them at the peak of a
    # first import): each account's operations were sorted as they were planned, and accounts
    # were planned in (connector, employee_id) order, so a stable sort by priority alone leaves
    # every priority's operations in key order; the few group creations then go in by key,
    # after any operation with an equal key, as the full sort of the list they end left them.
    plan.operations.sort(key=_priority)
    for op in _plan_groups(plan, traits, known_groups):
        bisect.insort_right(plan.operations, op, key=Operation.key)
    return plan


_priority = operator.attrgetter("priority")


def _conversions(
    wanted: Mapping[Key, DesiredAccount], records: Mapping[Key, AccountRecord]
) -> dict[Key, AccountRecord]:
    """Conversion: a new employee_id with the username of a leaver's account
    adopts that account instead of colliding with it. Returns new key -> old record."""
    out: dict[Key, AccountRecord] = {}
    by_username: dict[tuple[str, str], AccountRecord] = {}
    for rec in records.values():
        if not rec.deleted:
            by_username[(rec.connector, rec.username.casefold())] = rec
    claimed: set[Key] = set()
    for key, d in sorted(wanted.items()):
        if key in records and not records[key].deleted:
            continue
        if not d.create or d.leaver:
            continue
        old = by_username.get((d.connector, d.username.casefold()))
        if old is None or old.employee_id == d.employee_id:
            continue
        old_key = (old.connector, old.employee_id)
        old_wish = wanted.get(old_key)
        if old_wish is not None and old_wish.leaver and old_key not in claimed:
            # One successor adopts an account; a second one with the same username (a data
            # error, e.g. a shared github_username) gets a create the app will refuse.
            claimed.add(old_key)
            out[key] = old
    return out


def _plan_account(plan: Plan, d: DesiredAccount, rec: AccountRecord | None, t: ConnectorTraits,
                  converted_from: str | None = None) -> None:
    ops = plan.operations
    start = len(ops)
    _plan_account_ops(plan, d, rec, t, converted_from)
    if len(ops) - start > 1:  # in Operation.key order (diff relies on it)
        ops[start:] = sorted(ops[start:], key=Operation.key)


def _plan_account_ops(plan: Plan, d: DesiredAccount, rec: AccountRecord | None, t: ConnectorTraits,
                      converted_from: str | None) -> None:
    c, eid = d.connector, d.employee_id
    prio = Priority.LEAVER if d.leaver else Priority.NORMAL
    ops = plan.operations
    live = rec is not None and not rec.deleted
    if not live:
        if d.create and not d.delete:
            action = Action.INVITE if t.create_action == "invite" else Action.CREATE
            # The desired attributes are a fresh mapping per person, never mutated: share, don't copy.
            detail: dict[str, object] = keyshared_dict(_CreateDetail)
            detail["username"] = d.username
            detail["active"] = d.active
            detail["attributes"] = d.attributes
            ops.append(Operation(c, action, eid, detail, prio))
            for g in sorted(d.grants):
                ops.append(_grant_op(c, eid, d.username, g, True, t, prio, d.grants[g]))
        return
    assert rec is not None
    if converted_from is not None:
        ops.append(Operation(c, Action.UPDATE, eid, {
            "username": d.username, "attributes": dict(d.attributes), "all_attributes": dict(d.attributes),
            "external_id": eid, "previous_employee_id": converted_from}, prio))
    if rec.active and not d.active:
        if d.protected:  # never deactivated, whatever HR says (leaver, leave of absence, not-yet)
            plan.skipped.append(Skip(c, eid, "protected account: not deactivated"))
        else:
            ops.append(Operation(c, Action.DEACTIVATE, eid, {"username": rec.username}, prio))
    elif not rec.active and d.active:
        ops.append(Operation(c, Action.REACTIVATE, eid, {"username": d.username}, prio))
    if not d.leaver and converted_from is None:
        changed = _changed(d.attributes, rec.attributes)
        if changed or d.username != rec.username:
            ops.append(Operation(c, Action.UPDATE, eid, {
                "username": d.username, "previous_username": rec.username,
                "attributes": changed, "all_attributes": dict(d.attributes)}, prio))
    want = set(d.grants)
    have = set(rec.grants)
    if d.protected and (d.leaver or not d.active):
        # A break-glass account keeps its access whatever HR says: skipping only the
        # deactivation while stripping its admin groups would defeat the point.
        if have - want:
            plan.skipped.append(Skip(c, eid, f"protected account: kept {len(have - want)} grant(s)"))
        want |= have
    for g in sorted(have - want):
        ops.append(_grant_op(c, eid, rec.username, g, False, t, prio))
    for g in sorted(want - have):
        ops.append(_grant_op(c, eid, d.username, g, True, t, prio, d.grants[g]))
    if d.delete:
        if d.protected:
            plan.skipped.append(Skip(c, eid, "protected account: not deleted"))
        else:
            ops.append(Operation(c, Action.DELETE, eid, {"username": rec.username}, prio))


def _plan_groups(plan: Plan, traits: Mapping[str, ConnectorTraits],
                 known_groups: Mapping[str, frozenset[str]] | None) -> list[Operation]:
    """Create each group a grant needs that jml has not seen exist yet (in key order)."""
    if known_groups is None:
        return []
    needed: set[tuple[str, str]] = set()
    for op in plan.operations:
        if op.action is Action.ADD_MEMBER:
            group = str(op.detail["group"])
            if group not in known_groups.get(op.connector, frozenset()):
                needed.add((op.connector, group))
    return sorted((Operation(connector, Action.CREATE_GROUP, "", {"group": group}, Priority.NORMAL)
                   for connector, group in needed), key=Operation.key)


def apply(
    records: Mapping[Key, AccountRecord], op: Operation, remote_id: str | None = None
) -> dict[Key, AccountRecord]:
    """The recorded state after `op` succeeded (used by the store and the property tests)."""
    out = dict(records)
    key = (op.connector, op.employee_id)
    rec = out.get(key)
    d = op.detail
    if op.action in (Action.CREATE, Action.INVITE):
        attrs = {k: v for k, v in dict(d.get("attributes", {})).items() if v}
        out[key] = AccountRecord(op.connector, op.employee_id, str(d["username"]), bool(d.get("active", True)),
                                 attrs, frozenset(), remote_id=remote_id)
        return out
    if op.action is Action.CREATE_GROUP:
        return out
    if op.action is Action.UPDATE and "previous_employee_id" in d:
        old_key = (op.connector, str(d["previous_employee_id"]))
        old = out.pop(old_key, None)
        if old is not None:
            attrs = {k: v for k, v in dict(d.get("all_attributes", {})).items() if v}
            out[key] = replace(old, employee_id=op.employee_id, username=str(d["username"]), attributes=attrs)
        return out
    if rec is None:
        return out
    if remote_id is not None:
        rec = replace(rec, remote_id=remote_id)
    if op.action is Action.UPDATE:
        attrs = dict(rec.attributes)
        for k, v in dict(d.get("attributes", {})).items():
            if v:
                attrs[k] = v
            else:
                attrs.pop(k, None)
        rec = replace(rec, username=str(d.get("username", rec.username)), attributes=attrs)
    elif op.action in (Action.DEACTIVATE, Action.CANCEL_INVITE):
        rec = replace(rec, active=False)
    elif op.action is Action.REACTIVATE:
        rec = replace(rec, active=True)
    elif op.action is Action.DELETE:
        rec = replace(rec, active=False, deleted=True, grants=frozenset())
    elif op.action in (Action.ADD_MEMBER, Action.ASSIGN):
        rec = replace(rec, grants=rec.grants | {str(d.get("group") or d.get("grant"))})
    elif op.action in (Action.REMOVE_MEMBER, Action.UNASSIGN):
        rec = replace(rec, grants=rec.grants - {str(d.get("group") or d.get("grant"))})
    out[key] = rec
    return out
