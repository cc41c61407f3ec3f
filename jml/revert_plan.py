"""The inverse of an applied plan (`jml revert`). Pure: values in, values out, `now` passed in.

Only what the plan applied (its `done` operations) is inverted, each against the account as
jml records it today, so a step a later plan already undid is not planned again. What cannot
be put back is said, with why: a deleted account is gone, GitHub org mode can only re-invite,
a connector no longer configured cannot be reached. People HR still has terminated are
refused (never re-provisioned by a revert); the rest goes on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from jml import guard
from jml.lifecycle import LifecycleRules, classify
from jml.model import (
    AccountRecord,
    Action,
    ConnectorTraits,
    Operation,
    OverrideKind,
    PersonState,
    Phase,
    Priority,
)

Key = tuple[str, str]  # (connector, employee_id)

REVERT_PREFIX = "revert:"
# Plans whose people's recorded HR data came from an export: reverting them leaves HR's data to
# come back with the next export (the preview says so).
EXPORT_ORIGINS = frozenset({"export"})
# A leaver decision a revert lifts: HR's "offboard now" (made by mistake) and an IdP
# deactivation. An HR termination (webhook) is HR's data: such a person is refused.
LIFTABLE = frozenset({OverrideKind.OFFBOARD, OverrideKind.IDP_DEACTIVATE})


@dataclass(frozen=True, slots=True)
class Prior:
    """What a plan replaced for one person: their stored state and accounts just before it."""

    employee_id: str
    state: PersonState | None
    row_hash: str | None
    accounts: Mapping[str, AccountRecord]  # connector -> record (absent: no account then)


@dataclass(frozen=True, slots=True)
class Note:
    connector: str
    employee_id: str
    action: str  # the applied operation's action this note is about
    reason: str

    def line(self) -> str:
        return f"{self.connector}/{self.employee_id} {self.action}: {self.reason}"


@dataclass(frozen=True, slots=True)
class PersonRestore:
    """The stored person state a revert writes back (with its row hash), or why not."""

    employee_id: str
    state: PersonState | None  # None: nothing to write back
    row_hash: str | None
    refused: str | None = None


@dataclass(slots=True)
class Inverse:
    operations: list[Operation] = field(default_factory=list)
    cannot: list[Note] = field(default_factory=list)  # not restored at all
    partly: list[Note] = field(default_factory=list)  # restored differently (an invitation)


def is_revert(origin: str) -> bool:
    return origin.startswith(REVERT_PREFIX)


def restore_person(origin: str, prior: Prior | None, today: PersonState | None, now: dt.datetime,
                   rules: LifecycleRules, *, gives_access: bool = True) -> PersonRestore:
    """The person state to write back, or a refusal when HR still has them terminated.

    Offboard and event plans: the leaver decision they set (an offboard, an IdP deactivation)
    is lifted; today's HR data stays. Export plans: the HR data, row hash and missing count
    from before the plan come back (the next export brings HR's data back unless HR fixed it).
    A revert's revert: the state before that revert, whole. `gives_access`: the revert gives
    this person access back; then it is refused when today's HR data (with the lifted decision
    lifted) makes them a leaver."""
    eid = today.employee_id if today is not None else (prior.employee_id if prior else "")
    if today is None:
        return PersonRestore(eid, None, None)
    lifted = today
    if today.override is not None and today.override.kind in LIFTABLE:
        before = prior.state.override if prior is not None and prior.state is not None else None
        # An earlier decision of HR's own (a termination webhook) was there before the plan: it stays.
        keep = before if before is not None and before.kind not in LIFTABLE else None
        lifted = replace(today, override=keep)
    if gives_access:
        lc = classify(lifted, now, rules)
        if lc.phase in (Phase.LEAVER, Phase.GONE):
            return PersonRestore(eid, None, None, f"HR still has them as a leaver ({lc.reason or lc.phase.value})")
    restored, row_hash = lifted, None
    if prior is not None and prior.state is not None and (origin in EXPORT_ORIGINS or is_revert(origin)):
        restored = prior.state if is_revert(origin) else replace(prior.state, override=lifted.override)
        row_hash = prior.row_hash
    if restored == today and row_hash is None:
        return PersonRestore(eid, None, None)
    return PersonRestore(eid, restored, row_hash)


def _grant(op: Operation) -> str:
    return str(op.detail.get("group") or op.detail.get("grant") or "")


def _invites(t: ConnectorTraits) -> bool:
    return t.create_action == "invite"


def inverse(
    applied: Sequence[Operation],
    prior: Mapping[Key, AccountRecord],
    current: Mapping[Key, AccountRecord],
    traits: Mapping[str, ConnectorTraits],
    *,
    refused: Iterable[str] = (),
    source: str = "",
) -> Inverse:
    """The operations that put back what `applied` changed, against today's `current` records.

    `prior` is the accounts as they were before the plan (for previous attribute values);
    `refused` people get nothing. Deterministic: sorted like any plan (Operation.key)."""
    out = Inverse()
    skip = set(refused)
    state = dict(current)  # today's records, as the inverse operations will leave them
    planned: set[tuple[str, str, Action, str]] = set()

    def add(op: Operation) -> None:
        key = (op.connector, op.employee_id, op.action, _grant(op))
        if key not in planned:
            planned.add(key)
            out.operations.append(op)

    # Last applied first: a person's later step is undone before an earlier one.
    for op in reversed(applied):
        if op.employee_id in skip or op.action is Action.CREATE_GROUP:
            continue  # a group the plan made stays: empty groups harm nobody
        c, eid = op.connector, op.employee_id
        note = Note(c, eid, op.action.value, "")
        t = traits.get(c)
        if t is None:
            out.cannot.append(replace(note, reason="connector no longer configured: nothing can be done there"))
            continue
        rec = state.get((c, eid))
        before = prior.get((c, eid))
        if op.action is Action.DELETE:
            out.cannot.append(replace(note, reason=f"the account was deleted: a delete in {t.kind} is final; "
                                                   "it is gone (HR must make them a joiner again)"))
            continue
        if op.action is Action.UPDATE and "previous_employee_id" in op.detail:
            out.cannot.append(replace(note, reason="an account taken over from "
                                                   f"{op.detail['previous_employee_id']} is not handed back"))
            continue
        if rec is None or rec.deleted:
            out.cannot.append(replace(note, reason="the account no longer exists (deleted since): it is gone"))
            continue
        username = rec.username
        inv: Operation | None = None
        if op.action in (Action.DEACTIVATE, Action.CANCEL_INVITE):
            if not rec.active:
                inv = Operation(c, Action.REACTIVATE, eid, {"username": username}, Priority.NORMAL)
                if _invites(t):
                    out.partly.append(replace(note, reason="can only be re-invited: an invitation, not the "
                                                           "membership (they must accept it; teams wait for it)"))
        elif op.action in (Action.REACTIVATE, Action.CREATE, Action.INVITE):
            if rec.active:
                undo = Action.CANCEL_INVITE if _invites(t) and op.action is Action.INVITE else Action.DEACTIVATE
                inv = Operation(c, undo, eid, {"username": username}, Priority.NORMAL)
        elif op.action in (Action.REMOVE_MEMBER, Action.UNASSIGN):
            g = _grant(op)
            if g not in rec.grants:
                add_action = Action.ADD_MEMBER if op.action is Action.REMOVE_MEMBER else Action.ASSIGN
                field_name = "group" if op.action is Action.REMOVE_MEMBER else "grant"
                inv = Operation(c, add_action, eid, {"username": username, field_name: g,
                                                     "rule": f"{REVERT_PREFIX}{source}"}, Priority.NORMAL)
        elif op.action in (Action.ADD_MEMBER, Action.ASSIGN):
            g = _grant(op)
            if g in rec.grants:
                rm_action = Action.REMOVE_MEMBER if op.action is Action.ADD_MEMBER else Action.UNASSIGN
                field_name = "group" if op.action is Action.ADD_MEMBER else "grant"
                inv = Operation(c, rm_action, eid, {"username": username, field_name: g}, Priority.NORMAL)
        elif op.action is Action.UPDATE:
            if before is None:
                out.cannot.append(replace(note, reason="its previous values were not recorded"))
                continue
            changed = {k: before.attributes.get(k, "") for k in dict(op.detail.get("attributes", {}))
                       if rec.attributes.get(k, "") != before.attributes.get(k, "")}
            if changed or rec.username != before.username:
                inv = Operation(c, Action.UPDATE, eid, {
                    "username": before.username, "previous_username": rec.username, "attributes": changed,
                    "all_attributes": dict(before.attributes)}, Priority.NORMAL)
        if inv is not None:
            add(inv)
            state[(c, eid)] = _applied(rec, inv)
    out.operations.sort(key=Operation.key)
    out.cannot.sort(key=lambda n: (n.connector, n.employee_id, n.action))
    out.partly.sort(key=lambda n: (n.connector, n.employee_id, n.action))
    return out


def _applied(rec: AccountRecord, op: Operation) -> AccountRecord:
    # As jml.plan.apply folds it, for one record (apply() works on the whole mapping).
    g = _grant(op)
    if op.action is Action.REACTIVATE:
        return replace(rec, active=True)
    if op.action in (Action.DEACTIVATE, Action.CANCEL_INVITE):
        return replace(rec, active=False)
    if op.action in (Action.ADD_MEMBER, Action.ASSIGN):
        return replace(rec, grants=rec.grants | {g})
    if op.action in (Action.REMOVE_MEMBER, Action.UNASSIGN):
        return replace(rec, grants=rec.grants - {g})
    if op.action is Action.UPDATE:
        attrs = dict(rec.attributes)
        for k, v in dict(op.detail.get("attributes", {})).items():
            if v:
                attrs[k] = v
            else:
                attrs.pop(k, None)
        return replace(rec, username=str(op.detail.get("username", rec.username)), attributes=attrs)
    return rec


_RESTORE = frozenset({Action.REACTIVATE, Action.ADD_MEMBER, Action.ASSIGN, Action.INVITE, Action.CREATE})


def restored_people(ops: Iterable[Operation]) -> dict[str, set[str]]:
    """connector -> people a revert gives access back to (reactivated or re-granted)."""
    out: dict[str, set[str]] = {}
    for op in ops:
        if op.action in _RESTORE:
            out.setdefault(op.connector, set()).add(op.employee_id)
    return out


def restore_reasons(ops: Sequence[Operation], *, managed: Mapping[str, int], limits: guard.Limits,
                    per_connector: Mapping[str, guard.Limits] | None = None) -> list[str]:
    """Why a revert giving access back to many people waits for approval: the deprovision
    guard's limits, read as limits on access restored at once (the same numbers, so a
    mistaken mass deprovision and its mass undo need the same eyes)."""
    reasons: list[str] = []
    by_connector = restored_people(ops)
    for connector in sorted(by_connector):
        people = len(by_connector[connector])
        lim = (per_connector or {}).get(connector, limits)
        total = managed.get(connector, 0)
        if total > 0 and 100.0 * people / total > lim.max_deprovision_percent:
            reasons.append(f"{connector}: revert would restore access for {people} of {total} managed accounts "
                           f"({100.0 * people / total:.1f}% > max_deprovision_percent "
                           f"{lim.max_deprovision_percent:g}%)")
    everyone = set().union(*by_connector.values()) if by_connector else set()
    if len(everyone) > limits.max_deprovision_count:
        reasons.append(f"revert would restore access for {len(everyone)} people (> max_deprovision_count "
                       f"{limits.max_deprovision_count})")
    return reasons
