"""Reconciliation: what each app really holds vs what jml recorded pushing.

- **Drift** (an account jml manages, changed outside jml: enabled again, a managed group
  added or removed, an attribute edited, the account deleted): the recorded state is set to
  what the app holds, and the person is re-planned (origin "reconcile", through the export
  guard), so the planner's ordinary diff pushes the desired state back. Audited.
- **Orphans** (accounts in the app that no HR person owns): reported in the audit trail, the
  `jml_orphan_accounts{connector}` gauge and the `reconcile` setting (the status page).
  Never deleted unless `reconcile.delete_orphans`, and then only through a plan that passes
  the guard; protected accounts never.

`compare` is pure; `run` does the reading and writing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from jml import guard, metrics, notify, reviews
from jml.access_state import is_managed
from jml.context import ServiceContext
from jml.model import AccountRecord, Action, Operation, Priority, RemoteAccount
from jml.review_items import ACCOUNT, Holding
from jml.runtime import Runtime
from jml.store.remote import Found
from jml.sync import plan_people

log = logging.getLogger("jml.reconcile")

orphan_accounts = Gauge("jml_orphan_accounts", "Accounts in an app that no HR person owns (last reconciliation).",
                        ["connector"], registry=metrics.REGISTRY)
drift_found = Counter("jml_reconcile_drift", "Managed accounts found changed outside jml.",
                      ["connector", "kind"], registry=metrics.REGISTRY)


@dataclass(frozen=True, slots=True)
class Drift:
    record: AccountRecord
    remote: RemoteAccount | None  # None: the account is gone from the app
    kinds: tuple[str, ...]  # active | attributes | memberships | missing
    grants: frozenset[str] = frozenset()  # the managed grants the app holds, and the unmanaged ones recorded


@dataclass
class Findings:
    connector: str
    accounts: int = 0
    drift: list[Drift] = field(default_factory=list)
    orphans: list[RemoteAccount] = field(default_factory=list)
    error: str | None = None
    # Every matched live account as the app holds it (employee_id, account): what it holds beyond
    # the managed grants is kept as found access, for the next review (jml/reviews.py).
    held: list[tuple[str, RemoteAccount]] = field(default_factory=list)
    unrecorded: list[RemoteAccount] = field(default_factory=list)  # HR people's accounts jml has no record of


def compare(connector: str, records: Mapping[str, AccountRecord], remote: Iterable[RemoteAccount],
            people: frozenset[str], managed_grants: frozenset[str]) -> Findings:
    """One connector: recorded accounts (employee_id -> record) vs the app's accounts."""
    by_remote = {r.remote_id: r for r in records.values() if r.remote_id}
    by_name = {r.username.casefold(): r for r in records.values()}
    seen: set[str] = set()
    out = Findings(connector)
    for acc in remote:
        out.accounts += 1
        rec = (records.get(acc.external_id) if acc.external_id else None) or by_remote.get(acc.remote_id) \
            or by_name.get(acc.username.casefold())
        if rec is None:
            if not (acc.external_id and acc.external_id in people):
                out.orphans.append(acc)
            elif not acc.pending_invitation:
                out.unrecorded.append(acc)  # an HR person's account jml never made: unexplained until reviewed
            continue
        seen.add(rec.employee_id)
        if rec.deleted:
            continue
        out.held.append((rec.employee_id, acc))
        kinds: list[str] = []
        if acc.active != rec.active and not acc.pending_invitation:
            kinds.append("active")
        if any(k in acc.attributes and acc.attributes[k] != v for k, v in rec.attributes.items()):
            kinds.append("attributes")
        if (acc.groups & managed_grants) != (rec.grants & managed_grants):
            kinds.append("memberships")
        if kinds:
            # Recorded grants jml does not manage stay recorded as they are: drift on a managed group
            # must not drop them from the record (the next plan would push them again for nothing).
            out.drift.append(Drift(rec, acc, tuple(kinds), (acc.groups & managed_grants)
                                   | (rec.grants - managed_grants)))
    for rec in records.values():
        if rec.employee_id not in seen and not rec.deleted:
            out.drift.append(Drift(rec, None, ("missing",)))
    return out


async def _list(rt: Runtime, name: str) -> list[RemoteAccount] | str:
    try:
        return [acc async for acc in rt.connector(name).list_accounts()]
    except Exception as e:  # one unreachable app must not stop the others' reconciliation
        log.warning("reconciliation cannot list accounts", extra={"connector": name, "error": str(e)})
        return f"{type(e).__name__}: {e}"


async def run(rt: Runtime) -> list[Findings]:
    now = rt.clock()
    names = list(rt.config.connectors)
    listed = await asyncio.gather(*(_list(rt, n) for n in names))
    records = rt.store.load_accounts()
    people = rt.store.people_on_record()
    groups = rt.store.known_groups()
    report: list[Findings] = []
    for name, accounts in zip(names, listed, strict=True):
        if isinstance(accounts, str):
            report.append(Findings(name, error=accounts))
            continue
        mine = {eid: r for (c, eid), r in records.items() if c == name}
        # Only managed entitlements are put back to what the rules say (config
        # access.catalogue.<c>.<grant>.managed, else: some rule grants it). Members of a group no
        # rule manages are left as found and listed for review: never removed without a decision.
        known = frozenset(g for r in mine.values() for g in r.grants) | groups.get(name, frozenset())
        managed = frozenset(g for g in known if is_managed(rt, name, g))
        found = compare(name, mine, accounts, people, managed)
        report.append(found)
        rt.store.reviews.replace_found(name, _found_access(found, managed), now)
    drift = [d for f in report for d in f.drift]
    audit: list[tuple[str, object, str, str | None]] = []
    for f in report:
        orphan_accounts.labels(f.connector).set(len(f.orphans))
        for d in f.drift:
            for kind in d.kinds:
                drift_found.labels(f.connector, kind).inc()
            audit.append(("drift", {"connector": f.connector, "kinds": list(d.kinds),
                                    "username": d.record.username}, "reconcile", d.record.employee_id))
        if f.orphans:
            audit.append(("orphans", {"connector": f.connector, "count": len(f.orphans),
                                      "accounts": [o.username for o in f.orphans[:1000]]}, "reconcile", None))
    if drift:
        # The recorded state becomes what the app holds, so the next plan repairs it.
        rt.store.remote.record_drift([Found(d.record, d.remote, d.grants, "memberships" in d.kinds) for d in drift],
                                     now)
        eids = sorted({d.record.employee_id for d in drift})
        plan_people(rt, {e: (False, False) for e in eids}, {}, rt.store.index_of(eids), now, origin="reconcile")
    if rt.config.reconcile.delete_orphans:
        _delete_orphans(rt, report, now)
    rt.audit.append_many(audit, now=now)
    reviews.refresh_unexplained(rt, now)  # what the apps hold that nothing explains: status page, next review
    rt.store.set_setting("reconcile", {
        "at": now.isoformat(),
        "connectors": {f.connector: {"accounts": f.accounts, "drift": len(f.drift), "orphans": len(f.orphans),
                                     "orphan_sample": [o.username for o in f.orphans[:20]], "error": f.error}
                       for f in report}})
    return report


def _found_access(f: Findings, managed: frozenset[str]) -> list[Holding]:
    """What the app holds that jml does not manage: unmanaged memberships and orphan accounts."""
    out = [Holding(f.connector, eid, acc.username, g, "app", None, acc.remote_id)
           for eid, acc in f.held for g in sorted(acc.groups - managed)]
    out += [Holding(f.connector, "", o.username, ACCOUNT, "app", None, o.remote_id) for o in f.orphans]
    out += [Holding(f.connector, str(a.external_id), a.username, ACCOUNT, "app", None, a.remote_id)
            for a in f.unrecorded]
    return out


def _delete_orphans(rt: Runtime, report: list[Findings], now: dt.datetime) -> None:
    """Orphans go only through a plan the guard judges like any other (held if too many)."""
    ops = [Operation(f.connector, Action.DELETE, f"orphan:{o.remote_id}",
                     {"username": o.username, "remote_id": o.remote_id, "orphan": True}, Priority.NORMAL)
           for f in report for o in f.orphans
           if o.username.casefold() not in rt.policy.protected
           and (o.external_id or "").casefold() not in rt.policy.protected]
    if not ops:
        return
    verdict = guard.evaluate(ops, managed=rt.store.managed_counts(), limits=rt.limits,
                             per_connector=rt.connector_limits())
    plan_id = uuid.uuid4().hex[:12]
    summary = {Action.DELETE.value: len(ops)}
    rt.outbox.save_plan(plan_id, ops, held=verdict.held, origin="reconcile", reasons=list(verdict.reasons),
                        summary=summary, policy_hash=rt.policy.fingerprint(), export_id=None, now=now)
    rt.audit.append("plan", {"plan_id": plan_id, "held": verdict.held, "reasons": list(verdict.reasons),
                             "summary": summary, "origin": "reconcile", "operations": len(ops)}, now=now,
                    actor="reconcile")
    if verdict.held:
        notify.held_plan_saved(rt, plan_id, list(verdict.reasons), len(ops))


async def job(ctx: ServiceContext) -> None:
    """Scheduled (`reconcile.schedule`) on the lease holder: reconcile, then wake the workers
    for the repair plans."""
    await run(ctx.rt)
    ctx.wake()
    # Revocations of an access review not yet read back (the daemon restarted while they were
    # pushed, or the app was down): read back now; the campaign gauges start from the store.
    await reviews.verify(ctx.rt, ctx.rt.clock())
