"""Person events: processing the webhook inbox (jml/store/inbox.py).

The leaver fast path (README "What it does"): an event changes one person's state (a
sticky override, an HR record) and plans *only that person* (jml/event_plan.py), origin
"event". The planner marks a leaver's operations Priority.LEAVER, so the engine runs them
ahead of queued bulk work, on every connector's lane in parallel; the person's queued
non-leaver work is cancelled. What an event means: jml/event_okta.py and jml/event_hr.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from jml.context import ServiceContext
from jml.errors import BadRequest
from jml.event_hr import apply_hr, map_person
from jml.event_okta import apply_okta, okta_users
from jml.event_plan import plan_event
from jml.model import Override, Person
from jml.redact import redact
from jml.runtime import Runtime
from jml.store.db import TRANSIENT_ERRORS
from jml.store.inbox import Inbox, InboxItem
from jml.sync import PlanOutcome

log = logging.getLogger("jml.events")


@dataclass
class Applied:
    outcomes: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Override | None] = field(default_factory=dict)  # changed ones only
    previous: dict[str, Override | None] = field(default_factory=dict)  # what those were before
    new_leavers: list[str] = field(default_factory=list)  # in event order
    lifted: list[str] = field(default_factory=list)
    scope: dict[str, bool] = field(default_factory=dict)  # employee_id -> carries a new HR record
    changed: dict[str, Person] = field(default_factory=dict)
    audit: list[tuple[str, object, str, str | None]] = field(default_factory=list)


def apply_items(rt: Runtime, items: list[InboxItem], now: dt.datetime) -> Applied:
    """Fold the events, in order, into people's overrides and HR records (in memory; the
    caller persists). Pure but for two reads: the Okta matches and the people's states."""
    cfg = rt.config
    attr = cfg.sources.okta.match if cfg.sources.okta else "work_email"
    matches = rt.store.match_people(attr, [u for it in items if it.source == "okta" for u in okta_users(it.payload)])
    mapped: dict[str, tuple[Person, frozenset[str]]] = {}
    out = Applied()
    for it in items:
        if it.source == "hr":
            try:
                mapped[it.id] = map_person(cfg, it.payload.get("person") or {}, str(it.payload.get("type")))
            except BadRequest as e:
                out.outcomes[it.id] = f"invalid: {e}"
    states = rt.store.load_states(set(matches.values()) | {p.employee_id for p, _ in mapped.values()})
    original = {e: s.override for e, s in states.items()}
    overrides = dict(original)
    for it in items:
        if it.id in out.outcomes:
            continue
        if it.source == "okta":
            outcome, eids, actor = apply_okta(it, matches, overrides, out.scope)
        elif it.source == "hr" and it.id in mapped:
            outcome, eids, actor = apply_hr(cfg.timezone, it, mapped[it.id], states, overrides, out.scope, out.changed)
        else:
            outcome, eids, actor = "ignored", [], it.source
        out.outcomes[it.id] = outcome
        subjects: list[str | None] = list(eids) or [None]
        for eid in subjects:
            out.audit.append(("webhook", {"source": it.source, "event_id": it.id.split(":", 1)[1],
                                          "type": it.payload.get("eventType") or it.payload.get("type"),
                                          "occurred_at": it.occurred_at.isoformat(), "outcome": outcome},
                              actor, eid))
    for eid, final in overrides.items():
        before = original.get(eid)
        if final == before:
            continue
        out.overrides[eid] = final
        out.previous[eid] = before
        if final is None:
            out.lifted.append(eid)
        elif final.effective_at <= now and (before is None or before.effective_at > now):
            out.new_leavers.append(eid)  # (also a scheduled offboard an IdP event brought forward)
    return out


@dataclass
class Batch:
    """What one pass over the inbox did."""

    outcomes: dict[str, str] = field(default_factory=dict)  # inbox id -> outcome
    plans: list[PlanOutcome] = field(default_factory=list)


async def process_pending(rt: Runtime, *, limit: int = 2000) -> Batch:
    """Apply every stored, unprocessed event in `published`/`occurred_at` order, then plan
    the people they touched (one plan per pass: 500 leavers in one Okta delivery are one
    plan, not 500). An event that fails while processed is quarantined alone (issue 14:
    one poisoned event stalled every later one, terminations included): a failing pass is
    split in halves, in order, until the failing event stands alone."""
    now = rt.clock()
    inbox = Inbox(rt.store)
    batch = Batch()
    items = inbox.pending(limit)
    if items:
        await _isolating(rt, inbox, items, now, batch)
    global _health_at
    if not items or time.monotonic() - _health_at >= HEALTH_EVERY:
        # The inbox gauges: from a pass that found the inbox empty, and at most once a
        # second while a wave streams in (a pass every 0.1 s; two counting queries each).
        inbox.health(rt.clock())
        _health_at = time.monotonic()
    return batch


HEALTH_EVERY = 1.0  # seconds between the inbox gauges' updates while events keep coming
_health_at = -HEALTH_EVERY


async def _isolating(rt: Runtime, inbox: Inbox, items: list[InboxItem], now: dt.datetime, batch: Batch) -> None:
    try:
        done = await _process(rt, inbox, items, now)
    except asyncio.CancelledError:
        raise
    except TRANSIENT_ERRORS:  # the database itself failing is no reason to set an event aside: tried again
        raise
    except Exception as e:  # whatever one event does, the others go on
        open_ids = inbox.still_open(it.id for it in items)
        items = [it for it in items if it.id in open_ids]
        if len(items) > 1:
            mid = len(items) // 2
            await _isolating(rt, inbox, items[:mid], now, batch)
            await _isolating(rt, inbox, items[mid:], now, batch)
        elif items:
            _quarantine(rt, inbox, items[0], e, now)
            batch.outcomes[items[0].id] = "quarantined"
        return
    batch.outcomes.update(done.outcomes)
    batch.plans.extend(done.plans)


def _quarantine(rt: Runtime, inbox: Inbox, it: InboxItem, e: BaseException, now: dt.datetime) -> None:
    error = f"{type(e).__name__}: {redact(str(e))}"[:2000]
    log.error("webhook event quarantined", exc_info=e, extra={"event_id": it.id, "source": it.source,
                                                              "error": error})
    inbox.quarantine(it.id, error, now)
    rt.audit.append("webhook_quarantined", {"source": it.source, "event_id": it.id.split(":", 1)[1],
                                            "type": it.payload.get("eventType") or it.payload.get("type"),
                                            "error": error}, now=now, actor=it.source)


async def _process(rt: Runtime, inbox: Inbox, items: list[InboxItem], now: dt.datetime) -> Batch:
    batch = Batch()
    applied = apply_items(rt, items, now)
    batch.outcomes = applied.outcomes
    if applied.overrides:
        rt.store.set_overrides(applied.overrides, now)
    try:
        # New leavers' queued grants go; a lifted override's queued deactivate must not run either.
        rt.outbox.cancel_people(applied.new_leavers, now)
        rt.outbox.cancel_people(applied.lifted, now, leaver_too=True)
        if applied.scope:
            batch.plans = plan_event(rt, applied.scope, applied.changed, now, origin="event",
                                     order=applied.new_leavers)
        # The trail first: should it fail, the events are still pending and are applied again.
        rt.audit.append_many(applied.audit, now=now)
    except BaseException:
        if applied.overrides:  # a pass that failed leaves people's overrides as they were
            rt.store.set_overrides(applied.previous, now)
        raise
    inbox.finish(batch.outcomes, now)
    return batch


BUSY_WINDOW = 1.0  # seconds since the last pass within which the inbox counts as busy
# What a busy inbox waits before the next pass (an idle one: nothing). A pass has a fixed cost (~16
# statements, 6 transactions) shared by the leavers it carries: at 20 leavers/s, 0.25 s makes ~5 a
# pass instead of ~2.3 at 0.1 s, for ~7% less of jml's CPU a leaver (issue 16, interleaved runs) and
# a pushed p99 of ~1.0 s instead of ~0.6-0.9 s, well inside the 2 s goal and the SLA's minutes.
EVENT_LINGER = 0.25


async def run_event_processor(ctx: ServiceContext) -> None:
    """The daemon's task: process the inbox whenever a webhook stored something (and every
    few seconds, for events stored by another process or left by a crash)."""
    last_pass = -BUSY_WINDOW
    while not ctx.stopping.is_set():
        ctx.event_wakeup.clear()
        if time.monotonic() - last_pass < BUSY_WINDOW:
            # Events are streaming in (a leaver wave, one webhook each): let the next ones
            # join this pass, so a pass plans several people and its fixed cost is shared.
            await asyncio.sleep(EVENT_LINGER)
        last_pass = time.monotonic()
        try:
            batch = await process_pending(ctx.rt)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one bad event stop the intake
            log.exception("event processing failed")
            batch = Batch()
        if queued := [p.plan_id for p in batch.plans if p.plan_id and not p.held]:
            ctx.wake(*queued)
        if batch.outcomes:
            continue
        waits = [asyncio.ensure_future(ctx.event_wakeup.wait()), asyncio.ensure_future(ctx.stopping.wait())]
        _, pending = await asyncio.wait(waits, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()


