"""What the pages read beyond status.snapshot: the SLA clock, one person's access and progress."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select

from jml.model import PersonState, Priority
from jml.runtime import Runtime
from jml.store.db import utc
from jml.store.tables import OperationRow, PersonRow, SlaClockRow

SC = SlaClockRow.__table__  # type: ignore[attr-defined]
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
P = PersonRow.__table__  # type: ignore[attr-defined]

RECENT_VERIFIED = dt.timedelta(hours=1)  # verified leavers stay on the status page this long
RECENT_BREACHES = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Clock:
    """One sla_clock row, read."""

    connector: str
    employee_id: str
    started_at: dt.datetime | None
    deadline: dt.datetime | None
    verified_at: dt.datetime | None
    breached: bool
    predicted_breach: bool

    def late(self, now: dt.datetime) -> bool:
        if self.breached:
            return True
        if self.deadline is None:
            return False
        return (self.verified_at or now) > self.deadline

    def state(self, now: dt.datetime) -> str:
        if self.verified_at is not None:
            return "verified"
        return "breached" if self.late(now) else "in_progress"

    @property
    def duration(self) -> float | None:
        if self.verified_at is None or self.started_at is None:
            return None
        return max(0.0, (self.verified_at - self.started_at).total_seconds())


def _live() -> Any:
    """Clocks the SLA module cancelled (the person is no longer a leaver) are not shown."""
    return func.coalesce(SC.c.last_check, "").not_like("cancelled|%")


def _clock(r: Any) -> Clock:
    return Clock(r["connector"], r["employee_id"], utc(r["started_at"]), utc(r["deadline"]), utc(r["verified_at"]),
                 bool(r["breached"]), bool(r["predicted_breach"]))


def leaver_clocks(rt: Runtime, now: dt.datetime, limit: int = 200) -> list[Clock]:
    """Leavers not yet verified, and those verified in the last hour, soonest deadline first."""
    q = select(SC).where(or_(SC.c.verified_at.is_(None), SC.c.verified_at >= now - RECENT_VERIFIED), _live())
    with rt.store.engine.connect() as conn:
        rows = [_clock(r) for r in conn.execute(q.order_by(SC.c.deadline).limit(limit)).mappings()]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(rows, key=lambda c: (c.verified_at is not None, c.deadline or far))


def recent_breaches(rt: Runtime, now: dt.datetime, limit: int = 20) -> list[Clock]:
    """Missed deadlines of the last week: flagged by the SLA clock, verified late, or overdue now."""
    since = now - RECENT_BREACHES
    late = or_(SC.c.breached.is_(True), SC.c.verified_at > SC.c.deadline,
               (SC.c.verified_at.is_(None)) & (SC.c.deadline < now))
    q = select(SC).where(SC.c.deadline >= since, late, _live()).order_by(SC.c.deadline.desc()).limit(limit)
    with rt.store.engine.connect() as conn:
        return [_clock(r) for r in conn.execute(q).mappings()]


def durations(rt: Runtime, per_connector: int = 30) -> dict[str, list[Clock]]:
    """The most recent verified deprovisions per connector, oldest first (for the plot)."""
    out: dict[str, list[Clock]] = {}
    q = select(SC).where(SC.c.verified_at.is_not(None)).order_by(SC.c.verified_at.desc()).limit(2000)
    with rt.store.engine.connect() as conn:
        for r in conn.execute(q).mappings():
            c = _clock(r)
            lst = out.setdefault(c.connector, [])
            if len(lst) < per_connector:
                lst.append(c)
    return {k: list(reversed(v)) for k, v in sorted(out.items())}


def display_names(rt: Runtime, eids: set[str]) -> dict[str, str]:
    if not eids:
        return {}
    return {eid: (s.person.display_name if s.person else eid) for eid, s in rt.store.load_states(eids).items()}


# ---- one person ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PersonFacts:
    state: PersonState
    phase: str | None
    effective_termination: dt.datetime | None


def person(rt: Runtime, employee_id: str) -> PersonFacts | None:
    state = rt.store.load_states([employee_id]).get(employee_id)
    if state is None:
        return None
    with rt.store.engine.connect() as conn:
        r = conn.execute(select(P.c.phase, P.c.effective_termination).where(P.c.employee_id == employee_id)).first()
    return PersonFacts(state, r[0] if r else None, utc(r[1]) if r else None)


def access(rt: Runtime, employee_id: str) -> list[dict[str, Any]]:
    """Per connector: the account jml manages and each grant with the rule that grants it."""
    accounts = rt.store.load_accounts([employee_id])
    details: dict[tuple[str, str], dict[str, Any]] = {
        (g["connector"], g["name"]): g for g in rt.store.grant_details([employee_id])}
    out = []
    for name in sorted(set(rt.config.connectors) | {c for c, _ in accounts}):
        acc = accounts.get((name, employee_id))
        grants = []
        if acc is not None:
            for g in sorted(acc.grants):
                d = details.get((name, g), {})
                grants.append({"grant": g, "rule": d.get("rule"), "since": d.get("since")})
        out.append({
            "connector": name,
            "account": acc.username if acc else None,
            "state": None if acc is None else ("deleted" if acc.deleted else "active" if acc.active else "inactive"),
            "grants": grants,
        })
    return out


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def progress(rt: Runtime, employee_id: str, now: dt.datetime) -> dict[str, Any] | None:
    """A leaver's deprovisioning per connector against the SLA (GET /api/v1/people/{id}/progress)."""
    facts = person(rt, employee_id)
    if facts is None:
        return None
    with rt.store.engine.connect() as conn:
        clocks: dict[str, Clock] = {}
        q = select(SC).where(SC.c.employee_id == employee_id, _live()).order_by(SC.c.started_at)
        for r in conn.execute(q).mappings():
            clocks[r["connector"]] = _clock(r)  # the latest episode wins
        starts = [c.started_at for c in clocks.values() if c.started_at]
        ov = facts.state.override
        since = min(starts) if starts else (ov.effective_at if ov else facts.effective_termination)
        oq = select(O.c.connector, O.c.state, func.count()).where(
            O.c.employee_id == employee_id, O.c.priority == int(Priority.LEAVER))
        if since is not None:
            oq = oq.where(O.c.created_at >= since - dt.timedelta(hours=1))
        counts: dict[tuple[str, str], int] = {
            (c, s): int(n) for c, s, n in conn.execute(oq.group_by(O.c.connector, O.c.state))}
    accounts = rt.store.load_accounts([employee_id])
    leaver = facts.phase in ("leaver", "gone") or ov is not None or bool(clocks)
    start = facts.effective_termination or (ov.effective_at if ov else None)
    names = sorted({c for c, _ in counts} | set(clocks) | {c for c, _ in accounts if c in rt.config.connectors})
    rows = []
    for name in names:
        n = {s: counts.get((name, s), 0) for s in ("pending", "running", "held", "done", "dead")}
        acc = accounts.get((name, employee_id))
        clock = clocks.get(name)
        if clock is not None:
            deadline, verified_at = clock.deadline, clock.verified_at
            state = clock.state(now)
        else:
            deadline = start + rt.config.connector_sla(name) if (leaver and start) else None
            gone = acc is None or acc.deleted or not acc.active
            open_ops = n["pending"] + n["running"] + n["held"]
            verified_at = None
            if not leaver:
                state = "not_leaving"
            elif gone and not open_ops:
                state = "verified"  # nothing left to remove in this app (the SLA clock has no entry)
            else:
                state = "breached" if deadline is not None and now > deadline else "in_progress"
        rows.append({
            "connector": name,
            "account": acc.username if acc else None,
            "pending": n["pending"] + n["running"] + n["held"],
            "held": n["held"],
            "done": n["done"],
            "dead": n["dead"],
            "verified": state == "verified",
            "verified_at": _iso(verified_at),
            "started_at": _iso(clock.started_at if clock else start),
            "deadline": _iso(deadline),
            "seconds_left": None if state == "verified" or deadline is None else (deadline - now).total_seconds(),
            "breached": clock.late(now) if clock is not None else state == "breached",
            "state": state,
        })
    return {
        "employee_id": employee_id,
        "now": now.isoformat(),
        "leaver": leaver,
        "phase": facts.phase,
        "effective_termination": _iso(start),
        "connectors": rows,
        "all_verified": bool(rows) and leaver and all(r["verified"] for r in rows),
    }
