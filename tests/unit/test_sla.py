"""The SLA clock's pure judgements, table-driven with a fixed clock: when it starts, when it
is due, whether an app's read-back counts as deprovisioned, and the breach prediction."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from jml import sla
from jml.config import from_dict
from jml.errors import UsageError
from jml.lifecycle import LifecycleRules, classify, termination_instant
from jml.model import Person, PersonState, Phase, RemoteAccount, Status

BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
NOW = dt.datetime(2026, 11, 23, 16, 3, tzinfo=dt.UTC)


def utc(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=dt.UTC)  # type: ignore[misc]


# ---- start and deadline -------------------------------------------------------------
@pytest.mark.parametrize(("effective", "planned", "start"), [
    # the effective termination wins over when jml planned it
    (utc(2026, 11, 23, 16, 0), NOW, utc(2026, 11, 23, 16, 0)),
    # 17:00 in Berlin (CET, winter) is 16:00Z, whichever zone it is written in
    (dt.datetime(2026, 11, 23, 17, 0, tzinfo=BERLIN), NOW, utc(2026, 11, 23, 16, 0)),
    (dt.datetime(2026, 11, 24, 1, 0, tzinfo=TOKYO), NOW, utc(2026, 11, 23, 16, 0)),
    (dt.datetime(2026, 11, 23, 11, 0, tzinfo=NEW_YORK), NOW, utc(2026, 11, 23, 16, 0)),
    # summer (CEST): 17:00 Berlin is 15:00Z
    (dt.datetime(2026, 7, 1, 17, 0, tzinfo=BERLIN), NOW, utc(2026, 7, 1, 15, 0)),
    # no effective termination (a leaver by absence): the plan time
    (None, NOW, NOW),
    # a naive time is UTC
    (dt.datetime(2026, 11, 23, 16, 0), NOW, utc(2026, 11, 23, 16, 0)),
])
def test_clock_start(effective: dt.datetime | None, planned: dt.datetime, start: dt.datetime) -> None:
    got = sla.clock_start(effective, planned)
    assert got == start
    assert got.utcoffset() == dt.timedelta(0)


def test_termination_at_17_berlin_is_one_instant_through_lifecycle() -> None:
    rules = LifecycleRules(timezone=BERLIN, termination_time=dt.time(17, 0))
    p = Person("E1", Status.ACTIVE, termination_date=dt.date(2026, 11, 23), hire_date=dt.date(2020, 1, 6))
    lc = classify(PersonState("E1", p), NOW, rules)
    assert lc.phase is Phase.LEAVER
    assert lc.effective_termination == termination_instant(p, rules) == utc(2026, 11, 23, 16, 0)
    assert sla.clock_start(lc.effective_termination, NOW) == dt.datetime(2026, 11, 24, 1, 0, tzinfo=TOKYO)


@pytest.mark.parametrize(("sla_cfg", "override", "name", "due"), [
    ("10m", None, "demo", utc(2026, 11, 23, 16, 10)),
    ("10m", "90s", "demo", utc(2026, 11, 23, 16, 1, 30)),
    ("10m", "90s", "other", utc(2026, 11, 23, 16, 10)),  # the override is per connector
    ("1h", None, "other", utc(2026, 11, 23, 17, 0)),
])
def test_deadline_uses_the_connector_override(sla_cfg: str, override: str | None, name: str,
                                              due: dt.datetime) -> None:
    demo: dict[str, object] = {"type": "scim", "url": "http://127.0.0.1:1/", "token_env": "T"}
    if override:
        demo["sla"] = override
    cfg = from_dict({"sla": {"deprovision": sla_cfg}, "connectors": {
        "demo": demo, "other": {"type": "scim", "url": "http://127.0.0.1:1/", "token_env": "T"}}})
    start = dt.datetime(2026, 11, 23, 17, 0, tzinfo=BERLIN)
    assert sla.deadline_for(start, cfg.connector_sla(name)) == due


# ---- verification verdict ------------------------------------------------------------
def acct(active: bool = False, groups: frozenset[str] = frozenset(), invite: bool = False) -> RemoteAccount:
    return RemoteAccount("r1", "ana@acme.example", active, "E1", groups=groups, pending_invitation=invite)


@pytest.mark.parametrize(("remote", "keep_active", "verified", "problems"), [
    (None, False, True, ()),  # gone
    (acct(), False, True, ()),  # inactive, nothing held
    (acct(active=True), False, False, ("account still active",)),
    (acct(groups=frozenset({"group:Engineering"})), False, False, ("still holds group:Engineering",)),
    (acct(groups=frozenset({"Developer@111111111111"})), False, False, ("still holds Developer@111111111111",)),
    (acct(groups=frozenset({"team:core", "group:b"})), False, False, ("still holds group:b, team:core",)),
    (acct(active=True, groups=frozenset({"group:x"})), False, False,
     ("account still active", "still holds group:x")),
    (acct(invite=True), False, False, ("invitation still pending",)),
    # a protected account is never deactivated by jml: only its grants must be gone
    (acct(active=True), True, True, ()),
    (acct(active=True, groups=frozenset({"group:x"})), True, False, ("still holds group:x",)),
])
def test_judge(remote: RemoteAccount | None, keep_active: bool, verified: bool, problems: tuple[str, ...]) -> None:
    v = sla.judge(remote, keep_active=keep_active)
    assert v.verified is verified
    assert v.problems == problems
    assert v.summary


# ---- prediction ----------------------------------------------------------------------
@pytest.mark.parametrize(("ahead", "rate", "latency", "concurrency", "blocked", "done_in"), [
    (1, 1.0, 0.5, 4, False, 1.5),  # its own op at 1/s, plus one latency
    (10, 1.0, 0.5, 4, False, 10.5),
    (600, 1.0, 0.5, 4, False, 600.5),
    (8, None, 2.0, 4, False, 6.0),  # no rate limit: the workers bound it (2 s / 4 workers)
    (8, 100.0, 2.0, 4, False, 6.0),  # a generous rate does not beat the latency
    (0, 1.0, 0.5, 4, False, 0.5),  # nothing queued (awaiting its read-back)
    (3, 3.0, 0.0, 1, False, 1.0),  # Slack's 180/min
])
def test_predict_completion(ahead: int, rate: float | None, latency: float, concurrency: int, blocked: bool,
                            done_in: float) -> None:
    got = sla.predict_completion(NOW, ahead=ahead, rate=rate, latency=latency, concurrency=concurrency,
                                 blocked=blocked)
    assert got is not None
    assert (got - NOW).total_seconds() == pytest.approx(done_in)


def test_blocked_never_completes_and_is_predicted_to_breach() -> None:
    assert sla.predict_completion(NOW, ahead=1, rate=1.0, latency=0.1, blocked=True) is None
    assert sla.will_breach(None, NOW + dt.timedelta(days=1))


@pytest.mark.parametrize(("ahead", "left", "breach"), [
    (100, 600, False),  # 100 ops at 1/s + 0.5 s: done in 100.5 s, 600 s left
    (599, 600, False),  # 599.5 s: just in time
    (600, 600, True),  # 600.5 s: misses by half a second
    (5000, 600, True),  # a queue of 5,000 leavers at 1/s
    (1, 0.2, True),  # nearly due: even its own op is too slow
])
def test_predicted_breach_at_queue_depth(ahead: int, left: float, breach: bool) -> None:
    deadline = NOW + dt.timedelta(seconds=left)
    completion = sla.predict_completion(NOW, ahead=ahead, rate=1.0, latency=0.5, concurrency=4)
    assert sla.will_breach(completion, deadline) is breach


# ---- text and months -----------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.4, "59s"), (60, "1m"), (598, "9m 58s"), (3600 + 5 * 60 + 7, "1h 5m"),
    (3 * 86400 + 4 * 3600, "3d 4h"), (-62, "overdue by 1m 2s"), (float("inf"), "never"),
    (-0.3, "overdue by under 1s"), (-0.0, "0s"), (-0.6, "overdue by 1s"),
])
def test_humanize(seconds: float, text: str) -> None:
    assert sla.humanize(seconds) == text


@pytest.mark.parametrize(("month", "tz", "start", "end"), [
    ("2026-03", BERLIN, utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),  # CET -> CEST on 29 March
    ("2026-12", BERLIN, utc(2026, 11, 30, 23), utc(2026, 12, 31, 23)),  # into the next year
    ("2026-11", dt.UTC, utc(2026, 11, 1), utc(2026, 12, 1)),
])
def test_month_range(month: str, tz: dt.tzinfo, start: dt.datetime, end: dt.datetime) -> None:
    assert sla.month_range(month, tz) == (start, end)


@pytest.mark.parametrize("bad", ["2026", "2026-13", "March", "2026-03-01"])
def test_month_range_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        sla.month_range(bad, dt.UTC)


def test_last_check_round_trip() -> None:
    text = sla._check("replanned", dt.datetime(2026, 11, 23, 17, 3, tzinfo=BERLIN), "still holds group:a|b")
    outcome, at, detail = sla.parse_check(text)
    assert (outcome, at, detail) == ("replanned", utc(2026, 11, 23, 16, 3), "still holds group:a|b")
    assert sla.parse_check(None) == ("", None, "")
