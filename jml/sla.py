"""The deprovision SLA clock: one per leaver per connector.

- **Start**: the person's effective termination (HR date at `termination_time` local, the
  webhook's event time, the offboard time — `person.effective_termination`), else the
  plan time. `start_for_plan` opens the clocks of a plan's leaver operations, held or not.
- **Deadline**: start + `cfg.connector_sla(connector)`.
- **Stop**: only when the deprovision is *verified*: after the person's last leaver
  operation in that connector succeeds, the account is read back from the app and must be
  inactive (or gone), out of every group and without assignments. If it is not, the clock
  keeps running, the recorded account is set back to what the app still holds so the
  planner pushes again, the person is re-planned (at most once a minute) and the failure
  is audited, logged and counted.
- **Breach**: marked on the clock (`breached`), logged, audited and counted once — by
  `tick()` as soon as the deadline passes, or at verification if that comes first.
- **Prediction**: completion ≈ now + (leaver operations ahead in the connector's outbox,
  its own included) / the connector's write rate + typical operation latency; a held plan
  or a paused connector never completes by itself. Flagged when that is past the deadline.

The judgements (start, deadline, prediction, verification verdict) are small pure
functions in jml/sla_rules.py; this module is the shell that reads and writes the store.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError

from jml import lifecycle, metrics
from jml import plan as planner
from jml.model import Operation, Phase, Priority, RemoteAccount
from jml.policy import desired
from jml.redact import redact
from jml.sla_rules import (  # the pure judgements, re-exported for the shell's callers
    Verdict,
    _check,
    clock_start,
    deadline_for,
    humanize,
    judge,
    month_range,
    parse_check,
    predict_completion,
    seconds_per_op,
    will_breach,
)
from jml.store.db import is_write_conflict, utc
from jml.store.tables import AccountRow, GrantRow, OperationRow, PersonRow, SlaClockRow

if TYPE_CHECKING:
    from connectors.base import ApplyResult
    from jml.context import ServiceContext
    from jml.runtime import Runtime
    from jml.store.outbox import QueuedOp

log = logging.getLogger("jml.sla")

C = SlaClockRow.__table__  # type: ignore[attr-defined]
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
P = PersonRow.__table__  # type: ignore[attr-defined]
A = AccountRow.__table__  # type: ignore[attr-defined]
G = GrantRow.__table__  # type: ignore[attr-defined]

OPEN_STATES = ("pending", "running", "held")
REPLAN_BACKOFF = dt.timedelta(seconds=60)  # at most one re-plan (and one re-check by tick) a minute per clock
DEFAULT_LATENCY = 1.0  # seconds per operation before any has been measured
MAX_VERIFY_PER_TICK = 25


__all__ = ["Verdict", "clock_start", "deadline_for", "humanize", "in_flight", "judge", "month_range",
           "parse_check", "predict_completion", "seconds_per_op", "start_for_plan", "tick", "will_breach"]


# ---- clocks --------------------------------------------------------------------------
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


def _clock(r: Any) -> Clock:
    started = utc(r["started_at"]) or dt.datetime.min.replace(tzinfo=dt.UTC)
    return Clock(r["id"], r["connector"], r["employee_id"], started, utc(r["deadline"]) or started,
                 utc(r["verified_at"]), bool(r["breached"]), bool(r["predicted_breach"]), r["last_check"])


def _not_cancelled() -> Any:
    return func.coalesce(C.c.last_check, "").not_like("cancelled|%")


def clocks(rt: Runtime, *, open_only: bool = False, started_from: dt.datetime | None = None,
           started_before: dt.datetime | None = None) -> list[Clock]:
    q = select(C).order_by(C.c.started_at, C.c.id)
    if open_only:
        q = q.where(C.c.verified_at.is_(None), _not_cancelled())
    if started_from is not None:
        q = q.where(C.c.started_at >= started_from)
    if started_before is not None:
        q = q.where(C.c.started_at < started_before)
    with rt.store.engine.connect() as conn:
        return [_clock(r) for r in conn.execute(q).mappings()]


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
                c = _clock(r)
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


def _open_clock(rt: Runtime, connector: str, employee_id: str) -> Clock | None:
    q = select(C).where(C.c.connector == connector, C.c.employee_id == employee_id, C.c.verified_at.is_(None),
                        _not_cancelled()).order_by(C.c.started_at.desc()).limit(1)
    with rt.store.engine.connect() as conn:
        r = conn.execute(q).mappings().first()
    return _clock(r) if r else None


def _leaver_ops(rt: Runtime, connector: str, employee_id: str, states: Iterable[str]) -> int:
    q = select(func.count()).select_from(O).where(
        O.c.connector == connector, O.c.employee_id == employee_id, O.c.priority == int(Priority.LEAVER),
        O.c.state.in_(list(states)))
    with rt.store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def _set(rt: Runtime, clock_id: int, *, only_open: bool = True, **values: Any) -> bool:
    q = update(C).where(C.c.id == clock_id)
    if only_open:
        q = q.where(C.c.verified_at.is_(None))
    with rt.store.engine.begin() as conn:
        return bool(conn.execute(q.values(**values)).rowcount)


def _protected(rt: Runtime, employee_id: str, username: str) -> bool:
    prot = rt.policy.protected
    return employee_id.casefold() in prot or (bool(username) and username.casefold() in prot)


# ---- verification --------------------------------------------------------------------
class Verifier:
    """Reads leavers back off the engine's workers, in batches (group commit).

    The engine's after-success hook only notes "(connector, person) finished a leaver
    operation" and returns, so the worker goes on to the next person at once. One drain
    task per engine takes everything noted so far: the open clocks and the leaver
    operations still open for all of them in two queries, the read-backs concurrently (a
    connector's `concurrency` at a time), and every verified clock with its audit record in
    one transaction. Whatever is noted while a batch is out forms the next one. A
    verification that never ran (a crash, a shutdown) is picked up by tick(), which
    verifies due clocks."""

    def __init__(self, rt: Runtime, busy: Callable[[], bool] = lambda: False) -> None:
        self.rt = rt
        self.busy = busy
        # While the engine still has work queued or running, read-backs wait: in a leaver wave
        # the pushes that cut access go first (they share the apps and their limits), the
        # proofs right after; but never longer than a tenth of the tightest SLA (1 min of 10).
        slas = [rt.config.connector_sla(n).total_seconds() for n in rt.config.connectors] or [600.0]
        self.yield_at_most = max(1.0, min(slas) / 10)
        self._keys: dict[tuple[str, str], None] = {}
        self._draining = False

    def hook(self, spawn: Callable[[Awaitable[None]], object]) -> Callable[[QueuedOp, ApplyResult], Awaitable[None]]:
        """The engine hook; `spawn` runs the drain as the engine's background work."""

        async def hook(q: QueuedOp, _result: ApplyResult) -> None:
            op = q.op
            if op.priority != Priority.LEAVER or not op.employee_id:
                return
            self._keys[(op.connector, op.employee_id)] = None
            if not self._draining:
                self._draining = True
                spawn(self._drain())

        return hook

    async def _drain(self) -> None:
        try:
            while self._keys:
                await asyncio.sleep(0)  # operations finishing in this same turn join the batch
                deadline = time.monotonic() + self.yield_at_most
                while self.busy() and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded
                    await asyncio.sleep(0.1)
                batch, self._keys = list(self._keys), {}
                await verify_batch(self.rt, batch)
        finally:
            self._draining = False


async def verify_batch(rt: Runtime, keys: list[tuple[str, str]]) -> int:
    """Verify the open clocks of these (connector, employee_id) pairs whose leaver
    operations there are all finished. Returns how many were verified."""
    wanted = set(keys)
    eids = sorted({e for _, e in keys})
    latest: dict[tuple[str, str], Clock] = {}
    busy: set[tuple[str, str]] = set()
    with rt.store.engine.connect() as conn:
        for r in conn.execute(select(C).where(C.c.employee_id.in_(eids), C.c.verified_at.is_(None), _not_cancelled())
                              .order_by(C.c.started_at, C.c.id)).mappings():
            if (r["connector"], r["employee_id"]) in wanted:
                latest[(r["connector"], r["employee_id"])] = _clock(r)  # the newest wins
        for connector, eid in conn.execute(select(O.c.connector, O.c.employee_id).where(
                O.c.employee_id.in_(eids), O.c.priority == int(Priority.LEAVER),
                O.c.state.in_(list(OPEN_STATES))).distinct()):
            busy.add((connector, eid))
    due = [clock for key, clock in latest.items() if key not in busy]  # not the last one: verify after the rest
    if not due:
        return 0
    records = rt.store.load_accounts(sorted({c.employee_id for c in due}))
    # At most a connector's `concurrency` reads at once: a wave's proofs, all due together,
    # must not bury the pushes still going to the same app (nor burst its rate limit).
    gates = {n: asyncio.Semaphore(c.concurrency) for n, c in rt.config.connectors.items()}

    async def read(clock: Clock) -> RemoteAccount | None:
        async with gates.setdefault(clock.connector, asyncio.Semaphore(4)):
            return await _read_back(rt, clock, records.get((clock.connector, clock.employee_id)))

    reads = await asyncio.gather(*(read(c) for c in due), return_exceptions=True)
    now = rt.clock()
    verified: list[tuple[Clock, Verdict]] = []
    for clock, got in zip(due, reads, strict=True):
        if isinstance(got, BaseException):
            if not isinstance(got, Exception):
                raise got
            _read_failed(rt, clock, got)
            continue
        verdict = _verdict(rt, clock, records.get((clock.connector, clock.employee_id)), got)
        if verdict.verified:
            verified.append((clock, verdict))
        else:
            _not_verified(rt, clock, verdict, got, now)
    return _record_verified(rt, verified, now)


async def verify(rt: Runtime, clock: Clock) -> bool:
    """Read the account back and stop the clock if it is deprovisioned. True if verified."""
    record = rt.store.load_accounts([clock.employee_id]).get((clock.connector, clock.employee_id))
    try:
        remote = await _read_back(rt, clock, record)
    except Exception as e:  # the app did not answer: the clock keeps running, tick() retries
        _read_failed(rt, clock, e)
        return False
    now = rt.clock()
    verdict = _verdict(rt, clock, record, remote)
    if verdict.verified:
        _record_verified(rt, [(clock, verdict)], now)
        return True
    _not_verified(rt, clock, verdict, remote, now)
    return False


async def _read_back(rt: Runtime, clock: Clock, record: Any) -> RemoteAccount | None:
    connector = rt.connector(clock.connector)
    return await connector.read_account(clock.employee_id, record.username if record else "",
                                        record.remote_id if record else None)


def _verdict(rt: Runtime, clock: Clock, record: Any, remote: RemoteAccount | None) -> Verdict:
    username = (record.username if record else "") or (remote.username if remote else "")
    return judge(remote, keep_active=_protected(rt, clock.employee_id, username))


def _read_failed(rt: Runtime, clock: Clock, e: Exception) -> None:
    c, eid = clock.connector, clock.employee_id
    now = rt.clock()
    why = redact(str(e)) or type(e).__name__
    _set(rt, clock.id, last_check=_check("read_error", now, why))
    metrics.deprovision_verifications.labels(c, "read_error").inc()
    log.warning("could not read the account back to verify a deprovision",
                extra={"connector": c, "employee_id": eid, "error": why})


def _record_verified(rt: Runtime, items: list[tuple[Clock, Verdict]], now: dt.datetime) -> int:
    """Stop these clocks and audit each, in one transaction; a clock verified concurrently
    (the hook and tick) counts once."""
    if not items:
        return 0
    won: list[tuple[Clock, Verdict, bool, float]] = []
    for _attempt in range(20):
        won = []
        try:
            with rt.audit.lock, rt.store.engine.begin() as conn:
                for clock, verdict in items:
                    stopped = conn.execute(update(C).where(C.c.id == clock.id, C.c.verified_at.is_(None)).values(
                        verified_at=now, predicted_breach=False,
                        last_check=_check("verified", now, verdict.summary))).rowcount
                    if stopped:
                        breached = now > clock.deadline or clock.breached
                        won.append((clock, verdict, breached, max(0.0, (now - clock.started_at).total_seconds())))
                rt.audit.append_in(conn, [("deprovision_verified", {
                    "connector": clock.connector, "started_at": clock.started_at.isoformat(),
                    "deadline": clock.deadline.isoformat(), "verified_at": now.isoformat(),
                    "seconds": round(seconds, 3), "breached": breached, "check": verdict.summary},
                    "jml", clock.employee_id) for clock, verdict, breached, seconds in won], now=now)
            break
        except (IntegrityError, OperationalError) as e:
            if not is_write_conflict(e):
                raise
    for clock, _, breached, seconds in won:
        metrics.deprovision_duration.labels(clock.connector).observe(seconds)
        metrics.deprovision_verifications.labels(clock.connector, "verified").inc()
        if breached:
            _count_breach(rt, clock, now)  # counts only if tick() has not already
        log.info("deprovision verified", extra={"connector": clock.connector, "employee_id": clock.employee_id,
                                                "seconds": round(seconds, 3), "breached": breached})
    return len(won)


def _not_verified(rt: Runtime, clock: Clock, verdict: Verdict, remote: RemoteAccount | None,
                  now: dt.datetime) -> None:
    c, eid = clock.connector, clock.employee_id
    outcome, last_at, _ = parse_check(clock.last_check)
    metrics.deprovision_verifications.labels(c, "not_deprovisioned").inc()
    log.warning("deprovision NOT verified: the app still grants access; re-planning",
                extra={"connector": c, "employee_id": eid, "problems": list(verdict.problems)})
    recent_replan = outcome == "replanned" and last_at is not None and now - last_at < REPLAN_BACKOFF
    plan_id = None if recent_replan else replan(rt, c, eid, remote, now)
    rt.audit.append("deprovision_unverified", {
        "connector": c, "problems": list(verdict.problems), "plan_id": plan_id,
        "started_at": clock.started_at.isoformat(), "deadline": clock.deadline.isoformat()}, now=now, subject=eid)
    detail = verdict.summary + (f" (re-planned: plan {plan_id})" if plan_id else "")
    _set(rt, clock.id, last_check=_check("replanned" if plan_id else "not_deprovisioned", now, detail))


def replan(rt: Runtime, connector: str, employee_id: str, remote: RemoteAccount | None,
           now: dt.datetime) -> str | None:
    """Record what the app still holds (active, its groups) and plan the leaver again in that
    connector, at leaver priority. This person already went through the guard: no hold."""
    if remote is not None:
        _record_remote(rt, connector, employee_id, remote, now)
    state = rt.store.load_states([employee_id]).get(employee_id)
    traits = rt.traits.get(connector)
    if state is None or traits is None:
        return None
    lc = lifecycle.classify(state, now, rt.rules)
    if lc.phase not in (Phase.LEAVER, Phase.GONE):
        return None  # no longer a leaver (rehired, offboard undone): tick() cancels the clock
    wishes = desired(state.person, lc, [traits], rt.policy) if state.person is not None else []
    records = {k: v for k, v in rt.store.load_accounts([employee_id]).items() if k[0] == connector}
    result = planner.diff(wishes, records, {connector: traits}, scope=[employee_id])
    ops = sorted((dataclasses.replace(o, priority=Priority.LEAVER) for o in result.operations
                  if o.connector == connector and o.employee_id == employee_id), key=Operation.key)
    if not ops:
        return None
    plan_id = uuid.uuid4().hex[:12]
    summary = result.summary()
    reasons = [f"deprovision of {employee_id} in {connector} not verified"]
    rt.outbox.save_plan(plan_id, ops, held=False, origin="reverify", reasons=reasons, summary=summary,
                        policy_hash=rt.policy.fingerprint(), export_id=None, now=now)
    rt.audit.append_many([
        ("plan", {"plan_id": plan_id, "held": False, "reasons": reasons, "summary": summary, "origin": "reverify",
                  "policy_hash": rt.policy.fingerprint(), "operations": len(ops)}, "jml", None),
        ("plan_operations", {"plan_id": plan_id, "offset": 0, "operations": [
            {"connector": o.connector, "action": o.action.value, "person": o.employee_id,
             "target": o.detail.get("group") or o.detail.get("grant"), "rule": o.detail.get("rule")}
            for o in ops]}, "jml", None),
    ], now=now)
    return plan_id


def _record_remote(rt: Runtime, connector: str, employee_id: str, remote: RemoteAccount, now: dt.datetime) -> None:
    with rt.store.engine.begin() as conn:
        row = conn.execute(select(A.c.id).where(A.c.connector == connector, A.c.employee_id == employee_id)).first()
        values = {"active": remote.active or remote.pending_invitation, "deleted": False, "updated_at": now}
        if row is None:
            conn.execute(A.insert().values(connector=connector, employee_id=employee_id, username=remote.username,
                                           remote_id=remote.remote_id, attributes={}, created_at=now, **values))
        else:
            conn.execute(update(A).where(A.c.id == row[0]).values(**values))
        have = {n for (n,) in conn.execute(select(G.c.name).where(G.c.connector == connector,
                                                                  G.c.employee_id == employee_id))}
        for name in sorted(remote.groups - have):
            conn.execute(G.insert().values(connector=connector, employee_id=employee_id, name=name, rule=None,
                                           since=now))


def _count_breach(rt: Runtime, clock: Clock, now: dt.datetime) -> None:
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


# ---- in flight: prediction, status, gauges -------------------------------------------
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
    cfg = rt.config.connectors.get(connector)
    if cfg is not None and cfg.rate_limit is not None:
        return float(cfg.rate_limit)
    if cfg is None:
        return None
    try:
        bucket = getattr(rt.connector(connector), "bucket", None)
    except Exception:  # cannot build it here (a secret unset in this shell): no rate known
        return None
    rate = getattr(bucket, "rate", None)
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


@dataclass(frozen=True, slots=True)
class InFlight:
    clock: Clock
    state: str  # held | paused | queued | running | verifying | not_deprovisioned | waiting
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
    with rt.store.engine.connect() as conn:
        q = select(O.c.connector, O.c.employee_id, O.c.id, O.c.state).where(
            O.c.priority == int(Priority.LEAVER), O.c.state.in_(list(OPEN_STATES)))
        for connector, eid, op_id, state in conn.execute(q):
            info = mine.setdefault((connector, eid), {"max": 0, "states": set()})
            info["states"].add(state)
            if state != "held":
                info["max"] = max(info["max"], op_id)
                queue.setdefault(connector, []).append(op_id)
    for ids in queue.values():
        ids.sort()
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
        else:
            outcome = parse_check(clock.last_check)[0]
            state = "not_deprovisioned" if outcome in ("replanned", "not_deprovisioned") else "verifying"
        blocked = state in ("held", "paused")
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


async def tick(ctx: ServiceContext) -> None:
    """Every 15 s in `jml serve`: mark breaches, verify what is due, cancel clocks of people
    who are no longer leavers, refresh predictions and the SLA gauges (and jml_plans_held)."""
    rt = ctx.rt
    now = rt.clock()
    for clock in clocks(rt, open_only=True):
        if clock.deadline < now and not clock.breached:
            _count_breach(rt, clock, now)
    await _verify_due(rt, now)
    _cancel_stale(rt, now)
    refresh(rt, rt.clock())


async def _verify_due(rt: Runtime, now: dt.datetime) -> None:
    """Open clocks whose operations are all done but that are not verified yet: after a crash
    between the push and the read-back, an unreachable app, or a failed verification."""
    done = 0
    for clock in clocks(rt, open_only=True):
        if done >= MAX_VERIFY_PER_TICK:
            break
        outcome, last_at, _ = parse_check(clock.last_check)
        if outcome != "started" and last_at is not None and now - last_at < REPLAN_BACKOFF:
            continue
        if _leaver_ops(rt, clock.connector, clock.employee_id, (*OPEN_STATES, "dead")):
            continue  # still queued, or waiting for an operator's `jml retry`
        if not _done_since(rt, clock):
            continue  # nothing was pushed (plan discarded?): _cancel_stale or the alerts deal with it
        done += 1
        await verify(rt, clock)


def _done_since(rt: Runtime, clock: Clock) -> bool:
    q = select(func.count()).select_from(O).where(
        O.c.connector == clock.connector, O.c.employee_id == clock.employee_id,
        O.c.priority == int(Priority.LEAVER), O.c.state == "done", O.c.done_at >= clock.started_at)
    with rt.store.engine.connect() as conn:
        return bool(conn.execute(q).scalar_one())


def _cancel_stale(rt: Runtime, now: dt.datetime) -> None:
    """A clock whose person is no longer a leaver and has no leaver work queued (rehire,
    offboard undone, a discarded plan of bad data) stops without counting."""
    open_clocks = clocks(rt, open_only=True)
    if not open_clocks:
        return
    eids = sorted({c.employee_id for c in open_clocks})
    phases: dict[str, str | None] = {}
    with rt.store.engine.connect() as conn:
        for i in range(0, len(eids), 900):
            for eid, phase in conn.execute(select(P.c.employee_id, P.c.phase).where(
                    P.c.employee_id.in_(eids[i : i + 900]))):
                phases[eid] = phase
    for clock in open_clocks:
        phase = phases.get(clock.employee_id)
        if phase in (Phase.LEAVER.value, Phase.GONE.value) or phase is None:
            continue
        if _leaver_ops(rt, clock.connector, clock.employee_id, OPEN_STATES):
            continue
        if _set(rt, clock.id, predicted_breach=False,
                last_check=_check("cancelled", now, f"no longer a leaver (phase {phase})")):
            rt.audit.append("sla_cancelled", {"connector": clock.connector, "phase": phase,
                                              "started_at": clock.started_at.isoformat()},
                            now=now, subject=clock.employee_id)
            log.info("deprovision SLA clock cancelled: no longer a leaver",
                     extra={"connector": clock.connector, "employee_id": clock.employee_id, "phase": phase})


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
            _set(rt, f.clock.id, predicted_breach=flag)
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
