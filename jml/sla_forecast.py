"""Leavers in flight: each open clock's state and predicted completion, `jml status`'s
list, and the SLA gauges (see jml/sla.py)."""

from __future__ import annotations

import bisect
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jml import metrics
from jml.model import Priority
from jml.sla_clocks import Clock, clocks, set_clock
from jml.sla_rules import humanize, parse_check, predict_completion, will_breach

if TYPE_CHECKING:
    from jml.runtime import Runtime

log = logging.getLogger("jml.sla")

DEFAULT_LATENCY = 1.0  # seconds per operation before any has been measured
DEAD_LIMIT = 5000  # dead letters looked at for leavers' states (the newest)


def _latency(connector: str) -> float:
    total = count = 0.0
    for fam in metrics.operation_duration.collect():
        for s in fam.samples:
            if s.labels.get("connector") != connector:
                continue
            if s.name.endswith("_sum"):
                total += s.value
            elif s.name.endswith("_count"):
                count += s.value
    return total / count if count else DEFAULT_LATENCY


def _rate(rt: Runtime, connector: str) -> float | None:
    if connector not in rt.config.connectors:
        return None
    try:
        rate = rt.connector(connector).write_rate
    except Exception:  # cannot build it here (a secret unset in this shell): no rate known
        return None
    return float(rate) if rate is not None and rate > 0 else None


@dataclass(frozen=True, slots=True)
class InFlight:
    clock: Clock
    state: str  # held | paused | queued | running | dead_letter | verifying | not_deprovisioned
    completion: dt.datetime | None
    ahead: int

    def predicted(self) -> bool:
        return will_breach(self.completion, self.clock.deadline)


def assess(rt: Runtime, now: dt.datetime) -> list[InFlight]:
    """Every open clock with its state and predicted completion."""
    open_clocks = clocks(rt, open_only=True)
    if not open_clocks:
        return []
    paused = set(rt.store.get_setting("paused_connectors", []) or [])
    mine: dict[tuple[str, str], dict[str, Any]] = {}
    queue: dict[str, list[int]] = {}
    for connector, eid, op_id, state in rt.store.sla.open_leaver_ops():
        info = mine.setdefault((connector, eid), {"max": 0, "states": set()})
        info["states"].add(state)
        if state != "held":
            info["max"] = max(info["max"], op_id)
            queue.setdefault(connector, []).append(op_id)
    for ids in queue.values():
        ids.sort()
    # A leaver operation that failed for good waits for an operator (`jml retry`), not for jml.
    dead = {(q.op.connector, q.op.employee_id) for q in rt.outbox.ops(["dead"], limit=DEAD_LIMIT)
            if q.op.priority == Priority.LEAVER}
    out: list[InFlight] = []
    cache: dict[str, tuple[float | None, float, int]] = {}
    for clock in open_clocks:
        c = clock.connector
        if c not in cache:
            cfg = rt.config.connectors.get(c)
            cache[c] = (_rate(rt, c), _latency(c), cfg.concurrency if cfg is not None else 1)
        rate, latency, concurrency = cache[c]
        info = mine.get((c, clock.employee_id)) or {"max": 0, "states": set()}
        states: set[str] = info["states"]
        ahead = 0
        if info["max"]:
            ahead = bisect.bisect_right(queue.get(c, []), info["max"])
        if "held" in states and not states - {"held"}:
            state = "held"
        elif states and c in paused:
            state = "paused"
        elif "running" in states:
            state = "running"
        elif states:
            state = "queued"
        elif (c, clock.employee_id) in dead:
            state = "dead_letter"
        else:
            outcome = parse_check(clock.last_check)[0]
            state = "not_deprovisioned" if outcome in ("replanned", "not_deprovisioned") else "verifying"
        blocked = state in ("held", "paused", "dead_letter")
        completion = predict_completion(now, ahead=ahead, rate=rate, latency=latency, concurrency=concurrency,
                                        blocked=blocked)
        out.append(InFlight(clock, state, completion, ahead))
    return out


def in_flight(rt: Runtime, now: dt.datetime) -> list[dict[str, Any]]:
    """Leavers not yet verified deprovisioned, soonest deadline first (for `jml status`)."""
    out = []
    for f in sorted(assess(rt, now), key=lambda f: (f.clock.deadline, f.clock.employee_id, f.clock.connector)):
        left = (f.clock.deadline - now).total_seconds()
        out.append({
            "person": f.clock.employee_id,
            "connector": f.clock.connector,
            "started_at": f.clock.started_at.isoformat(),
            "deadline": f.clock.deadline.isoformat(),
            "time_left": humanize(left),
            "seconds_left": left,
            "predicted_breach": f.predicted(),
            "breached": f.clock.breached or left < 0,
            "predicted_completion": f.completion.isoformat() if f.completion else None,
            "operations_ahead": f.ahead,
            "state": f.state,
            "last_check": parse_check(f.clock.last_check)[2] or None,
        })
    return out


def refresh(rt: Runtime, now: dt.datetime) -> list[InFlight]:
    """Predictions onto the clocks and the gauges; returns the assessment."""
    flights = assess(rt, now)
    pending: dict[str, int] = dict.fromkeys(rt.config.connectors, 0)
    oldest: dict[str, float] = dict.fromkeys(rt.config.connectors, 0.0)
    predicted: dict[str, int] = dict.fromkeys(rt.config.connectors, 0)
    for f in flights:
        c = f.clock.connector
        pending[c] = pending.get(c, 0) + 1
        oldest[c] = max(oldest.get(c, 0.0), (now - f.clock.started_at).total_seconds())
        flag = f.predicted() and now <= f.clock.deadline  # past the deadline it is a breach, not a prediction
        predicted[c] = predicted.get(c, 0) + (1 if flag else 0)
        if flag != f.clock.predicted_breach:
            set_clock(rt, f.clock.id, predicted_breach=flag)
            if flag:
                when = f.completion.isoformat() if f.completion else "never without action"
                log.warning("leaver predicted to miss the deprovision SLA", extra={
                    "connector": c, "employee_id": f.clock.employee_id, "deadline": f.clock.deadline.isoformat(),
                    "predicted_completion": when, "state": f.state, "operations_ahead": f.ahead})
                rt.audit.append("sla_predicted_breach", {"connector": c, "deadline": f.clock.deadline.isoformat(),
                                                         "predicted_completion": when, "state": f.state},
                                now=now, subject=f.clock.employee_id)
    for c in rt.config.connectors:
        metrics.deprovision_sla.labels(c).set(rt.config.connector_sla(c).total_seconds())
        # Export the per-connector counters from zero, so that increase() sees the first breach.
        metrics.sla_breaches.labels(c)
        metrics.deprovision_duration.labels(c)
    for c in pending:
        metrics.deprovisions_pending.labels(c).set(pending[c])
        metrics.oldest_pending.labels(c).set(oldest[c])
        metrics.predicted_breach.labels(c).set(predicted[c])
    metrics.plans_held.set(len(rt.outbox.plans(["held"], limit=100000)))
    return flights
