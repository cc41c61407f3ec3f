"""What the pages read beyond status.snapshot: the SLA clock, one person's access and progress."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from jml.model import PersonState
from jml.runtime import Runtime
from jml.store.sla import ClockView

RECENT_VERIFIED = dt.timedelta(hours=1)  # verified leavers stay on the status page this long
RECENT_BREACHES = dt.timedelta(days=7)


Clock = ClockView  # one sla_clock row, read (cancelled clocks are never shown)


def leaver_clocks(rt: Runtime, now: dt.datetime, limit: int = 200) -> list[Clock]:
    """Leavers not yet verified, and those verified in the last hour, soonest deadline first."""
    rows = rt.store.sla.open_or_verified_since(now - RECENT_VERIFIED, limit)
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(rows, key=lambda c: (c.verified_at is not None, c.deadline or far))


def recent_breaches(rt: Runtime, now: dt.datetime, limit: int = 20) -> list[Clock]:
    """Missed deadlines of the last week: flagged by the SLA clock, verified late, or overdue now."""
    return rt.store.sla.missed_since(now - RECENT_BREACHES, now, limit)


def durations(rt: Runtime, per_connector: int = 30) -> dict[str, list[Clock]]:
    """The most recent verified deprovisions per connector, oldest first (for the plot)."""
    out: dict[str, list[Clock]] = {}
    for c in rt.store.sla.latest_verified(2000):
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
    phase, effective = rt.store.sla.phase_and_termination(employee_id)
    return PersonFacts(state, phase, effective)


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
    clocks: dict[str, Clock] = {}
    for c in rt.store.sla.views_of(employee_id):
        clocks[c.connector] = c  # the latest episode wins
    starts = [c.started_at for c in clocks.values() if c.started_at]
    ov = facts.state.override
    since = min(starts) if starts else (ov.effective_at if ov else facts.effective_termination)
    counts = rt.store.sla.leaver_op_counts(employee_id, since - dt.timedelta(hours=1) if since is not None else None)
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
