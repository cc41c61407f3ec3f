"""The deprovision SLA clocks in the store: one per leaver per connector (see jml/sla.py).

Opening them for a plan, reading them, and the few writes everyone shares (a field set on
an open clock, a breach counted once)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from jml import metrics
from jml.model import Operation, Priority
from jml.sla_rules import _check, clock_start, deadline_for
from jml.store.db import utc
from jml.store.tables import OperationRow, PersonRow, SlaClockRow

if TYPE_CHECKING:
    from jml.runtime import Runtime

log = logging.getLogger("jml.sla")

C = SlaClockRow.__table__  # type: ignore[attr-defined]
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
P = PersonRow.__table__  # type: ignore[attr-defined]

OPEN_STATES = ("pending", "running", "held")
REPLAN_BACKOFF = dt.timedelta(seconds=60)  # at most one re-plan (and one re-check by tick) a minute per clock


@dataclass(frozen=True, slots=True)
class Clock:
    id: int
    connector: str
    employee_id: str
    started_at: dt.datetime
    deadline: dt.datetime
    verified_at: dt.datetime | None
    breached: bool
    predicted_breach: bool
    last_check: str | None

    @property
    def cancelled(self) -> bool:
        return (self.last_check or "").startswith("cancelled|")


def as_clock(r: Any) -> Clock:
    started = utc(r["started_at"]) or dt.datetime.min.replace(tzinfo=dt.UTC)
    return Clock(r["id"], r["connector"], r["employee_id"], started, utc(r["deadline"]) or started,
                 utc(r["verified_at"]), bool(r["breached"]), bool(r["predicted_breach"]), r["last_check"])


def not_cancelled() -> Any:
    return func.coalesce(C.c.last_check, "").not_like("cancelled|%")


def clocks(rt: Runtime, *, open_only: bool = False, started_from: dt.datetime | None = None,
           started_before: dt.datetime | None = None) -> list[Clock]:
    q = select(C).order_by(C.c.started_at, C.c.id)
    if open_only:
        q = q.where(C.c.verified_at.is_(None), not_cancelled())
    if started_from is not None:
        q = q.where(C.c.started_at >= started_from)
    if started_before is not None:
        q = q.where(C.c.started_at < started_before)
    with rt.store.engine.connect() as conn:
        return [as_clock(r) for r in conn.execute(q).mappings()]


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
    known: dict[str, dt.datetime | None] = {}
    existing: dict[tuple[str, str], list[Clock]] = {}
    with rt.store.engine.connect() as conn:
        for i in range(0, len(eids), 900):
            chunk = eids[i : i + 900]
            for eid, eff in conn.execute(select(P.c.employee_id, P.c.effective_termination)
                                         .where(P.c.employee_id.in_(chunk))):
                known[eid] = utc(eff)
            for r in conn.execute(select(C).where(C.c.employee_id.in_(chunk))).mappings():
                c = as_clock(r)
                existing.setdefault((c.connector, c.employee_id), []).append(c)
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
    opened = 0
    # One transaction for the plan's clocks; one opened concurrently by another path (a
    # webhook and an export at once) is left as it is.
    with rt.store.engine.begin() as conn:
        ins: Any = (postgresql.insert(C) if conn.dialect.name == "postgresql" else sqlite.insert(C))
        ins = ins.on_conflict_do_nothing()
        for row in rows:
            if not conn.execute(ins, row).rowcount:
                continue
            opened += 1
            log.info("deprovision SLA clock started", extra={
                "connector": row["connector"], "employee_id": row["employee_id"], "plan_id": plan_id,
                "started_at": row["started_at"].isoformat(), "deadline": row["deadline"].isoformat()})
    return opened


def leaver_ops(rt: Runtime, connector: str, employee_id: str, states: Iterable[str]) -> int:
    q = select(func.count()).select_from(O).where(
        O.c.connector == connector, O.c.employee_id == employee_id, O.c.priority == int(Priority.LEAVER),
        O.c.state.in_(list(states)))
    with rt.store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def set_clock(rt: Runtime, clock_id: int, *, only_open: bool = True, **values: Any) -> bool:
    q = update(C).where(C.c.id == clock_id)
    if only_open:
        q = q.where(C.c.verified_at.is_(None))
    with rt.store.engine.begin() as conn:
        return bool(conn.execute(q.values(**values)).rowcount)



def count_breach(rt: Runtime, clock: Clock, now: dt.datetime) -> None:
    """Mark the breach on the clock and count it, once (whoever gets there first)."""
    with rt.store.engine.begin() as conn:
        res = conn.execute(update(C).where(C.c.id == clock.id, C.c.breached.is_(False)).values(breached=True))
    if not res.rowcount:
        return
    metrics.sla_breaches.labels(clock.connector).inc()
    rt.audit.append("sla_breach", {"connector": clock.connector, "started_at": clock.started_at.isoformat(),
                                   "deadline": clock.deadline.isoformat()}, now=now, subject=clock.employee_id)
    log.error("deprovision SLA breached", extra={"connector": clock.connector, "employee_id": clock.employee_id,
                                                 "deadline": clock.deadline.isoformat()})
