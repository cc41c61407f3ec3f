"""Why a deprovision missed (or is about to miss) its deadline (issue 17): one cause per SLA
clock, recorded when the breach is counted, shown on the page, in `report sla`, in `jml status`
and as `jml_deprovision_sla_breaches_by_cause_total{connector,cause}`.

Causes, the first that applies:
- hr_data_late: jml learned of the leaver only after the deadline had passed (HR's data came
  late: a back-dated termination, a late export or webhook);
- held_plan: the leaver's work waited in a plan the guard held;
- paused_connector: an operator paused the connector;
- vendor_rate_limit: the app kept answering 429 / rate limited;
- app_errors: the app refused or failed (dead letters, errors, or it still showed access);
- jml_backlog: none of the above: the work was queued behind other work in jml.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jml.runtime import Runtime

__all__ = ["CAUSES", "cause_of", "describe", "paused_at", "record_pause"]

PAUSE_LOG = "pause_log"  # setting: {connector: [[paused at, resumed at or None], ...]}, the latest first kept
PAUSE_LOG_KEEP = 50

CAUSES = ("hr_data_late", "held_plan", "paused_connector", "vendor_rate_limit", "app_errors", "jml_backlog")

_TEXT = {
    "hr_data_late": ("HR data late: jml learned of the leaver after the deadline had passed",
                     "HR: send terminations on time (webhook, or an earlier export); nothing in jml could have "
                     "met this one."),
    "held_plan": ("held plan: the deprovision waited for an approval",
                  "Approvers: decide held plans quickly; consider a layoff pre-approval for announced departures."),
    "paused_connector": ("paused connector: the deprovision waited for a resume",
                         "Operators: resume the connector; pause only as long as needed."),
    "vendor_rate_limit": ("vendor rate limit: the app kept rate-limiting jml",
                          "Ops: lower the connector's rate_limit to the vendor's, or ask the vendor for more."),
    "app_errors": ("app errors: the app refused, failed or still showed access",
                   "Ops: read the dead letters and the app's errors; Retry once fixed."),
    "jml_backlog": ("jml backlog: the work was queued behind other work",
                    "Ops: raise the connector's concurrency or rate_limit if the app allows it."),
}


def describe(cause: str | None) -> dict[str, str]:
    """{"cause", "text", "todo"} for a recorded cause ("" when none)."""
    if not cause:
        return {"cause": "", "text": "", "todo": ""}
    text, todo = _TEXT.get(cause, (cause, ""))
    return {"cause": cause, "text": text, "todo": todo}


def cause_of(rt: Runtime, connector: str, employee_id: str, deadline: dt.datetime,
             started_at: dt.datetime | None = None) -> str:
    """The cause of a (possible) breach of this clock, from the person's operations and the
    connector's state now."""
    ops = [o for o in rt.outbox.person_history(employee_id) if o["connector"] == connector
           and (started_at is None or o["created_at"] is None
                or o["created_at"] >= started_at - dt.timedelta(minutes=5)
                or o["state"] in ("pending", "running", "held", "dead"))]
    first = min((o["created_at"] for o in ops if o["created_at"] is not None), default=None)
    if first is not None and first > deadline:
        return "hr_data_late"
    if any(o["state"] == "held" or (o["reasons"] and o["decided_at"] is not None and o["decided_at"] > deadline)
           or (o["reasons"] and o["plan_state"] == "held") for o in ops):
        return "held_plan"
    paused = set(rt.store.get_setting("paused_connectors", []) or [])
    if connector in paused and (not ops or any(o["state"] in ("pending", "running") for o in ops)):
        return "paused_connector"
    if paused_at(rt, connector, deadline):  # paused when the deadline passed, resumed since (the breach is
        return "paused_connector"           # counted when it is verified, or by the next tick)
    errors = [str(o["error"] or "") for o in ops if o["error"]]
    if any(_rate_limited(e) for e in errors):
        return "vendor_rate_limit"
    if errors or any(o["state"] == "dead" for o in ops):
        return "app_errors"
    return "jml_backlog"


def record_pause(rt: Runtime, connector: str, paused: bool, now: dt.datetime) -> None:
    """Note when a connector was paused and resumed: a breach counted after the resume still
    knows the deadline passed while it was paused."""
    log: dict[str, Any] = dict(rt.store.get_setting(PAUSE_LOG) or {})
    spans = [list(s) for s in log.get(connector) or []]
    if paused and (not spans or spans[-1][1] is not None):
        spans.append([now.isoformat(), None])
    elif not paused and spans and spans[-1][1] is None:
        spans[-1][1] = now.isoformat()
    log[connector] = spans[-PAUSE_LOG_KEEP:]
    rt.store.set_setting(PAUSE_LOG, log)


def paused_at(rt: Runtime, connector: str, at: dt.datetime) -> bool:
    """Was the connector paused at `at` (by the pause log)?"""
    for start, end in (rt.store.get_setting(PAUSE_LOG) or {}).get(connector) or []:
        if dt.datetime.fromisoformat(start) <= at and (end is None or at < dt.datetime.fromisoformat(end)):
            return True
    return False


def _rate_limited(error: str) -> bool:
    text = error.casefold()
    return "429" in text or "rate limit" in text or "rate_limit" in text or "ratelimit" in text


def cause_for(rt: Runtime, clock: Any) -> str:
    """cause_of for a Clock-like value (connector, employee_id, deadline, started_at)."""
    return cause_of(rt, clock.connector, clock.employee_id, clock.deadline, getattr(clock, "started_at", None))
