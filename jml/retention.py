"""Retention: leavers' personal data erased a configured time after they left (`retention:` in
the config; off when absent), by `jml purge [--dry-run]` and by a daily job of `jml serve`.

Who is due: a leaver whose effective termination is older than `retention.leavers_after`,
with every account deprovisioned (inactive or deleted), every SLA clock verified and no
operation still open — the erasure never takes away what a running deprovision or an SLA
report still needs. What is kept: the employee id (the pseudonym), status and dates, so
counts and SLA reports still add up. Processed webhook events older than
`retention.events_after` lose their payload whoever they were about.

How the store does it and how the audit trail stays verifiable: jml/store/retention.py,
jml/audit.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from jml import metrics
from jml.config import Config
from jml.context import ServiceContext
from jml.runtime import Runtime
from jml.store.retention import Retention

log = logging.getLogger("jml.retention")


@dataclass
class PurgeReport:
    dry_run: bool
    people: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    audit_records: int = 0
    events: int = 0
    erasure_seq: int | None = None

    def lines(self) -> list[str]:
        verb = "would erase" if self.dry_run else "erased"
        out = [f"{verb} the personal data of {len(self.people)} leaver(s)"
               + (f": {', '.join(self.people[:20])}{' …' if len(self.people) > 20 else ''}" if self.people else "")]
        for table, n in sorted(self.rows.items()):
            out.append(f"  {table}: {n} row(s)")
        if self.people:
            out.append(f"  audit records rewritten: {self.audit_records}"
                       + (f" (erasure record {self.erasure_seq})" if self.erasure_seq else ""))
        out.append(f"{verb} the payload of {self.events} old webhook event(s)")
        return out


def enabled(cfg: Config) -> bool:
    return cfg.retention.leavers_after is not None or cfg.retention.events_after is not None


def purge(rt: Runtime, *, now: dt.datetime, actor: str, dry_run: bool = False) -> PurgeReport:
    """Erase what retention says is due (blocking: run it in a thread from async code)."""
    ret = rt.config.retention
    repo = Retention(rt.store, rt.audit)
    report = PurgeReport(dry_run=dry_run)
    if ret.leavers_after is not None:
        eids = repo.leavers_due(now - ret.leavers_after)
        why: dict[str, Any] = {"reason": "retention", "leavers_after": _days(ret.leavers_after)}
        result = repo.purge(eids, now=now, actor=actor, why=why, dry_run=dry_run)
        report.people, report.rows = result.people, result.rows
        report.audit_records, report.erasure_seq = result.audit_records, result.erasure_seq
        if not dry_run:
            metrics.purged_people.inc(len(result.people))
    if ret.events_after is not None:
        report.events = repo.erase_events(now - ret.events_after, now=now, dry_run=dry_run)
    if (report.people or report.events) and not dry_run:
        log.info("retention erased personal data", extra={"people": len(report.people), "events": report.events,
                                                          "erasure_seq": report.erasure_seq})
    return report


def _days(d: dt.timedelta) -> str:
    return f"{d.days}d" if d.seconds == 0 and d.microseconds == 0 else f"{int(d.total_seconds())}s"


async def job(ctx: ServiceContext) -> None:
    """The daemon's scheduled purge (the lease holder only; scheduler.py)."""
    if enabled(ctx.rt.config):
        await asyncio.to_thread(purge, ctx.rt, now=ctx.now, actor="jml retention")
