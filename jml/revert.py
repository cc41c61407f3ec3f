"""`jml revert PLAN_ID` (CLI, `POST /api/v1/plans/{id}/revert`, the page's button): plan the
inverse of an applied plan and put back the people's stored state (jml/revert_plan.py is the
pure part), through the guard and approval like any plan.

The revert is recorded as a plan with origin `revert:<PLAN_ID>`; the audit trail's `revert`
record names who asked, what was refused and what could not be restored. A plan is reverted
once (a discarded revert does not count); a revert can itself be reverted.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jml import guard, lifecycle, notify
from jml import revert_plan as rp
from jml.errors import UsageError
from jml.model import AccountRecord, Action, Operation, PersonState
from jml.policy import desired
from jml.runtime import Runtime
from jml.store.repo import PersonSave
from jml.store.retry import retry_write
from jml.store.reverts import PlanPriors

# States of a plan whose done operations can be reverted (nothing of a held or discarded one ran).
_REVERTIBLE = frozenset({"queued", "done"})


class RevertRefused(UsageError):
    """Nothing done (exit 2 on the CLI; 404/409 on the API)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass
class RevertOutcome:
    reverts: str  # the plan reverted
    origin: str  # what caused it (export, offboard, event, revert:…)
    plan_id: str | None  # the revert's plan (None on a preview)
    operations: list[Operation] = field(default_factory=list)
    held: bool = False
    reasons: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # employee_id -> why
    cannot: list[rp.Note] = field(default_factory=list)
    partly: list[rp.Note] = field(default_factory=list)
    restored_people: list[str] = field(default_factory=list)  # stored person state written back
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = True

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.operations:
            out[op.action.value] = out.get(op.action.value, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        """The CLI's `--json` and the API's body."""
        return {
            "reverts": self.reverts, "origin": self.origin, "plan_id": self.plan_id, "dry_run": self.dry_run,
            "operations": [{"connector": o.connector, "action": o.action.value, "person": o.employee_id,
                            "detail": dict(o.detail)} for o in self.operations],
            "summary": self.summary(),
            "guard": {"held": self.held, "reasons": self.reasons},
            "refused": [{"person": e, "reason": r} for e, r in sorted(self.refused.items())],
            "cannot_restore": [_note_json(n) for n in self.cannot],
            "restored_differently": [_note_json(n) for n in self.partly],
            "people_state_restored": self.restored_people,
            "warnings": self.warnings,
        }

    def lines(self) -> Iterator[str]:
        """The preview in words (CLI and page)."""
        what = "preview of the revert" if self.dry_run else f"revert plan {self.plan_id or '-'}"
        yield f"{what} of plan {self.reverts} ({self.origin})"
        yield "operations: " + (", ".join(f"{k} {v}" for k, v in self.summary().items()) or "none")
        for op in self.operations[:200]:
            target = op.detail.get("group") or op.detail.get("grant") or op.detail.get("username", "")
            yield f"  {op.connector:12} {op.action.value:14} {op.employee_id:12} {target}"
        if len(self.operations) > 200:
            yield f"  … {len(self.operations) - 200} more (--json lists them all)"
        for eid, why in sorted(self.refused.items()):
            yield f"refused: {eid}: {why}"
        for n in self.cannot:
            yield f"cannot restore: {n.line()}"
        for n in self.partly:
            yield f"restored differently: {n.line()}"
        if self.restored_people:
            yield f"stored person state put back for {len(self.restored_people)}: " + ", ".join(
                self.restored_people[:20]) + (" …" if len(self.restored_people) > 20 else "")
        for w in self.warnings:
            yield f"note: {w}"
        if self.held:
            yield "HELD: " + "; ".join(self.reasons)


def _note_json(n: rp.Note) -> dict[str, str]:
    return {"connector": n.connector, "person": n.employee_id, "action": n.action, "reason": n.reason}


def revert(rt: Runtime, plan_id: str, *, actor: str, dry_run: bool = True) -> RevertOutcome:
    """Preview (`dry_run`) or plan the revert of `plan_id`. Raises RevertRefused."""
    now = rt.clock()
    info = rt.outbox.plan(plan_id)
    if info is None:
        raise RevertRefused(f"no plan {plan_id}", not_found=True)
    if info.state not in _REVERTIBLE:
        raise RevertRefused(f"plan {plan_id} is {info.state}: nothing of it was applied, so there is nothing "
                            "to revert")
    open_ops = rt.outbox.open_count(plan_id)
    if open_ops:
        raise RevertRefused(f"plan {plan_id} still has {open_ops} operation(s) to push: revert it once they are done")
    priors_store = PlanPriors(rt.store)
    earlier = priors_store.reverts_of(plan_id)
    if earlier:
        rid, state, _ = earlier[0]
        raise RevertRefused(f"plan {plan_id} was already reverted by plan {rid} ({state}); "
                            f"revert {rid} instead to undo that")
    applied = [q.op for q in rt.outbox.plan_ops(plan_id) if q.state == "done"]
    priors = priors_store.load(plan_id)
    eids = sorted({op.employee_id for op in applied if op.employee_id})
    today = rt.store.load_states(eids) if eids else {}
    current = rt.store.load_accounts(eids) if eids else {}
    prior_accounts = {(c, eid): rec for eid, p in priors.items() for c, rec in p.accounts.items()}
    source = plan_id
    first = rp.inverse(applied, prior_accounts, current, rt.traits, source=source)
    gives = {e for people in rp.restored_people(first.operations).values() for e in people}
    out = RevertOutcome(plan_id, info.origin, None, dry_run=dry_run)
    restores: dict[str, tuple[PersonState, str | None]] = {}
    index = rt.store.index_of(eids) if eids else {}
    for eid in eids:
        r = rp.restore_person(info.origin, priors.get(eid), today.get(eid), now, rt.rules, gives_access=eid in gives)
        if r.refused:
            out.refused[eid] = r.refused
        elif r.state is not None:
            entry = index.get(eid)
            restores[eid] = (r.state, r.row_hash if r.row_hash is not None else (entry.row_hash if entry else None))
    inv = rp.inverse(applied, prior_accounts, current, rt.traits, refused=out.refused, source=source) \
        if out.refused else first
    out.operations, out.cannot, out.partly = _with_rules(rt, inv.operations, today, restores, now), inv.cannot, \
        inv.partly
    out.restored_people = sorted(restores)
    if info.origin in rp.EXPORT_ORIGINS:
        out.warnings.append("this plan came from an HR export: the next export that changes these people "
                            "brings the change back unless HR fixes the data")
    verdict = guard.evaluate(out.operations, managed=rt.store.managed_counts(), limits=rt.limits,
                             per_connector=rt.connector_limits())
    reasons = list(verdict.reasons) + rp.restore_reasons(out.operations, managed=rt.store.managed_counts(),
                                                         limits=rt.limits, per_connector=rt.connector_limits())
    out.held, out.reasons = bool(reasons), reasons
    if dry_run:
        return out
    new_id = uuid.uuid4().hex[:12]
    out.plan_id = new_id
    origin = f"{rp.REVERT_PREFIX}{plan_id}"
    # The revert's own "before", so that it can be reverted in turn.
    accounts_of: dict[str, dict[str, AccountRecord]] = {}
    for (c, e), rec in current.items():
        accounts_of.setdefault(e, {})[c] = rec
    own_priors = [rp.Prior(e, today.get(e), index[e].row_hash if e in index else None, accounts_of.get(e, {}))
                  for e in sorted({op.employee_id for op in out.operations} | set(restores))]
    saves = [PersonSave(s, h, lifecycle.classify(s, now, rt.rules)) for s, h in restores.values()]

    def records() -> Iterator[tuple[str, object, str, str | None]]:
        yield "revert", {"plan_id": new_id, "reverts": plan_id, "reverted_origin": info.origin, "held": out.held,
                         "reasons": out.reasons, "summary": out.summary(), "requested_by": actor,
                         "refused": out.refused, "cannot_restore": [n.line() for n in out.cannot],
                         "restored_differently": [n.line() for n in out.partly],
                         "people_state_restored": out.restored_people}, actor, None
        yield "plan", {"plan_id": new_id, "held": out.held, "reasons": out.reasons, "summary": out.summary(),
                       "policy_hash": rt.policy.fingerprint(), "operations": len(out.operations),
                       "origin": origin}, actor, None
        ops = out.operations
        for i in range(0, len(ops), 5000):
            yield "plan_operations", {"plan_id": new_id, "offset": i, "operations": [
                {"connector": o.connector, "action": o.action.value, "person": o.employee_id,
                 "target": o.detail.get("group") or o.detail.get("grant"), "rule": o.detail.get("rule")}
                for o in ops[i:i + 5000]]}, actor, None

    def save() -> None:
        with rt.audit.lock, rt.store.transaction() as tx:
            # Once per plan, checked again where it is written (another revert may have won meanwhile).
            won = priors_store.reverts_of(plan_id, tx)
            if won:
                raise RevertRefused(f"plan {plan_id} was already reverted by plan {won[0][0]} ({won[0][1]})")
            if not out.held:
                rt.store.save_people(saves, now, tx)
            rt.outbox.save_plan(new_id, out.operations, held=out.held, origin=origin, reasons=out.reasons,
                                summary=out.summary(), policy_hash=rt.policy.fingerprint(), export_id=None, now=now,
                                conn=tx)
            # A held revert writes the people back when it is approved (on_approved), not before.
            priors_store.save_in(tx, new_id, own_priors, restores if out.held else None)
            rt.audit.append_in(tx, records(), now=now)

    retry_write(save, "saving the revert")
    if out.held:
        notify.held_plan_saved(rt, new_id, list(out.reasons), len(out.operations))
    return out


def _with_rules(rt: Runtime, ops: list[Operation], today: Mapping[str, PersonState],
                restores: Mapping[str, tuple[PersonState, str | None]], now: dt.datetime) -> list[Operation]:
    """A grant put back names the rule that grants it to the person as restored (the access
    report's "which rule"), or `revert:<PLAN_ID>` when no rule does (a grant only the plan took)."""
    regrants = {op.employee_id for op in ops if op.action in (Action.ADD_MEMBER, Action.ASSIGN)}
    rule_of: dict[tuple[str, str, str], str] = {}
    for eid in regrants:
        state = restores[eid][0] if eid in restores else today.get(eid)
        if state is None or state.person is None:
            continue
        lc = lifecycle.classify(state, now, rt.rules)
        for d in desired(state.person, lc, list(rt.traits.values()), rt.policy):
            for grant, name in d.grants.items():
                rule_of[(d.connector, eid, grant)] = name
    out = []
    for op in ops:
        g = str(op.detail.get("group") or op.detail.get("grant") or "")
        found = rule_of.get((op.connector, op.employee_id, g))
        out.append(replace(op, detail={**op.detail, "rule": found}) if found and "rule" in op.detail else op)
    return out


def on_approved(rt: Runtime, plan_id: str, actor: str) -> int:
    """A held revert was approved: write back the people's state it held. Returns how many."""
    now = rt.clock()
    store = PlanPriors(rt.store)

    def save() -> int:
        with rt.audit.lock, rt.store.transaction() as tx:
            restores = store.take_restores(plan_id, tx)
            saves = [PersonSave(s, h, lifecycle.classify(s, now, rt.rules)) for s, h in restores.values()]
            rt.store.save_people(saves, now, tx)
            if saves:
                rt.audit.append_in(tx, [("revert_people", {"plan_id": plan_id, "people": sorted(restores)},
                                         actor, None)], now=now)
            return len(saves)

    return retry_write(save, "writing back the revert's people")
