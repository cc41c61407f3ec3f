"""Access review campaigns and unexplained access (issue 18), the shell around jml/review_items.py.

- `start`: one item per account and per entitlement a person holds, from what jml recorded
  pushing (store accounts and grants) and what reconciliation found apps holding beyond it
  (`store.reviews.found`), each with why (rule, request, or nothing) and a reviewer.
- `decide`: keep or revoke, by the assigned reviewer or an admin, never the person under
  review. Each decision is an audit record, its sequence number and hash kept with it. A
  revocation becomes a denial (rule-granted or unexplained) or the end of the request
  (requested), and a plan pushed through the engine at once (origin "review").
- `verify`: reads each revoked thing back from the app; only then is it "revoked".
- `export`: every item with reviewer, decision, time and its audit record (JSON or CSV).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from prometheus_client import Gauge

from jml import guard, lifecycle, metrics, notify
from jml.access_state import is_managed, norm
from jml.errors import UsageError
from jml.model import ConnectorTraits, Phase
from jml.policy import desired
from jml.reports import spreadsheet_safe
from jml.review_items import (
    ACCOUNT,
    BY,
    DECISIONS,
    NONE,
    REQUEST,
    Holding,
    RequestGrant,
    build_items,
    progress,
    refusal,
    revoke_operations,
    revoked_in_app,
)
from jml.runtime import Runtime
from jml.store.retry import retry_write
from jml.store.reviews import AlreadyDecided, Campaign, Item

log = logging.getLogger("jml.reviews")

review_items = Gauge("jml_review_items", "Access review items by campaign and state (open, kept, revoking, "
                     "revoked, revoke_failed).", ["campaign", "state"], registry=metrics.REGISTRY)
unexplained_access = Gauge("jml_unexplained_access", "Accounts and entitlements found in apps that no rule and "
                           "no approved request explains.", ["connector"], registry=metrics.REGISTRY)

FOUND_MARK = "(found in the app)"  # the rule column reconciliation writes for a grant it found (store/remote.py)
EXPORT_COLUMNS = ("campaign", "item", "employee_id", "name", "email", "connector", "username", "entitlement",
                  "why", "why_detail", "held_by", "last_change", "reviewer", "decision", "decided_by", "decided_at",
                  "reason", "audit_seq", "audit_hash", "plan_id", "verified_at", "verify_error")


@dataclass(frozen=True, slots=True)
class Decider:
    """Who decides: as the audit trail names them, their e-mail and HR employee_id, and
    whether they are an admin (who may decide any item but their own)."""

    actor: str
    email: str = ""
    person: str | None = None
    admin: bool = False


@dataclass
class Decided:
    decided: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    plan_id: str | None = None
    held: bool = False


def _traits(rt: Runtime, connector: str) -> ConnectorTraits:
    return rt.traits.get(connector) or ConnectorTraits(connector)


# ---- what people hold and why ---------------------------------------------------------
def holdings(rt: Runtime) -> list[Holding]:
    """Every live account and entitlement: recorded by jml, then found in apps beyond that."""
    accounts = rt.store.account_summaries()
    out: list[Holding] = []
    for (c, eid), acc in accounts.items():
        if not acc.deleted:
            out.append(Holding(c, eid, acc.username, ACCOUNT, "jml", acc.created_at))
    for g in rt.store.grant_details():
        held = accounts.get((g["connector"], g["employee_id"]))
        if held is None or held.deleted:
            continue
        found = g["rule"] == FOUND_MARK
        if found and is_managed(rt, g["connector"], g["name"]):
            continue  # managed drift: reconcile's plan is already putting it back to what the rules say
        out.append(Holding(g["connector"], g["employee_id"], held.username, g["name"], "app" if found else "jml",
                           None if found else g["since"]))
    out.extend(rt.store.reviews.found())
    return out


def explanations(rt: Runtime, now: dt.datetime) -> tuple[dict[tuple[str, str], dict[str, str]],
                                                         dict[tuple[str, str], dict[str, RequestGrant]]]:
    """(connector, employee_id) -> what the rules grant there (grant -> rule), and -> the
    approved requests in force there (grant -> request)."""
    traits = list(rt.traits.values())
    rules: dict[tuple[str, str], dict[str, str]] = {}
    for eid, state in rt.store.load_states().items():
        if state.person is None:
            continue
        lc = lifecycle.classify(state, now, rt.rules)
        if lc.phase in (Phase.LEAVER, Phase.GONE, Phase.NOT_YET):
            continue  # the rules explain no access of a leaver or a future hire
        for d in desired(state.person, lc, traits, rt.policy):
            if d.leaver:
                continue
            # A pre-hire's account is explained by the rules that will grant it on day one.
            rules[(d.connector, eid)] = {g: r for g, r in d.grants.items() if not r.startswith(("request:", "jit:"))}
    requests: dict[tuple[str, str], dict[str, RequestGrant]] = {}
    for r in rt.store.access.in_force(now):
        approver = ", ".join(v.approver for v in r.votes) or (r.decided_by or "")
        requests.setdefault((r.connector, r.employee_id), {})[norm(rt, r.connector, r.grant)] = RequestGrant(
            r.id, approver, r.expires_at)
    return rules, requests


def unexplained(rt: Runtime, now: dt.datetime) -> list[dict[str, Any]]:
    """Accounts and entitlements found in apps that no rule and no approved request explains
    (the status page, `jml status`, the next campaign). Updates the gauge."""
    rules, requests = explanations(rt, now)
    drafts = build_items(holdings(rt), by="app", connector=None, rule_grants=rules, requests=requests, owners={},
                         managers={}, emails={}, default_reviewer="")
    rows = [{"connector": d.holding.connector, "employee_id": d.holding.employee_id, "username": d.holding.username,
             "entitlement": d.holding.entitlement, "held_by": d.holding.held_by} for d in drafts if d.why.kind == NONE]
    counts: dict[str, int] = {c: 0 for c in rt.config.connectors}
    for r in rows:
        counts[r["connector"]] = counts.get(r["connector"], 0) + 1
    for c, n in counts.items():
        unexplained_access.labels(c).set(n)
    return rows


UNEXPLAINED_KEY = "unexplained"
UNEXPLAINED_SAMPLE = 20


def refresh_unexplained(rt: Runtime, now: dt.datetime) -> list[dict[str, Any]]:
    """Work unexplained access out again and keep the summary the status page and `jml status`
    read (after each reconciliation and each read-back of revocations: not on every page view)."""
    rows = unexplained(rt, now)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["connector"]] = counts.get(r["connector"], 0) + 1
    rt.store.set_setting(UNEXPLAINED_KEY, {"at": now.isoformat(), "count": len(rows), "by_connector": counts,
                                           "sample": rows[:UNEXPLAINED_SAMPLE]})
    return rows


# ---- campaigns ------------------------------------------------------------------------
def start(rt: Runtime, *, by: str, connector: str | None, due: dt.timedelta | None, name: str | None,
          created_by: str, now: dt.datetime) -> Campaign:
    if by not in BY:
        raise UsageError(f"--by: use one of {', '.join(BY)}, not {by!r}")
    if connector is not None and connector not in rt.config.connectors:
        raise UsageError(f"--connector: unknown connector {connector!r}")
    rules, requests = explanations(rt, now)
    owners: dict[tuple[str, str], str] = {}
    for c, entries in rt.config.access.catalogue.items():
        for grant, entry in entries.items():
            if entry.owner:  # under the name as configured and as the planner spells it
                owners[(c, grant)] = entry.owner
                if grant != "*":
                    owners[(c, norm(rt, c, grant))] = entry.owner
    managers: dict[str, str] = {}
    emails: dict[str, str] = {}
    if by == "manager":
        for eid, state in rt.store.load_states().items():
            if state.person is not None:
                managers[eid] = state.person.manager_id
                emails[eid] = state.person.work_email
    default = rt.config.reviews.default_reviewer
    drafts = build_items(holdings(rt), by=by, connector=connector, rule_grants=rules, requests=requests,
                         owners=owners, managers=managers, emails=emails, default_reviewer=default)
    if not drafts:
        raise UsageError("nothing to review: no accounts recorded or found" + (f" in {connector}" if connector else ""))
    unassigned = sum(1 for d in drafts if not d.reviewer)
    if unassigned:
        raise UsageError(f"{unassigned} item(s) have no reviewer: set reviews.default_reviewer "
                         "(or catalogue owners / HR managers)")
    title = name or f"{by} review {now.date().isoformat()}" + (f" ({connector})" if connector else "")
    due_at = now + (due if due is not None else rt.config.reviews.due)

    def save() -> int:
        with rt.audit.lock, rt.store.transaction() as tx:
            cid = rt.store.reviews.create_campaign(name=title, by=by, connector=connector, created_by=created_by,
                                                   now=now, due_at=due_at, items=drafts, conn=tx)
            rt.audit.append_in(tx, [("review_started", {
                "campaign": cid, "name": title, "by": by, "connector": connector, "items": len(drafts),
                "unexplained": sum(1 for d in drafts if d.why.kind == NONE), "due_at": due_at.isoformat()},
                created_by, None)], now=now)
            return cid

    cid = retry_write(save, "starting the review campaign")
    refresh_gauges(rt)
    # Reviewers are told, with a link to their items (best effort: jml/notify.py).
    reviewers = sorted({d.reviewer for d in drafts if "@" in d.reviewer})
    notify.notify_soon(rt, notify.Notice(
        kind="REVIEW_STARTED", to=reviewers, subject=f"jml: access review “{title}” needs your decisions",
        text=(f"Access review {cid} ({title}) has {len(drafts)} item(s) across {len(reviewers)} reviewer(s), due "
              f"{due_at.date().isoformat()}. Keep or revoke each item assigned to you."),
        link=f"/reviews/{cid}"))
    campaign = rt.store.reviews.campaign(cid)
    assert campaign is not None
    return campaign


def campaign_or_error(rt: Runtime, campaign_id: int) -> Campaign:
    c = rt.store.reviews.campaign(campaign_id)
    if c is None:
        raise UsageError(f"campaign: no review campaign {campaign_id}")
    return c


def decide(rt: Runtime, campaign_id: int, item_ids: Sequence[int], decision: str, who: Decider, *,
           reason: str, now: dt.datetime) -> Decided:
    """Decide items of one campaign (the same decision for each). Items this decider may not
    decide are refused, each with why; the rest are decided, audited and (revoke) planned."""
    if decision not in DECISIONS:
        raise UsageError(f"decision: use keep or revoke, not {decision!r}")
    campaign_or_error(rt, campaign_id)
    items = {it.id: it for it in rt.store.reviews.items(campaign_id, item_ids=item_ids)}
    out = Decided()
    people = rt.store.people_summary()
    allowed: list[Item] = []
    for iid in item_ids:
        it = items.get(iid)
        if it is None:
            out.refused[iid] = f"no item {iid} in campaign {campaign_id}"
            continue
        subject = people.get(it.holding.employee_id)
        why = refusal(subject_id=it.holding.employee_id, subject_email=subject.email if subject else "",
                      reviewer=it.reviewer, who_person=who.person, who_email=who.email, admin=who.admin,
                      decided=it.decision is not None)
        if why is not None:
            out.refused[iid] = why
        elif iid not in {a.id for a in allowed}:
            allowed.append(it)
    if not allowed:
        return out

    def save() -> None:
        with rt.audit.lock, rt.store.transaction() as tx:
            rt.store.reviews.decide_in(tx, allowed, decision=decision, decided_by=who.actor, reason=reason, now=now)
            last = rt.audit.append_in(tx, [("review_decision", {
                "campaign": campaign_id, "item": it.id, "connector": it.holding.connector,
                "username": it.holding.username, "entitlement": it.holding.entitlement, "decision": decision,
                "reviewer": it.reviewer, "why": it.why.kind, "reason": reason}, who.actor,
                it.holding.employee_id or None) for it in allowed], now=now)
            first = last - len(allowed) + 1
            rt.store.reviews.tie_to_audit_in(tx, [(it.id, first + i) for i, it in enumerate(allowed)])

    while allowed:
        try:
            retry_write(save, "recording the review decisions")
            break
        except AlreadyDecided as e:  # another reviewer (or a second click) was first: theirs stands
            out.refused.update({i: "the item is already decided" for i in e.item_ids})
            allowed = [it for it in allowed if it.id not in set(e.item_ids)]
    if not allowed:
        return out
    out.decided = [it.id for it in allowed]
    if decision == "revoke":
        out.plan_id, out.held = _revoke(rt, campaign_id, allowed, who, reason, now)
    refresh_gauges(rt)
    return out


def _revoke(rt: Runtime, campaign_id: int, items: Sequence[Item], who: Decider, reason: str,
            now: dt.datetime) -> tuple[str | None, bool]:
    """Denials (or the requests' end) so no plan gives the things back, then one plan taking them away."""
    why = f"access review {campaign_id}: {reason}" if reason else f"access review {campaign_id}"
    for it in items:
        h = it.holding
        if not h.employee_id:
            continue  # an orphan: nobody in HR, so no rule or request can give it back
        if it.why.kind == REQUEST and h.entitlement != ACCOUNT:
            # As jml/access.py ends a grant: its removal clock (removal_deadline) is read back there too.
            rt.store.access.move(str(it.why.detail.get("request")), ("active",), "revoked", ended_at=now,
                                 end_reason=why, removal_deadline=now + rt.config.connector_sla(h.connector))
        else:
            rt.store.access.add_denial(h.employee_id, h.connector, h.entitlement, reason=why, decided_by=who.actor,
                                       source=f"review:{campaign_id}", now=now)
    held = rt.store.load_accounts(sorted({it.holding.employee_id for it in items if it.holding.employee_id}))
    ops = []
    for it in items:
        rec = held.get((it.holding.connector, it.holding.employee_id))
        ops += revoke_operations(it.holding, _traits(rt, it.holding.connector), rec.grants if rec else ())
    if not ops:
        return None, False
    verdict = guard.evaluate(ops, managed=rt.store.managed_counts(), limits=rt.limits,
                             per_connector=rt.connector_limits())
    plan_id = uuid.uuid4().hex[:12]
    summary: dict[str, int] = {}
    for op in ops:
        summary[op.action.value] = summary.get(op.action.value, 0) + 1

    def save() -> None:
        with rt.audit.lock, rt.store.transaction() as tx:
            rt.outbox.save_plan(plan_id, ops, held=verdict.held, origin="review", reasons=list(verdict.reasons),
                                summary=summary, policy_hash=rt.policy.fingerprint(), export_id=None, now=now, conn=tx)
            rt.audit.append_in(tx, [("plan", {"plan_id": plan_id, "held": verdict.held,
                                              "reasons": list(verdict.reasons), "summary": summary,
                                              "origin": "review", "campaign": campaign_id,
                                              "operations": len(ops)}, who.actor, None)], now=now)

    retry_write(save, "saving the revocation plan")
    if verdict.held:
        notify.held_plan_saved(rt, plan_id, list(verdict.reasons), len(ops))
    rt.store.reviews.set_plan([it.id for it in items], plan_id)
    return plan_id, verdict.held


async def verify(rt: Runtime, now: dt.datetime, campaign_id: int | None = None) -> tuple[int, int]:
    """Read every revocation whose plan has finished back from its app: (verified, not yet)."""
    pending = rt.store.reviews.unverified_revocations()
    by_campaign: dict[int, list[int]] = {}
    for cid, iid in pending:
        if campaign_id is None or cid == campaign_id:
            by_campaign.setdefault(cid, []).append(iid)
    results: list[tuple[int, dt.datetime | None, str | None]] = []
    done = waiting = 0
    for cid, ids in sorted(by_campaign.items()):
        for it in rt.store.reviews.items(cid, item_ids=ids):
            if it.plan_id is not None and rt.outbox.open_count(it.plan_id):
                waiting += 1
                continue  # still being pushed
            h = it.holding
            try:
                remote = await rt.connector(h.connector).read_account(h.employee_id, h.username,
                                                                       _remote_id(rt, h))
            except Exception as e:  # one unreachable app must not stop the others' read-backs
                results.append((it.id, None, f"read-back failed: {type(e).__name__}"))
                waiting += 1
                continue
            gone = revoked_in_app(h, None if remote is None else remote.active,
                                  None if remote is None else remote.groups)
            if gone:
                results.append((it.id, now, None))
                if h.held_by == "app":
                    rt.store.reviews.forget_found(h.connector, h.username, h.entitlement)
                done += 1
            else:
                results.append((it.id, None, "the app still holds it"))
                waiting += 1
    rt.store.reviews.set_verified(results)
    if done:
        refresh_unexplained(rt, now)
    if results:
        rt.audit.append("review_verified", {"verified": done, "not_yet": waiting,
                                            "items": [i for i, at, _ in results if at is not None][:5000]}, now=now)
    refresh_gauges(rt)
    return done, waiting


def _remote_id(rt: Runtime, h: Holding) -> str | None:
    if not h.employee_id:
        return h.remote_id
    return rt.store.remote_id(h.connector, h.employee_id) or h.remote_id


def refresh_gauges(rt: Runtime) -> None:
    for (cid, state), n in rt.store.reviews.state_counts().items():
        review_items.labels(str(cid), state).set(n)


def progress_of(rt: Runtime, campaign_id: int) -> dict[str, tuple[int, int]]:
    """reviewer -> (decided, total)."""
    return progress(rt.store.reviews.progress_rows(campaign_id))


# ---- evidence -------------------------------------------------------------------------
def item_dict(it: Item, people: dict[str, Any] | None = None) -> dict[str, Any]:
    who = (people or {}).get(it.holding.employee_id)
    return {
        "campaign": it.campaign_id, "item": it.id, "employee_id": it.holding.employee_id,
        "name": who.name if who else "", "email": who.email if who else "", "connector": it.holding.connector,
        "username": it.holding.username, "entitlement": it.holding.entitlement, "why": it.why.kind,
        "why_detail": it.why.text(), "held_by": it.holding.held_by,
        "last_change": _iso(it.holding.last_change), "reviewer": it.reviewer, "state": it.state,
        "decision": it.decision, "decided_by": it.decided_by, "decided_at": _iso(it.decided_at),
        "reason": it.reason, "audit_seq": it.audit_seq, "audit_hash": it.audit_hash, "plan_id": it.plan_id,
        "verified_at": _iso(it.verified_at), "verify_error": it.verify_error,
    }


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def campaign_dict(c: Campaign) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "by": c.by, "connector": c.connector, "created_by": c.created_by,
            "created_at": _iso(c.created_at), "due_at": _iso(c.due_at), "total": c.total, "decided": c.decided}


def export_data(rt: Runtime, campaign_id: int) -> dict[str, Any]:
    c = campaign_or_error(rt, campaign_id)
    people: dict[str, Any] = dict(rt.store.people_summary())
    count, head = rt.audit.head()
    return {"campaign": campaign_dict(c), "generated_at": rt.clock().isoformat(),
            "audit_head": {"count": count, "hash": head},
            "progress": {r: {"decided": d, "total": t} for r, (d, t) in progress_of(rt, campaign_id).items()},
            "items": [item_dict(it, people) for it in rt.store.reviews.items(campaign_id)]}


def export(rt: Runtime, campaign_id: int, out: IO[str], *, fmt: str = "json") -> None:
    """`jml review export CAMPAIGN`: every item with reviewer, decision, time and the audit
    record (sequence number, hash) of its decision, so each row ties to the chain."""
    doc = export_data(rt, campaign_id)
    if fmt == "json":
        json.dump(doc, out, indent=2, ensure_ascii=False, default=str)
        out.write("\n")
        return
    if fmt != "csv":
        raise UsageError(f"--format: use json or csv, not {fmt!r}")
    writer = csv.DictWriter(out, fieldnames=list(EXPORT_COLUMNS), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    for row in doc["items"]:
        writer.writerow({k: spreadsheet_safe(v) if v is not None else "" for k, v in row.items()})



async def verify_when_done(rt: Runtime, plan_id: str, campaign_id: int, *, poll: float = 0.5,
                           give_up_after: float = 600.0) -> tuple[int, int]:
    """In the daemon: wait for a revocation plan's operations to finish, then read them back."""
    import asyncio

    waited = 0.0
    while rt.outbox.open_count(plan_id) and waited < give_up_after:
        await asyncio.sleep(poll)
        waited += poll
    return await verify(rt, rt.clock(), campaign_id)
