"""Verifying a deprovision: the account read back from the app, the clock stopped only when
it is inactive (or gone), out of every group and without assignments; otherwise what the
app still holds is recorded and the leaver is planned again (see jml/sla.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from jml import access_state, lifecycle, metrics
from jml import plan as planner
from jml.model import Operation, Phase, Priority, RemoteAccount
from jml.policy import desired
from jml.redact import redact
from jml.sla_clocks import OPEN_STATES, REPLAN_BACKOFF, Clock, clocks, count_breach, leaver_ops, set_clock
from jml.sla_rules import Verdict, _check, judge, parse_check
from jml.store.retry import retry_write

if TYPE_CHECKING:
    from connectors.base import ApplyResult
    from jml.runtime import Runtime
    from jml.store.outbox import QueuedOp

log = logging.getLogger("jml.sla")

MAX_VERIFY_PER_TICK = 25


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
    for clock in rt.store.sla.open_clocks_of(eids):
        if (clock.connector, clock.employee_id) in wanted:
            latest[(clock.connector, clock.employee_id)] = clock  # the newest wins
    busy = rt.store.sla.busy_leavers(eids)
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
    set_clock(rt, clock.id, last_check=_check("read_error", now, why))
    metrics.deprovision_verifications.labels(c, "read_error").inc()
    log.warning("could not read the account back to verify a deprovision",
                extra={"connector": c, "employee_id": eid, "error": why})


def _record_verified(rt: Runtime, items: list[tuple[Clock, Verdict]], now: dt.datetime) -> int:
    """Stop these clocks and audit each, in one transaction; a clock verified concurrently
    (the hook and tick) counts once."""
    if not items:
        return 0

    def stop() -> list[tuple[Clock, Verdict, bool, float]]:
        won = []
        with rt.audit.lock, rt.store.transaction() as tx:
            for clock, verdict in items:
                if rt.store.sla.stop_verified(tx, clock.id, now, _check("verified", now, verdict.summary)):
                    breached = now > clock.deadline or clock.breached
                    won.append((clock, verdict, breached, max(0.0, (now - clock.started_at).total_seconds())))
            rt.audit.append_in(tx, [("deprovision_verified", {
                "connector": clock.connector, "started_at": clock.started_at.isoformat(),
                "deadline": clock.deadline.isoformat(), "verified_at": now.isoformat(),
                "seconds": round(seconds, 3), "breached": breached, "check": verdict.summary},
                "jml", clock.employee_id) for clock, verdict, breached, seconds in won], now=now)
        return won

    won = retry_write(stop, "stopping verified SLA clocks")
    for clock, _, breached, seconds in won:
        metrics.deprovision_duration.labels(clock.connector).observe(seconds)
        metrics.deprovision_verifications.labels(clock.connector, "verified").inc()
        if breached:
            count_breach(rt, clock, now)  # counts only if tick() has not already
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
    set_clock(rt, clock.id, last_check=_check("replanned" if plan_id else "not_deprovisioned", now, detail))


def replan(rt: Runtime, connector: str, employee_id: str, remote: RemoteAccount | None,
           now: dt.datetime) -> str | None:
    """Record what the app still holds (active, its groups) and plan the leaver again in that
    connector, at leaver priority. This person already went through the guard: no hold."""
    if remote is not None:
        rt.store.remote.record_still_held(connector, employee_id, remote, now)
    state = rt.store.load_states([employee_id]).get(employee_id)
    traits = rt.traits.get(connector)
    if state is None or traits is None:
        return None
    lc = lifecycle.classify(state, now, rt.rules)
    if lc.phase not in (Phase.LEAVER, Phase.GONE):
        return None  # no longer a leaver (rehired, offboard undone): tick() cancels the clock
    more = access_state.extras(rt, [employee_id], now).get(employee_id, access_state.NO_EXTRAS)
    wishes = desired(state.person, lc, [traits], rt.policy, extra=more.extra,
                     deny=more.deny) if state.person is not None else []
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


async def verify_due(rt: Runtime, now: dt.datetime) -> None:
    """Open clocks whose operations are all done but that are not verified yet: after a crash
    between the push and the read-back, an unreachable app, or a failed verification."""
    done = 0
    for clock in clocks(rt, open_only=True):
        if done >= MAX_VERIFY_PER_TICK:
            break
        outcome, last_at, _ = parse_check(clock.last_check)
        if outcome != "started" and last_at is not None and now - last_at < REPLAN_BACKOFF:
            continue
        if leaver_ops(rt, clock.connector, clock.employee_id, (*OPEN_STATES, "dead")):
            continue  # still queued, or waiting for an operator's `jml retry`
        if not _done_since(rt, clock):
            continue  # nothing was pushed (plan discarded?): _cancel_stale or the alerts deal with it
        done += 1
        await verify(rt, clock)


def _done_since(rt: Runtime, clock: Clock) -> bool:
    return rt.store.sla.leaver_done_since(clock.connector, clock.employee_id, clock.started_at)
