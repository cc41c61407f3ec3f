"""Lifecycle: given what jml remembers and an HR row, where does the person stand at `now`?

Tables follow DESIGN "Contract: lifecycle semantics". Default rules: Europe/Berlin,
termination_time 17:00 (16:00Z in winter, 15:00Z in summer), prehire_days 3,
delete_after 30 days, missing_after 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jml.lifecycle import LifecycleRules, classify, local_instant, observe, termination_instant
from jml.model import Override, OverrideKind, Person, PersonState, Phase, Status

BERLIN = ZoneInfo("Europe/Berlin")
RULES = LifecycleRules(timezone=BERLIN, termination_time=dt.time(17, 0), prehire_days=3,
                       delete_after=dt.timedelta(days=30), missing_after=2)
# Monday 2026-11-23, 13:00 in Berlin (CET, UTC+1).
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def d(iso: str) -> dt.date:
    return dt.date.fromisoformat(iso)


def person(status: Status = Status.ACTIVE, hire: str | None = "2020-01-06", term: str | None = None,
           **kw: Any) -> Person:
    return Person("E1", status, first_name="Ana", last_name="Smith", work_email="ana@acme.example",
                  hire_date=d(hire) if hire else None, termination_date=d(term) if term else None, **kw)


def state(p: Person | None = None, *, first_seen: dt.datetime | None = None, missing: int = 0,
          override: Override | None = None) -> PersonState:
    return PersonState("E1", p, first_seen_terminated_at=first_seen, missing_count=missing, override=override)


def offboard(at: dt.datetime, reason: str = "") -> Override:
    return Override(OverrideKind.OFFBOARD, at, reason=reason, actor="hr@acme.example")


# (id, state, now, rules overrides, expected phase, effective_termination, next_change_at, missing_reported)
CLASSIFY_CASES: list[tuple[str, PersonState, dt.datetime, dict[str, Any], Phase,
                           dt.datetime | None, dt.datetime | None, bool]] = [
    ("joiner-active", state(person()), NOW, {}, Phase.ACTIVE, None, None, False),
    ("mover-attributes-changed-still-active",
     state(person(department="Sales", job_title="AE", location="Paris")), NOW, {}, Phase.ACTIVE, None, None, False),
    ("no-hire-date-active", state(person(hire=None)), NOW, {}, Phase.ACTIVE, None, None, False),
    # Status Terminated wins when the date is today, past or empty; effective = the earlier
    # of the date at termination_time and when jml first saw the status.
    ("terminated-today-seen-before-17:00",
     state(person(Status.TERMINATED, term="2026-11-23"), first_seen=utc(2026, 11, 23, 11)), NOW, {},
     Phase.LEAVER, utc(2026, 11, 23, 11), utc(2026, 12, 23, 11), False),
    ("terminated-today-seen-after-17:00",
     state(person(Status.TERMINATED, term="2026-11-23"), first_seen=utc(2026, 11, 23, 18)), utc(2026, 11, 23, 19), {},
     Phase.LEAVER, utc(2026, 11, 23, 16), utc(2026, 12, 23, 16), False),
    ("terminated-past-date",
     state(person(Status.TERMINATED, term="2026-11-10"), first_seen=NOW), NOW, {},
     Phase.LEAVER, utc(2026, 11, 10, 16), utc(2026, 12, 10, 16), False),
    ("terminated-past-date-in-summer-time",  # 17:00 CEST is 15:00Z
     state(person(Status.TERMINATED, term="2026-10-01"), first_seen=utc(2026, 10, 5)), utc(2026, 10, 5), {},
     Phase.LEAVER, utc(2026, 10, 1, 15), utc(2026, 10, 31, 15), False),
    ("terminated-empty-date",
     state(person(Status.TERMINATED), first_seen=utc(2026, 11, 23, 10)), NOW, {},
     Phase.LEAVER, utc(2026, 11, 23, 10), utc(2026, 12, 23, 10), False),
    ("terminated-future-date-is-scheduled",
     state(person(Status.TERMINATED, term="2026-11-30"), first_seen=NOW), NOW, {},
     Phase.ACTIVE, None, utc(2026, 11, 30, 16), False),
    ("active-termination-date-later-today",
     state(person(term="2026-11-23")), NOW, {}, Phase.ACTIVE, None, utc(2026, 11, 23, 16), False),
    ("active-termination-date-reached-at-termination-time",
     state(person(term="2026-11-23")), utc(2026, 11, 23, 16), {},
     Phase.LEAVER, utc(2026, 11, 23, 16), utc(2026, 12, 23, 16), False),
    ("active-termination-date-past",
     state(person(term="2026-11-22")), NOW, {}, Phase.LEAVER, utc(2026, 11, 22, 16), utc(2026, 12, 22, 16), False),
    ("leave-termination-date-past",
     state(person(Status.LEAVE, term="2026-11-22")), NOW, {}, Phase.LEAVER, utc(2026, 11, 22, 16),
     utc(2026, 12, 22, 16), False),
    ("gone-after-delete-after",
     state(person(Status.TERMINATED, term="2026-10-01"), first_seen=utc(2026, 10, 2)), NOW, {},
     Phase.GONE, utc(2026, 10, 1, 15), None, False),
    ("gone-exactly-at-delete-after",
     state(person(Status.TERMINATED, term="2026-10-24"), first_seen=utc(2026, 10, 25)), utc(2026, 11, 23, 15), {},
     Phase.GONE, utc(2026, 10, 24, 15), None, False),
    ("leaver-one-second-before-delete-after",
     state(person(Status.TERMINATED, term="2026-10-24"), first_seen=utc(2026, 10, 25)),
     utc(2026, 11, 23, 14, 59, 59), {}, Phase.LEAVER, utc(2026, 10, 24, 15), utc(2026, 11, 23, 15), False),
    ("no-delete-after-stays-leaver",
     state(person(Status.TERMINATED, term="2020-01-01"), first_seen=utc(2020, 1, 2)), NOW, {"delete_after": None},
     Phase.LEAVER, utc(2020, 1, 1, 16), None, False),
    # Pre-hire: NOT_YET before (hire - prehire_days) 00:00 local, PREHIRE in the window,
    # ACTIVE from 00:00 local on the hire date. 00:00 Berlin in November is 23:00Z the day before.
    ("not-yet-before-prehire-window",
     state(person(Status.PREHIRE, hire="2026-11-27")), NOW, {}, Phase.NOT_YET, None, utc(2026, 11, 23, 23), False),
    ("not-yet-one-second-before-window",
     state(person(Status.PREHIRE, hire="2026-11-26")), utc(2026, 11, 22, 22, 59, 59), {},
     Phase.NOT_YET, None, utc(2026, 11, 22, 23), False),
    ("prehire-window-opens-at-local-midnight",
     state(person(Status.PREHIRE, hire="2026-11-26")), utc(2026, 11, 22, 23), {},
     Phase.PREHIRE, None, utc(2026, 11, 25, 23), False),
    ("prehire-in-window",
     state(person(Status.PREHIRE, hire="2026-11-26")), NOW, {}, Phase.PREHIRE, None, utc(2026, 11, 25, 23), False),
    ("prehire-status-active-future-hire",
     state(person(Status.ACTIVE, hire="2026-11-25")), NOW, {}, Phase.PREHIRE, None, utc(2026, 11, 24, 23), False),
    ("prehire-one-second-before-hire-day",
     state(person(Status.PREHIRE, hire="2026-11-26")), utc(2026, 11, 25, 22, 59, 59), {},
     Phase.PREHIRE, None, utc(2026, 11, 25, 23), False),
    ("active-from-local-midnight-of-hire-date",
     state(person(Status.PREHIRE, hire="2026-11-26")), utc(2026, 11, 25, 23), {}, Phase.ACTIVE, None, None, False),
    ("prehire-status-without-hire-date",
     state(person(Status.PREHIRE, hire=None)), NOW, {}, Phase.PREHIRE, None, None, False),
    ("prehire-days-zero",
     state(person(Status.PREHIRE, hire="2026-11-24")), NOW, {"prehire_days": 0},
     Phase.NOT_YET, None, utc(2026, 11, 23, 23), False),
    ("prehire-with-scheduled-offboard-next-change-is-earliest",
     state(person(Status.PREHIRE, hire="2026-11-26", term="2027-01-31"), override=offboard(utc(2026, 11, 24, 10))),
     NOW, {}, Phase.PREHIRE, None, utc(2026, 11, 24, 10), False),
    # Leave of absence is never a leaver.
    ("leave-of-absence-keep", state(person(Status.LEAVE)), NOW, {}, Phase.ACTIVE, None, None, False),
    ("leave-of-absence-suspend", state(person(Status.LEAVE)), NOW, {"leave_of_absence": "suspend"},
     Phase.SUSPENDED, None, None, False),
    # Missing from distinct full exports.
    ("missing-once-is-reported-not-leaver", state(person(), missing=1), NOW, {}, Phase.ACTIVE, None, None, True),
    ("missing-at-missing-after-is-leaver", state(person(), missing=2), NOW, {}, Phase.LEAVER, None, None, False),
    ("missing-beyond-missing-after-is-leaver", state(person(), missing=5), NOW, {}, Phase.LEAVER, None, None, False),
    ("missing-after-three-not-reached", state(person(), missing=2), NOW, {"missing_after": 3},
     Phase.ACTIVE, None, None, True),
    # Sticky overrides.
    ("override-past-is-leaver", state(person(), override=offboard(utc(2026, 11, 23, 9), "fraud")), NOW, {},
     Phase.LEAVER, utc(2026, 11, 23, 9), utc(2026, 12, 23, 9), False),
    ("override-now-is-leaver", state(person(), override=offboard(NOW)), NOW, {},
     Phase.LEAVER, NOW, utc(2026, 12, 23, 12), False),
    ("override-future-is-scheduled", state(person(), override=offboard(utc(2026, 11, 27, 17))), NOW, {},
     Phase.ACTIVE, None, utc(2026, 11, 27, 17), False),
    ("idp-deactivate-override-past-delete-after",
     state(person(), override=Override(OverrideKind.IDP_DEACTIVATE, utc(2026, 10, 1))),
     NOW, {}, Phase.GONE, utc(2026, 10, 1), None, False),
    ("never-in-an-export", state(None), NOW, {}, Phase.NOT_YET, None, None, False),
    ("override-without-export-row", state(None, override=offboard(utc(2026, 11, 22))), NOW, {},
     Phase.LEAVER, utc(2026, 11, 22), utc(2026, 12, 22), False),
    # Rehire whose row still carries the previous employment's termination date.
    ("rehire-with-stale-termination-date-is-active",
     state(person(Status.ACTIVE, hire="2026-11-02", term="2026-06-30")), NOW, {}, Phase.ACTIVE, None, None, False),
    ("rehire-prehire-with-stale-termination-date",
     state(person(Status.PREHIRE, hire="2026-11-25", term="2026-06-30")), NOW, {},
     Phase.PREHIRE, None, utc(2026, 11, 24, 23), False),
]


@pytest.mark.parametrize(
    ("st", "now", "rules", "phase", "effective", "next_change", "missing_reported"),
    [pytest.param(*c[1:], id=c[0]) for c in CLASSIFY_CASES],
)
def test_classify(st: PersonState, now: dt.datetime, rules: dict[str, Any], phase: Phase,
                  effective: dt.datetime | None, next_change: dt.datetime | None, missing_reported: bool) -> None:
    lc = classify(st, now, replace(RULES, **rules))
    assert (lc.phase, lc.effective_termination, lc.next_change_at, lc.missing_reported) == (
        phase, effective, next_change, missing_reported)
    if phase in (Phase.LEAVER, Phase.GONE):
        assert lc.reason


@pytest.mark.parametrize(
    ("st", "needle"),
    [
        pytest.param(state(person(Status.TERMINATED), first_seen=NOW), "Terminated", id="status"),
        pytest.param(state(person(term="2026-11-01")), "2026-11-01", id="date-reached"),
        pytest.param(state(person(), missing=2), "missing from 2", id="missing"),
        pytest.param(state(person(), override=offboard(NOW, "fraud")), "offboard: fraud", id="offboard-reason"),
        pytest.param(state(person(), override=Override(OverrideKind.HR_TERMINATION, NOW)), "hr_termination",
                     id="hr-webhook"),
    ],
)
def test_leaver_reason_says_why(st: PersonState, needle: str) -> None:
    assert needle in classify(st, NOW, RULES).reason


# --- time zones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "at", "expected"),
    [
        pytest.param("Europe/Berlin", "2026-11-23", dt.time(17, 0), utc(2026, 11, 23, 16), id="berlin-17:00-winter"),
        pytest.param("Europe/Berlin", "2026-07-01", dt.time(17, 0), utc(2026, 7, 1, 15), id="berlin-17:00-summer"),
        pytest.param("Australia/Melbourne", "2025-05-14", dt.time(23, 59), utc(2025, 5, 14, 13, 59),
                     id="melbourne-23:59"),
        pytest.param("America/Los_Angeles", "2025-05-14", dt.time(23, 59), utc(2025, 5, 15, 6, 59),
                     id="los-angeles-23:59"),
        pytest.param("Australia/Melbourne", "2025-05-15", dt.time(0, 0), utc(2025, 5, 14, 14),
                     id="melbourne-end-of-day-as-next-midnight"),
        pytest.param("America/Los_Angeles", "2025-05-15", dt.time(0, 0), utc(2025, 5, 15, 7),
                     id="los-angeles-end-of-day-as-next-midnight"),
        pytest.param("Europe/Berlin", "2026-03-29", dt.time(0, 0), utc(2026, 3, 28, 23), id="berlin-dst-switch-day"),
        pytest.param("Europe/Berlin", "2026-03-30", dt.time(0, 0), utc(2026, 3, 29, 22), id="berlin-after-dst-switch"),
    ],
)
def test_local_instant(tz: str, day: str, at: dt.time, expected: dt.datetime) -> None:
    got = local_instant(d(day), at, ZoneInfo(tz))
    assert got == expected
    assert got.utcoffset() == dt.timedelta(0)


def test_termination_instant_berlin_17_00_is_16_00z() -> None:
    assert termination_instant(person(term="2026-11-23"), RULES) == utc(2026, 11, 23, 16)
    assert termination_instant(person(), RULES) is None


@pytest.mark.parametrize(
    ("tz", "phase", "next_change"),
    [
        pytest.param("Australia/Melbourne", Phase.LEAVER, utc(2025, 6, 13, 13, 59), id="melbourne-already-left"),
        pytest.param("America/Los_Angeles", Phase.ACTIVE, utc(2025, 5, 15, 6, 59), id="los-angeles-not-yet"),
    ],
)
def test_same_termination_date_in_two_zones(tz: str, phase: Phase, next_change: dt.datetime) -> None:
    """One instant, the same HR date: Melbourne's day is over, Los Angeles' is not (17 h apart)."""
    rules = LifecycleRules(timezone=ZoneInfo(tz), termination_time=dt.time(23, 59))
    lc = classify(state(person(term="2025-05-14")), utc(2025, 5, 14, 14), rules)
    assert (lc.phase, lc.next_change_at) == (phase, next_change)


def test_terminated_status_today_is_judged_in_local_date() -> None:
    """At 23:30Z on the 22nd it is already the 23rd in Melbourne: a Terminated row dated the
    23rd is due there (status wins) but still in the future in Los Angeles."""
    now = utc(2026, 11, 22, 23, 30)
    st = state(person(Status.TERMINATED, term="2026-11-23"), first_seen=now)
    mel = classify(st, now, LifecycleRules(timezone=ZoneInfo("Australia/Melbourne")))
    la = classify(st, now, LifecycleRules(timezone=ZoneInfo("America/Los_Angeles")))
    assert (mel.phase, mel.effective_termination) == (Phase.LEAVER, now)
    assert (la.phase, la.next_change_at) == (Phase.ACTIVE, utc(2026, 11, 24, 7, 59))


# --- observe: what jml remembers between exports ---------------------------------------------


def test_observe_first_sight_of_terminated_records_now_and_keeps_it() -> None:
    s1 = observe(None, person(), NOW, counted_missing=False)
    assert s1.first_seen_terminated_at is None
    s2 = observe(s1, person(Status.TERMINATED), NOW, counted_missing=False)
    assert s2.first_seen_terminated_at == NOW
    later = NOW + dt.timedelta(hours=5)
    s3 = observe(s2, person(Status.TERMINATED), later, counted_missing=False)
    assert s3.first_seen_terminated_at == NOW
    s4 = observe(s3, person(Status.ACTIVE), later, counted_missing=False)
    assert s4.first_seen_terminated_at is None


@pytest.mark.parametrize(
    ("missing_before", "counted", "expected"),
    [
        pytest.param(0, True, 1, id="distinct-full-export-counts"),
        pytest.param(1, True, 2, id="second-distinct-export"),
        pytest.param(1, False, 1, id="re-read-or-quarantined-row-does-not-count"),
        pytest.param(0, False, 0, id="quarantined-never-missing"),
    ],
)
def test_observe_absent(missing_before: int, counted: bool, expected: int) -> None:
    prev = state(person(), missing=missing_before)
    s = observe(prev, None, NOW, counted_missing=counted)
    assert s.missing_count == expected
    assert s.person == prev.person  # the last accepted row is kept


def test_quarantined_row_is_not_a_leaver() -> None:
    """The sync layer passes a quarantined person as absent but not counted: never a leaver."""
    s = state(person(), missing=1)
    for _ in range(5):
        s = observe(s, None, NOW, counted_missing=False)
    assert s.missing_count == 1
    assert classify(s, NOW, RULES).phase is Phase.ACTIVE


def test_missing_leaver_needs_two_distinct_exports_and_returning_resets() -> None:
    s = observe(None, person(), NOW, counted_missing=False)
    s = observe(s, None, NOW, counted_missing=True)
    assert classify(s, NOW, RULES).missing_reported
    s = observe(s, None, NOW, counted_missing=True)
    assert classify(s, NOW, RULES).phase is Phase.LEAVER
    s = observe(s, person(), NOW, counted_missing=False)
    assert s.missing_count == 0
    assert classify(s, NOW, RULES).phase is Phase.ACTIVE


def test_observe_absent_unknown_person_takes_given_id() -> None:
    s = observe(None, None, NOW, counted_missing=True, employee_id="E9")
    assert (s.employee_id, s.person, s.missing_count) == ("E9", None, 0)


@pytest.mark.parametrize(
    ("old_hire", "new_hire", "phase"),
    [
        pytest.param("2020-01-06", "2026-11-02", Phase.ACTIVE, id="newer-hire-date-lifts-override"),
        pytest.param("2020-01-06", "2020-01-06", Phase.LEAVER, id="same-hire-date-keeps-override"),
        pytest.param("2020-01-06", "2019-01-01", Phase.LEAVER, id="older-hire-date-keeps-override"),
        pytest.param("2020-01-06", None, Phase.LEAVER, id="hire-date-removed-keeps-override"),
        # A hire date filled in where HR had none is a data fix, not a rehire: the offboard holds.
        pytest.param(None, "2026-11-02", Phase.LEAVER, id="first-hire-date-keeps-override"),
    ],
)
def test_rehire_and_sticky_override(old_hire: str | None, new_hire: str | None, phase: Phase) -> None:
    prev = state(person(hire=old_hire), override=offboard(utc(2026, 10, 30)))
    assert classify(prev, NOW, RULES).phase is Phase.LEAVER
    s = observe(prev, person(Status.ACTIVE, hire=new_hire), NOW, counted_missing=False)
    assert classify(s, NOW, RULES).phase is phase
    assert (s.override is None) == (phase is Phase.ACTIVE)


def test_unchanged_active_export_does_not_undo_offboard() -> None:
    s = state(person(), override=offboard(utc(2026, 11, 20)))
    for _ in range(3):
        s = observe(s, person(), NOW, counted_missing=False)
    lc = classify(s, NOW, RULES)
    assert (lc.phase, lc.effective_termination) == (Phase.LEAVER, utc(2026, 11, 20))


def test_rehire_after_termination_by_status() -> None:
    s = observe(None, person(Status.TERMINATED, term="2026-06-30"), utc(2026, 7, 1), counted_missing=False)
    assert classify(s, utc(2026, 7, 1), RULES).phase is Phase.LEAVER
    s = observe(s, person(Status.ACTIVE, hire="2026-11-02"), NOW, counted_missing=False)
    assert s.first_seen_terminated_at is None
    assert classify(s, NOW, RULES).phase is Phase.ACTIVE
