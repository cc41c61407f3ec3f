"""Times and dates read from people (the CLI's --at/--since, HR records): one place for
their parsing and for the range jml accepts.

A date in a person record must stay far enough from datetime's limits that every
local-time and SLA sum stays in range: 9999-12-31 at 23:59 in Los Angeles is in year
10000 in UTC, an OverflowError that once stopped a whole sync (issue 14, and its export twin).
"""

from __future__ import annotations

import datetime as dt

from jml.errors import UsageError

__all__ = ["EARLIEST_DATE", "LATEST_DATE", "date_out_of_range", "parse_time"]

EARLIEST_DATE, LATEST_DATE = dt.date(1900, 1, 1), dt.date(2199, 12, 31)


def date_out_of_range(day: dt.date) -> str | None:
    """Why `day` cannot be a hire or termination date (None: it can)."""
    if EARLIEST_DATE <= day <= LATEST_DATE:
        return None
    return f"out of range: {day.isoformat()} (expected {EARLIEST_DATE.year} to {LATEST_DATE.year})"


def parse_time(value: str, what: str, tz: dt.tzinfo = dt.UTC, *, date_at: dt.time | None = None) -> dt.datetime:
    """A command-line ISO 8601 time; without an offset it is in `tz` (HR's zone where the
    caller passes it). A date alone is `date_at` (e.g. lifecycle.termination_time) in `tz`
    when given, else its start: `--at 2026-12-31` is HR's last day, not 00:00 UTC (issue 17).
    UsageError (exit 2) names the option otherwise."""
    value = value.strip()
    try:
        if len(value) == 10 and date_at is not None:
            return dt.datetime.combine(dt.date.fromisoformat(value), date_at, tzinfo=tz)
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{what}: not an ISO 8601 time or date: {value!r} (e.g. 2026-12-31 or "
                         "2026-12-31T17:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=tz)
