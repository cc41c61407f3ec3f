"""The deprovision SLA clocks: one per leaver per connector (see jml/sla.py), kept by the
store's SLA repository (jml/store/sla.py).

Opening them for a plan, reading them, and the few writes everyone shares (a field set on
an open clock, a breach counted once)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from jml import metrics
from jml.model import Operation, Priority
from jml.sla_rules import _check, clock_start, deadline_for
from jml.store.sla import OPEN_STATES, Clock

if TYPE_CHECKING:
    from jml.runtime import Runtime

__all__ = ["OPEN_STATES", "Clock", "clocks", "count_breach", "leaver_ops", "set_clock", "start_for_plan"]

log = logging.getLogger("jml.sla")

REPLAN_BACKOFF = dt.timedelta(seconds=60)  # at most one re-plan (and one re-check by tick) a minute per clock


def clocks(rt: Runtime, *, open_only: bool = False, started_from: dt.datetime | None = None,
           started_before: dt.datetime | None = None) -> list[Clock]:
    return rt.store.sla.clocks(open_only=open_only, started_from=started_from, started_before=started_before)


def start_for_plan(rt: Runtime, plan_id: str, now: dt.datetime, *,
                   effective: Mapping[str, dt.datetime | None] | None = None,
                   operations: Iterable[Operation] | None = None) -> int:
    """Open a clock for every leaver (connector, person) of the plan; returns how many.

    `effective` gives effective terminations the caller knows (a held plan does not record
    its people); otherwise the person row's `effective_termination`, else the plan time.
    A clock already running for that person and connector keeps running (a re-plan does not
    restart it); a clock is never opened twice for the same start.
    """
    pairs: dict[tuple[str, str], set[str]] = {}
    # The planner hands its operations over; otherwise (an approval, a tool) they are read back.
    for op in operations if operations is not None else (q.op for q in rt.outbox.plan_ops(plan_id)):
        if op.priority == Priority.LEAVER and op.employee_id:
            pairs.setdefault((op.connector, op.employee_id), set()).add(op.action.value)
    if not pairs:
        return 0
    eids = sorted({e for _, e in pairs})
    # An event's plan hands every leaver's effective termination over: no need to read them.
    known, existing = rt.store.sla.history(eids, terminations=not effective or any(
        effective.get(e) is None for e in eids))
    rows: list[dict[str, Any]] = []
    for (connector, eid), actions in sorted(pairs.items()):
        eff = (effective or {}).get(eid) or known.get(eid)
        start = clock_start(eff, now)
        prior = existing.get((connector, eid), [])
        if any(c.verified_at is None and not c.cancelled for c in prior):
            continue  # still running: a re-plan does not restart the clock
        if any(c.started_at == start and not c.cancelled for c in prior):
            continue  # this termination's clock already ran (e.g. the delete after `delete_after`)
        if actions == {"delete"} and any(c.verified_at is not None for c in prior):
            continue  # deleting an account already verified deprovisioned is not a new leaver
        rows.append({"connector": connector, "employee_id": eid, "started_at": start,
                     "deadline": deadline_for(start, rt.config.connector_sla(connector)), "breached": False,
                     "predicted_breach": False, "last_check": _check("started", now, f"plan {plan_id}")})
    opened = rt.store.sla.open(rows)
    for row in opened:
        log.info("deprovision SLA clock started", extra={
            "connector": row["connector"], "employee_id": row["employee_id"], "plan_id": plan_id,
            "started_at": row["started_at"].isoformat(), "deadline": row["deadline"].isoformat()})
    return len(opened)


def leaver_ops(rt: Runtime, connector: str, employee_id: str, states: Iterable[str]) -> int:
    return rt.store.sla.leaver_ops(connector, employee_id, states)


def set_clock(rt: Runtime, clock_id: int, *, only_open: bool = True, **values: Any) -> bool:
    return rt.store.sla.update(clock_id, only_open=only_open, **values)


def count_breach(rt: Runtime, clock: Clock, now: dt.datetime) -> None:
    """Mark the breach on the clock and count it, once (whoever gets there first)."""
    from jml.sla_causes import cause_for

    try:
        cause = cause_for(rt, clock)
    except Exception:  # the cause is an explanation: never a reason not to count the breach
        log.warning("could not determine the breach cause", exc_info=True)
        cause = "jml_backlog"
    if not rt.store.sla.mark_breached(clock.id, cause):
        return
    metrics.sla_breaches.labels(clock.connector).inc()
    metrics.sla_breaches_by_cause.labels(clock.connector, cause).inc()
    rt.audit.append("sla_breach", {"connector": clock.connector, "started_at": clock.started_at.isoformat(),
                                   "deadline": clock.deadline.isoformat(), "cause": cause},
                    now=now, subject=clock.employee_id)
    log.error("deprovision SLA breached", extra={"connector": clock.connector, "employee_id": clock.employee_id,
                                                 "deadline": clock.deadline.isoformat(), "cause": cause})
