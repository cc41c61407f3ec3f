"""What a signed-in person can change: approve or discard a held plan (or a pre-approval),
offboard someone, retry dead letters, pause or resume a connector.

Shared by the HTML forms and the JSON API so both audit and wake the workers the same way.
The actor is always the person (or token) who asked, as `Principal.actor` names them.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Any

from jml import approvals
from jml import offboard as offboard_mod
from jml.approvals import Approver, Decision
from jml.context import ServiceContext
from jml.errors import GuardHeld, JMLError
from jml.sla_causes import record_pause


class ActionError(Exception):
    """A refusal with the HTTP status that says why (400, 404, 409, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def approve(ctx: ServiceContext, plan_id: str, who: Approver) -> Decision:
    try:
        decision = approvals.approve(ctx.rt, plan_id, who)
    except approvals.Refused as e:
        raise ActionError(404 if e.not_found else 409, e.message) from None
    if decision.done:
        ctx.wake()
    return decision


def discard(ctx: ServiceContext, plan_id: str, who: Approver) -> None:
    try:
        approvals.discard(ctx.rt, plan_id, who)
    except approvals.Refused as e:
        raise ActionError(404 if e.not_found else 409, e.message) from None


def retry(ctx: ServiceContext, operation_id: int | None, actor: str) -> int:
    rt = ctx.rt
    n = rt.outbox.retry(operation_id, rt.clock())
    rt.audit.append("retry", {"operation_id": operation_id, "all": operation_id is None, "count": n},
                    now=rt.clock(), actor=actor)
    if n:
        ctx.wake()
    return n


def discard_operation(ctx: ServiceContext, operation_id: int, actor: str) -> None:
    """Drop one dead letter (it is not retried); audited with who and which operation."""
    rt = ctx.rt
    found = [q for q in rt.outbox.ops(["dead"], limit=10000) if q.id == operation_id]
    if not found or not rt.outbox.discard_dead(operation_id, rt.clock()):
        raise ActionError(404, f"no dead letter #{operation_id}")
    q = found[0]
    rt.audit.append("discard_operation", {"operation_id": operation_id, "connector": q.op.connector,
                                          "action": q.op.action.value, "error": q.last_error},
                    now=rt.clock(), actor=actor, subject=q.op.employee_id)


def pause(ctx: ServiceContext, connector: str, paused: bool, actor: str) -> list[str]:
    rt = ctx.rt
    if connector not in rt.config.connectors:
        raise ActionError(404, f"no connector {connector!r}")
    current = set(rt.store.get_setting("paused_connectors", []) or [])
    current = current | {connector} if paused else current - {connector}
    rt.store.set_setting("paused_connectors", sorted(current))
    record_pause(rt, connector, paused, rt.clock())
    rt.audit.append("pause" if paused else "resume", {"connector": connector}, now=rt.clock(), actor=actor)
    if not paused:
        ctx.wake()
    return sorted(current)


async def offboard(ctx: ServiceContext, employee_id: str, *, reason: str, at: dt.datetime | None, actor: str,
                   undo: bool, who: Approver | None = None) -> dict[str, Any]:
    if employee_id not in ctx.rt.store.load_states([employee_id]):
        raise ActionError(404, f"no person with employee id {employee_id!r}")
    try:
        result = await offboard_mod.offboard(ctx.rt, employee_id, reason=reason, at=at, actor=actor, undo=undo)
    except GuardHeld as e:
        raise ActionError(409, str(e)) from None
    except JMLError as e:
        raise ActionError(404 if type(e).__name__ == "UnknownEmployee" else 400, str(e)) from None
    held = [p.plan_id for p in getattr(result, "plans", None) or [] if p.plan_id and p.held]
    if held and who is not None:  # whoever caused a held plan cannot approve it themselves
        approvals.record_requester(ctx.rt, held, who)
    ctx.event_wakeup.set()
    ctx.wake(*[p.plan_id for p in getattr(result, "plans", None) or [] if p.plan_id and not p.held])
    return {"employee_id": employee_id, "undo": undo, **summarize(result)}


def summarize(result: Any) -> dict[str, Any]:
    """What offboard() returned, as a small JSON object (never the people's records)."""
    if result is None:
        return {}
    if isinstance(result, dict):
        return {str(k): _plain(v) for k, v in result.items()}
    out: dict[str, Any] = {}
    for name in ("effective_at", "changed", "held", "plan_ids"):
        if hasattr(result, name):
            out[name] = _plain(getattr(result, name))
    reasons = [r for p in getattr(result, "plans", None) or [] if getattr(p, "held", False)
               for r in getattr(p, "reasons", [])]
    if reasons:
        out["held_reasons"] = [str(r) for r in reasons]
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


# RFC 3339 date-time (what the OpenAPI `format: date-time` promises), read leniently: lowercase t/z,
# a space instead of T, a leap second clamped to :59. Python's fromisoformat alone rejects some of these.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


EARLIEST_YEAR, LATEST_YEAR = 1900, 9000  # far enough; beyond, date arithmetic (deadlines) overflows


def parse_at(value: Any) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("`at` must be an ISO 8601 date-time string, e.g. 2026-11-23T17:00:00+01:00")
    m = _RFC3339.match(value.strip())
    if not m:
        raise ValueError(f"`at` is not an ISO 8601 date-time: {value[:64]!r}")
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    tz_s = m.group(8)
    try:
        tz = dt.UTC
        if tz_s and tz_s not in ("Z", "z"):
            sign = 1 if tz_s[0] == "+" else -1
            tz = dt.timezone(sign * dt.timedelta(hours=int(tz_s[1:3]), minutes=int(tz_s[4:6])))
        t = dt.datetime(y, mo, d, hh, mi, min(ss, 59), micro, tzinfo=tz).astimezone(dt.UTC)
        if not EARLIEST_YEAR <= t.year <= LATEST_YEAR:
            raise ValueError("out of range")
        return t
    except (ValueError, OverflowError):
        raise ValueError(f"`at` is not a valid date-time: {value[:64]!r}") from None
