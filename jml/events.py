"""Person events: the webhook inbox, its processing, and HR's "offboard now".

The leaver fast path (DESIGN "Leavers first"): an event changes one person's state (a
sticky override, an HR record) and plans *only that person* through the same pipeline as
an export (jml.sync.plan_people), origin "event" or "offboard". The planner marks a
leaver's operations Priority.LEAVER, so the engine runs them ahead of queued bulk work, on
every connector's lane in parallel; the person's queued non-leaver work is cancelled.
Event plans skip the export guard; their own bound is `guard.max_event_leavers_per_hour`
(distinct people deprovisioned by event/offboard plans in the last hour; beyond it the
plan is held with that reason).

Okta mapping (reference/VENDORS.md §1): deactivate/suspend -> leaver now (IDP_DEACTIVATE,
effective at the event's `published`); activate/unsuspend/reactivate -> an Okta deactivation
is lifted and the person re-evaluated from HR, but an HR termination or an offboard stays
(DESIGN "Sticky": HR outranks the IdP; outcome "not_lifted: HR leaver"); an Okta
deactivation may bring an HR leaver's time forward, never take it over; update_profile ->
re-evaluated. The Okta user
is matched to an HR person by `sources.okta.match` (default work_email) against the
target's alternateId, case-insensitively; no match -> outcome "unmatched", no change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from jml import guard, metrics
from jml.config import Config
from jml.context import ServiceContext
from jml.errors import ExportRejected
from jml.lifecycle import HR_OVERRIDES, add_leaver, idp_lifts
from jml.model import (
    CANONICAL_FIELDS,
    Action,
    Operation,
    Override,
    OverrideKind,
    Person,
    PersonState,
    Status,
)
from jml.redact import redact
from jml.runtime import Runtime
from jml.sources.hris import parse_export
from jml.sources.profiles import resolve_profile
from jml.store.db import utc
from jml.store.repo import IndexEntry, Store
from jml.store.tables import OperationRow, PersonRow, PlanRow, WebhookEventRow
from jml.sync import PlanOutcome, plan_people
from jml.webhooks import BadRequest, HrEvent, OktaEvent

log = logging.getLogger("jml.events")

W = WebhookEventRow.__table__  # type: ignore[attr-defined]
P = PersonRow.__table__  # type: ignore[attr-defined]
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
PL = PlanRow.__table__  # type: ignore[attr-defined]
_FINISH = update(W).where(W.c.id == bindparam("k_id")).values(processed_at=bindparam("processed_at"),
                                                             outcome=bindparam("outcome"))
_OPEN = (W.c.processed_at.is_(None), W.c.quarantined_at.is_(None))  # waiting to be processed

OKTA_LEAVER = frozenset({"user.lifecycle.deactivate", "user.lifecycle.suspend"})
OKTA_RETURN = frozenset({"user.lifecycle.activate", "user.lifecycle.unsuspend", "user.lifecycle.reactivate"})
OKTA_REEVALUATE = frozenset({"user.account.update_profile"})
_DEPROVISION = (Action.DEACTIVATE.value, Action.DELETE.value)
EVENT_ORIGINS = ("event", "offboard")


# ---- the inbox -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InboxItem:
    id: str
    source: str
    occurred_at: dt.datetime
    payload: Mapping[str, Any]


class Inbox:
    """webhook_event rows: stored before the HTTP answer, processed after it."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        ins: Any = postgresql.insert(W) if self.engine.dialect.name == "postgresql" else sqlite.insert(W)
        stmt = ins.on_conflict_do_nothing(index_elements=["id"])
        new = 0
        with self.engine.begin() as conn:
            for row in rows:
                new += int(conn.execute(stmt, row).rowcount or 0)
        return new

    def add_okta(self, events: Iterable[OktaEvent], now: dt.datetime) -> int:
        """Store new events (dedup by uuid); returns how many were new."""
        return self._insert([{"id": f"okta:{e.uuid}", "source": "okta", "received_at": now,
                              "occurred_at": e.published, "payload": dict(e.raw)} for e in events])

    def add_hr(self, ev: HrEvent, now: dt.datetime) -> bool:
        return self._insert([{"id": f"hr:{ev.id}", "source": "hr", "received_at": now, "occurred_at": ev.occurred_at,
                              "payload": {"id": ev.id, "type": ev.type, "occurred_at": ev.occurred_at.isoformat(),
                                          "person": dict(ev.person)}}]) == 1

    def pending(self, limit: int = 2000) -> list[InboxItem]:
        q = (select(W.c.id, W.c.source, W.c.occurred_at, W.c.payload).where(*_OPEN)
             .order_by(W.c.occurred_at, W.c.received_at, W.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [InboxItem(r[0], r[1], utc(r[2]) or dt.datetime.min.replace(tzinfo=dt.UTC), r[3] or {})
                    for r in conn.execute(q)]

    def finish(self, outcomes: Mapping[str, str], now: dt.datetime) -> None:
        if outcomes:
            with self.engine.begin() as conn:
                conn.execute(_FINISH, [{"k_id": i, "processed_at": now, "outcome": o[:200]}
                                       for i, o in outcomes.items()])

    def outcomes(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(W.c.id, W.c.outcome))}

    def still_open(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 900):
                out.update(r[0] for r in conn.execute(select(W.c.id).where(W.c.id.in_(wanted[i:i + 900]), *_OPEN)))
        return out

    def quarantine(self, item_id: str, error: str, now: dt.datetime) -> None:
        """Set one event aside with its error: it is no longer pending, and it is not done."""
        with self.engine.begin() as conn:
            conn.execute(update(W).where(W.c.id == item_id).values(quarantined_at=now, error=error[:2000],
                                                                   outcome="quarantined"))

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        q = (select(W.c.id, W.c.source, W.c.received_at, W.c.occurred_at, W.c.quarantined_at, W.c.error)
             .where(W.c.quarantined_at.is_not(None)).order_by(W.c.quarantined_at.desc(), W.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [{"id": r[0], "source": r[1], "received_at": _iso(utc(r[2])), "occurred_at": _iso(utc(r[3])),
                     "quarantined_at": _iso(utc(r[4])), "error": r[5]} for r in conn.execute(q)]

    def health(self, now: dt.datetime) -> InboxHealth:
        """How many events wait, how long the oldest has waited, how many are quarantined;
        the gauges are set from it."""
        with self.engine.connect() as conn:
            n, oldest = conn.execute(select(func.count(), func.min(W.c.received_at)).where(*_OPEN)).one()
            quarantined = conn.execute(select(func.count()).where(W.c.quarantined_at.is_not(None))).scalar_one()
        first = utc(oldest) if n else None
        age = max(0.0, (now - first).total_seconds()) if first is not None else 0.0
        h = InboxHealth(int(n), first, age, int(quarantined))
        metrics.events_pending.set(h.pending)
        metrics.events_oldest_pending.set(h.oldest_pending_seconds)
        metrics.events_quarantined.set(h.quarantined)
        return h


@dataclass(frozen=True, slots=True)
class InboxHealth:
    pending: int
    oldest_received_at: dt.datetime | None
    oldest_pending_seconds: float
    quarantined: int


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


# ---- HR records from a webhook -----------------------------------------------------------
def map_person(cfg: Config, record: Mapping[str, Any], etype: str) -> tuple[Person, frozenset[str]]:
    """One webhook `person` through the export's column profile -> (Person, the canonical
    fields the record actually carried). A record without a status column reads as Active
    (Terminated for a termination); only supplied fields overwrite the stored record."""
    src = cfg.sources.hris
    kw: dict[str, Any] = {"profile": src.profile, "columns": src.columns,
                          "status_values": src.status_values} if src else {}
    prof = resolve_profile(kw.get("profile", "generic"), kw.get("columns"), kw.get("status_values"))
    present = {str(k).casefold() for k in record}
    supplied = frozenset(f for f, cands in prof.columns.items() if any(c.casefold() in present for c in cands))
    if "employee_id" not in supplied:
        raise BadRequest(f"person: no employee_id column (expected {' or '.join(prof.columns['employee_id'])})")
    row = {str(k): ("" if v is None else v) for k, v in record.items()}
    if "status" not in supplied:
        row[prof.columns["status"][0]] = "Terminated" if etype == "termination" else "Active"
    try:
        parsed = parse_export(json.dumps([row]).encode(), name="webhook person", format="json", **kw)
    except ExportRejected as e:
        raise BadRequest(str(e)) from None
    if parsed.quarantined or len(parsed.people) != 1:
        raise BadRequest(str(parsed.quarantined[0]) if parsed.quarantined else "person: cannot be read")
    # A date out of jml's range (jml.timeparse) is quarantined by the parse, like an export's.
    return parsed.people[0], supplied


def merge_person(old: Person | None, new: Person, supplied: frozenset[str]) -> Person:
    if old is None:
        return new
    fields = {f: getattr(new, f) for f in supplied if f in CANONICAL_FIELDS and f != "employee_id"}
    return replace(old, **fields, extra={**old.extra, **new.extra})


# ---- matching Okta users to people -----------------------------------------------------
def match_people(store: Store, attribute: str, values: Iterable[str]) -> dict[str, str]:
    """casefolded attribute value -> employee_id (a non-terminated person wins a tie)."""
    wanted = sorted({v.casefold() for v in values if v})
    if not wanted:
        return {}
    col: Any
    if attribute == "employee_id":
        col = P.c.employee_id
    elif attribute in CANONICAL_FIELDS:
        col = P.c.data[attribute].as_string()
    else:
        col = P.c.data[("extra", attribute)].as_string()
    out: dict[str, tuple[bool, str]] = {}
    with store.engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            q = select(P.c.employee_id, func.lower(col), P.c.status).where(func.lower(col).in_(wanted[i:i + 500]))
            for eid, value, status in conn.execute(q):
                live = status != Status.TERMINATED.value
                key = str(value).casefold()
                if key not in out or (live and not out[key][0]):
                    out[key] = (live, eid)
    return {k: v[1] for k, v in out.items()}


# ---- planning one person (or a batch of events' people) ---------------------------------
def index_for(store: Store, eids: Iterable[str]) -> dict[str, IndexEntry]:
    ids = list(eids)
    out: dict[str, IndexEntry] = {}
    cols = [P.c.employee_id, P.c.row_hash, P.c.next_change_at, P.c.missing_count, P.c.phase, P.c.override_kind]
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 900):
            for r in conn.execute(select(*cols).where(P.c.employee_id.in_(ids[i:i + 900]))):
                out[r[0]] = IndexEntry(r[1], utc(r[2]), r[3] or 0, r[4], r[5] is not None)
    return out


def recent_event_leavers(rt: Runtime, now: dt.datetime) -> int:
    """Distinct people deprovisioned by event/offboard plans released in the last hour."""
    q = (select(func.count(func.distinct(O.c.employee_id))).select_from(O.join(PL, O.c.plan_id == PL.c.id))
         .where(PL.c.origin.in_(EVENT_ORIGINS), PL.c.created_at >= now - dt.timedelta(hours=1),
                PL.c.state.in_(["queued", "done"]), O.c.action.in_(_DEPROVISION), O.c.state != "cancelled"))
    with rt.store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


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
            index_for(rt.store, people), now, origin=origin,
            verdict_for=lambda _ops: guard.Verdict(True, (reason,)) if held else guard.Verdict(False))

    if recent + len(scope) <= cap:
        return [run(scope, False)]
    dry = plan_people(rt, {e: (s, False) for e, s in scope.items()}, changed, index_for(rt.store, scope), now,
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


# ---- what each event changes ---------------------------------------------------------------
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


def _okta_users(payload: Mapping[str, Any]) -> list[str]:
    targets = payload.get("target")
    return [str(t["alternateId"]) for t in targets if isinstance(t, dict) and t.get("type") == "User"
            and t.get("alternateId")] if isinstance(targets, list) else []


def apply_items(rt: Runtime, items: list[InboxItem], now: dt.datetime) -> Applied:
    """Fold the events, in order, into people's overrides and HR records (in memory; the
    caller persists). Pure but for two reads: the Okta matches and the people's states."""
    cfg = rt.config
    attr = cfg.sources.okta.match if cfg.sources.okta else "work_email"
    matches = match_people(rt.store, attr, [u for it in items if it.source == "okta"
                                            for u in _okta_users(it.payload)])
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
            outcome, eids, actor = _apply_okta(it, matches, overrides, out)
        elif it.source == "hr" and it.id in mapped:
            outcome, eids, actor = _apply_hr(rt, it, mapped[it.id], states, overrides, out)
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


def _apply_okta(it: InboxItem, matches: Mapping[str, str], overrides: dict[str, Override | None],
                out: Applied) -> tuple[str, list[str], str]:
    etype = str(it.payload.get("eventType", ""))
    actor_doc = it.payload.get("actor")
    actor = f"okta:{actor_doc.get('alternateId', '')}" if isinstance(actor_doc, dict) else "okta"
    if etype not in OKTA_LEAVER | OKTA_RETURN | OKTA_REEVALUATE:
        return "ignored", [], actor
    eids = [matches[u.casefold()] for u in _okta_users(it.payload) if u.casefold() in matches]
    if not eids:
        return "unmatched", [], actor
    outcome = "reevaluated"
    for eid in eids:
        out.scope.setdefault(eid, False)
        cur = overrides.get(eid)
        if etype in OKTA_LEAVER:
            new = add_leaver(cur, Override(OverrideKind.IDP_DEACTIVATE, it.occurred_at, f"Okta {etype}", actor))
            if new != cur:
                overrides[eid] = new
                outcome = "leaver"
            else:
                outcome = "already_leaver"
        # HR outranks the IdP: a reactivation lifts only Okta's own deactivation (not one
        # published after it: out-of-order delivery), never an HR termination or offboard.
        elif etype in OKTA_RETURN and cur is not None:
            if idp_lifts(cur, it.occurred_at):
                overrides[eid] = None
                outcome = "lifted"
            elif cur.kind in HR_OVERRIDES:
                outcome = "not_lifted: HR leaver"
    return outcome, eids, actor


def _apply_hr(rt: Runtime, it: InboxItem, mapped: tuple[Person, frozenset[str]], states: Mapping[str, PersonState],
              overrides: dict[str, Override | None], out: Applied) -> tuple[str, list[str], str]:
    person, supplied = mapped
    eid = person.employee_id
    base = out.changed.get(eid) or (states[eid].person if eid in states else None)
    merged = merge_person(base, person, supplied)
    etype = str(it.payload.get("type"))
    if etype == "termination":
        if "termination_date" not in supplied or merged.termination_date is None:
            merged = replace(merged, termination_date=it.occurred_at.astimezone(rt.config.timezone).date())
        cur = overrides.get(eid)
        new = add_leaver(cur, Override(OverrideKind.HR_TERMINATION, it.occurred_at, "HR termination webhook",
                                       "hr-webhook"))
        if new != cur:
            overrides[eid] = new  # HR's now (an IdP deactivation is taken over, its time kept)
    out.changed[eid] = merged
    out.scope[eid] = True
    return etype, [eid], "hr-webhook"


# ---- processing the inbox ---------------------------------------------------------------
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
    inbox.health(rt.clock())
    return batch


# The database itself failing is no reason to set an event aside: the pass is tried again.
_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError)


async def _isolating(rt: Runtime, inbox: Inbox, items: list[InboxItem], now: dt.datetime, batch: Batch) -> None:
    try:
        done = await _process(rt, inbox, items, now)
    except (asyncio.CancelledError, *_TRANSIENT):
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
EVENT_LINGER = 0.1  # what a busy inbox waits before the next pass (an idle one: nothing)


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


# ---- offboard ----------------------------------------------------------------------------
async def reconcile(ctx: ServiceContext) -> None:
    """Scheduled job: compare every connector with the recorded state (jml.reconcile)."""
    from jml.reconcile import run

    await run(ctx.rt)
    ctx.wake()
