"""Where each person stands in the joiner-mover-leaver cycle. Pure: `now` is passed in.

Implements the lifecycle semantics (README "What it does" and "Offboard now"; pinned by
tests/unit/test_lifecycle.py and tests/integration/test_sticky_overrides.py):
- leaver when HR status is Terminated and the termination date is today, past or empty
  (effective = the earlier of the date at `termination_time` and when jml first saw the
  status); or the termination date has arrived, whatever the status (a future date is a
  scheduled leaver); or missing from `missing_after` consecutive distinct full exports;
  or a sticky override (offboard, IdP deactivation, HR termination webhook);
- never a leaver: leave of absence, a failed read, a quarantined row;
- pre-hire: account inactive from 00:00 local `prehire_days` before the hire date,
  enabled at 00:00 local on the hire date;
- rehire (a newer hire date) lifts a sticky override;
- HR outranks the IdP ("Sticky"): `add_leaver` and `idp_lifts` below decide who may set
  and who may lift an override.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from jml.model import Lifecycle, Override, OverrideKind, Person, PersonState, Phase, Status

# HR's word on employment: only HR lifts these (a rehire or `offboard --undo`).
HR_OVERRIDES = frozenset({OverrideKind.OFFBOARD, OverrideKind.HR_TERMINATION})


@dataclass(frozen=True, slots=True)
class LifecycleRules:
    timezone: ZoneInfo
    prehire_days: int = 3
    delete_after: dt.timedelta | None = dt.timedelta(days=30)
    leave_of_absence: str = "keep"  # keep | suspend
    missing_after: int = 2
    termination_time: dt.time = dt.time(23, 59)


def add_leaver(current: Override | None, new: Override) -> Override:
    """A new leaver decision on top of the current override (sticky: README "Offboard now").

    The earlier effective time wins whoever decided it (an IdP event may deprovision sooner
    than HR scheduled). The override belongs to HR once HR has decided, so only HR can lift
    it: an HR decision takes over an IdP deactivation, and an IdP deactivation joins an HR
    decision without taking it over."""
    if current is None:
        return new
    effective = min(current.effective_at, new.effective_at)
    if (new.kind in HR_OVERRIDES) != (current.kind in HR_OVERRIDES):
        owner = new if new.kind in HR_OVERRIDES else current
    else:  # same authority: the earlier decision stands; a sooner one replaces it
        return current if current.effective_at <= new.effective_at else new
    return owner if owner.effective_at == effective else replace(owner, effective_at=effective)


def idp_lifts(current: Override | None, at: dt.datetime) -> bool:
    """An IdP reactivation at `at` lifts `current` only if it is the IdP's own deactivation,
    and not one decided after the reactivation (deliveries arrive out of order)."""
    return current is not None and current.kind is OverrideKind.IDP_DEACTIVATE and current.effective_at <= at


def local_instant(day: dt.date, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    """A wall-clock time on a local date, as an aware UTC instant (DST-correct)."""
    return dt.datetime.combine(day, at, tzinfo=tz).astimezone(dt.UTC)


def termination_instant(person: Person, rules: LifecycleRules) -> dt.datetime | None:
    if person.termination_date is None:
        return None
    return local_instant(person.termination_date, rules.termination_time, rules.timezone)


def observe(
    previous: PersonState | None,
    person: Person | None,
    now: dt.datetime,
    *,
    counted_missing: bool,
    employee_id: str = "",
) -> PersonState:
    """The state after one export: `person` is its row, or None if absent from it.

    `counted_missing` is true only for a *distinct full* export (a re-read of the same
    file does not make anyone more missing).
    """
    eid = person.employee_id if person else (previous.employee_id if previous else employee_id)
    if person is None:
        if previous is None:
            return PersonState(employee_id=eid, person=None)
        return replace(previous, missing_count=previous.missing_count + (1 if counted_missing else 0))
    terminated = person.status is Status.TERMINATED
    first_seen = None
    if terminated:
        first_seen = previous.first_seen_terminated_at if previous and previous.first_seen_terminated_at else now
    override = previous.override if previous else None
    if override is not None and previous is not None and _rehired(previous.person, person):
        override = None
    return PersonState(
        employee_id=eid,
        person=person,
        first_seen_terminated_at=first_seen,
        missing_count=0,
        override=override,
    )


def _rehired(old: Person | None, new: Person) -> bool:
    """HR recorded a new hire date: a rehire, which lifts a sticky leaver override."""
    # Both dates known: HR filling in a hire date that was blank is a data fix, not a rehire,
    # and must not undo an offboard.
    if old is None or old.hire_date is None or new.hire_date is None:
        return False
    return new.hire_date > old.hire_date


def classify(state: PersonState, now: dt.datetime, rules: LifecycleRules) -> Lifecycle:
    """The person's phase at `now`, why, and when it next changes by time alone."""
    upcoming: list[dt.datetime] = []
    leaver = _leaver(state, now, rules, upcoming)
    if leaver is not None:
        effective, reason = leaver
        return _leaver_phase(effective, reason, now, rules, upcoming)
    person = state.person
    if person is None:
        return Lifecycle(Phase.NOT_YET, reason="not in any export", next_change_at=_first(upcoming))
    missing = state.missing_count > 0
    phase, reason = _employed_phase(person, now, rules, upcoming)
    return Lifecycle(phase, reason=reason, next_change_at=_first(upcoming), missing_reported=missing)


def _leaver(
    state: PersonState, now: dt.datetime, rules: LifecycleRules, upcoming: list[dt.datetime]
) -> tuple[dt.datetime | None, str] | None:
    """(effective time, reason) if the person is a leaver at `now`, else None."""
    ov = state.override
    if ov is not None:
        if ov.effective_at <= now:
            reason = f"{ov.kind.value}: {ov.reason}" if ov.reason else ov.kind.value
            return ov.effective_at, reason
        upcoming.append(ov.effective_at)
    person = state.person
    if person is not None:
        term_at = termination_instant(person, rules)
        today = now.astimezone(rules.timezone).date()
        if person.status is Status.TERMINATED and (
            person.termination_date is None or person.termination_date <= today
        ):
            candidates = [t for t in (term_at, state.first_seen_terminated_at) if t is not None]
            return (min(candidates) if candidates else None), "HR status Terminated"
        if term_at is not None and not _previous_employment(person):
            if term_at <= now:
                return term_at, f"termination date {person.termination_date} reached"
            upcoming.append(term_at)
    if state.missing_count >= rules.missing_after:
        return None, f"missing from {state.missing_count} consecutive exports"
    return None


def _previous_employment(person: Person) -> bool:
    """A termination date before the hire date ends an earlier employment: a rehire whose
    row still carries it is not a leaver by date (it would be deleted at once otherwise)."""
    return (person.termination_date is not None and person.hire_date is not None
            and person.termination_date < person.hire_date)


def _leaver_phase(
    effective: dt.datetime | None, reason: str, now: dt.datetime, rules: LifecycleRules, upcoming: list[dt.datetime]
) -> Lifecycle:
    if effective is not None and rules.delete_after is not None:
        delete_at = effective + rules.delete_after
        if delete_at <= now:
            return Lifecycle(Phase.GONE, effective_termination=effective, reason=reason)
        upcoming.append(delete_at)
    return Lifecycle(Phase.LEAVER, effective_termination=effective, reason=reason, next_change_at=_first(upcoming))


def _employed_phase(
    person: Person, now: dt.datetime, rules: LifecycleRules, upcoming: list[dt.datetime]
) -> tuple[Phase, str]:
    hire = person.hire_date
    if hire is not None:
        hire_at = local_instant(hire, dt.time(0, 0), rules.timezone)
        if now < hire_at:
            start = local_instant(hire - dt.timedelta(days=rules.prehire_days), dt.time(0, 0), rules.timezone)
            if now < start:
                upcoming.append(start)
                return Phase.NOT_YET, f"hire date {hire} beyond the pre-hire window"
            upcoming.append(hire_at)
            return Phase.PREHIRE, f"pre-hire, starts {hire}"
    elif person.status is Status.PREHIRE:
        return Phase.PREHIRE, "pre-hire without a hire date"
    if person.status is Status.LEAVE:
        if rules.leave_of_absence == "suspend":
            return Phase.SUSPENDED, "leave of absence (suspended)"
        return Phase.ACTIVE, "leave of absence (access kept)"
    return Phase.ACTIVE, "active"


def _first(times: list[dt.datetime]) -> dt.datetime | None:
    return min(times) if times else None
