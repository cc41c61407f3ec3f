"""The SLA's judgements, pure: when a clock starts and is due, whether a read-back shows a
deprovision done, when a queue will get to a leaver. No I/O, no clock reads (README's
functional core); jml/sla.py is the shell that reads and writes the store.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from jml.errors import UsageError
from jml.model import RemoteAccount


def _aware(t: dt.datetime) -> dt.datetime:
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def clock_start(effective: dt.datetime | None, planned_at: dt.datetime) -> dt.datetime:
    """When the clock starts: the effective termination if known (a leaver by absence has
    none), else when the leaver was planned. Always an aware UTC instant."""
    return _aware(effective if effective is not None else planned_at)


def deadline_for(start: dt.datetime, sla: dt.timedelta) -> dt.datetime:
    return _aware(start) + sla


@dataclass(frozen=True, slots=True)
class Verdict:
    verified: bool
    problems: tuple[str, ...] = ()
    note: str = ""

    @property
    def summary(self) -> str:
        return self.note if self.verified else "; ".join(self.problems)


def judge(remote: RemoteAccount | None, *, keep_active: bool = False) -> Verdict:
    """Is the account deprovisioned, as the app reports it? Gone counts; otherwise it must be
    inactive (unless protected: jml never deactivates those), hold no group, team or
    assignment, and have no pending invitation."""
    if remote is None:
        return Verdict(True, note="account gone")
    problems: list[str] = []
    if remote.active and not keep_active:
        problems.append("account still active")
    if remote.pending_invitation:
        problems.append("invitation still pending")
    if remote.groups:
        problems.append("still holds " + ", ".join(sorted(remote.groups)))
    if problems:
        return Verdict(False, tuple(problems))
    return Verdict(True, note="active (protected), no grants" if remote.active else "inactive, no grants")


def seconds_per_op(rate: float | None, latency: float, concurrency: int) -> float:
    """How long one more operation adds to a connector's queue: the write rate bounds it, and
    so does the latency spread over the workers."""
    per_op = max(latency, 0.0) / max(1, concurrency)
    if rate is not None and rate > 0:
        per_op = max(per_op, 1.0 / rate)
    return per_op


def predict_completion(now: dt.datetime, *, ahead: int, rate: float | None, latency: float,
                       concurrency: int = 1, blocked: bool = False) -> dt.datetime | None:
    """When the leaver's operations will be done: `ahead` operations (its own included) at
    the connector's pace, plus one operation's latency. None: never, by itself (held plan,
    paused connector)."""
    if blocked:
        return None
    return now + dt.timedelta(seconds=max(0, ahead) * seconds_per_op(rate, latency, concurrency) + max(latency, 0.0))


def will_breach(completion: dt.datetime | None, deadline: dt.datetime) -> bool:
    return completion is None or completion > deadline


def humanize(seconds: float) -> str:
    """'9m 58s', '2h 5m', '3d 4h'; negative: 'overdue by 1m 2s'."""
    if math.isinf(seconds):
        return "never"
    s = round(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == 2:
            break
    text = " ".join(parts)
    if seconds < 0:
        # Past the deadline by less than half a second is still past it (`jml status` read
        # "MISSED, 0s" when it ran right after a fast dead letter).
        return f"overdue by {text}" if text != "0s" else "overdue by under 1s"
    return text


def month_range(month: str, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """'2026-03' -> [first instant, first instant of the next month) in `tz`, as UTC."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        start = dt.datetime(year, mon, 1, tzinfo=tz)
    except ValueError:
        raise UsageError(f"--month: not a month (YYYY-MM): {month!r}") from None
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


# last_check holds "outcome|ISO time|detail" (outcomes: started, verified, not_deprovisioned,
# replanned, read_error, cancelled).
def _check(outcome: str, now: dt.datetime, detail: str = "") -> str:
    return f"{outcome}|{_aware(now).isoformat()}|{detail}"[:1000]


def parse_check(value: str | None) -> tuple[str, dt.datetime | None, str]:
    if not value:
        return "", None, ""
    outcome, _, rest = value.partition("|")
    when, _, detail = rest.partition("|")
    try:
        at: dt.datetime | None = _aware(dt.datetime.fromisoformat(when))
    except ValueError:
        at = None
    return outcome, at, detail


