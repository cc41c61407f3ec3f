"""Planning the people events touched (webhooks, offboards): only those people, through the
same pipeline as an export (jml.sync.plan_people), under the event-leaver bound instead of
the export guard: `guard.max_event_leavers_per_hour` distinct people deprovisioned by event
and offboard plans in the last hour; beyond it the plan is held with that reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from jml import guard
from jml.model import Action, Operation, Person
from jml.runtime import Runtime
from jml.sync import PlanOutcome, plan_people

__all__ = ["EVENT_ORIGINS", "plan_event", "recent_event_leavers"]

EVENT_ORIGINS = ("event", "offboard")


def recent_event_leavers(rt: Runtime, now: dt.datetime) -> int:
    """Distinct people deprovisioned by event/offboard plans released in the last hour."""
    return rt.outbox.recent_leavers(EVENT_ORIGINS, now - dt.timedelta(hours=1))


def _leavers(ops: Iterable[Operation]) -> list[str]:
    seen: dict[str, None] = {}
    for op in ops:
        if op.action in (Action.DEACTIVATE, Action.DELETE):
            seen.setdefault(op.employee_id)
    return list(seen)


def plan_event(rt: Runtime, scope: Mapping[str, bool], changed: Mapping[str, Person], now: dt.datetime, *,
               origin: str, order: Iterable[str] = ()) -> list[PlanOutcome]:
    """Plan `scope` (employee_id -> carries a new HR record) under the event-leaver bound.

    Within the bound everything goes through; past it, the leavers beyond the allowance
    (in `order`, earliest first) go into a second, held plan."""
    cap = rt.config.guard.max_event_leavers_per_hour
    recent = recent_event_leavers(rt, now)
    reason = (f"max_event_leavers_per_hour {cap} reached ({recent} event leavers in the last hour)")

    def run(eids: Iterable[str], held: bool) -> PlanOutcome:
        people = list(eids)
        return plan_people(
            rt, {e: (scope[e], False) for e in people}, {e: changed[e] for e in people if e in changed},
            rt.store.index_of(people), now, origin=origin,
            verdict_for=lambda _ops: guard.Verdict(True, (reason,)) if held else guard.Verdict(False))

    if recent + len(scope) <= cap:
        return [run(scope, False)]
    dry = plan_people(rt, {e: (s, False) for e, s in scope.items()}, changed, rt.store.index_of(scope), now,
                      origin=origin, dry_run=True)
    leavers = _leavers(dry.operations)
    if recent + len(leavers) <= cap:
        return [run(scope, False)]
    rank = {e: i for i, e in enumerate(order)}
    leavers.sort(key=lambda e: rank.get(e, len(rank)))
    over = set(leavers[max(0, cap - recent):])
    out = []
    first = [e for e in scope if e not in over]
    if first:
        out.append(run(first, False))
    out.append(run([e for e in scope if e in over], True))
    return out
