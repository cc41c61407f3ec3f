"""The store on a real database: SQLite and (with JML_TEST_DATABASE_URL) PostgreSQL.

Every test gets an empty database from the `db_url` fixture, so these also prove that
`alembic upgrade head` builds the schema from nothing on both."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import event, inspect, select

from jml.model import (
    AccountRecord,
    Action,
    Lifecycle,
    Operation,
    Override,
    OverrideKind,
    Person,
    PersonState,
    Phase,
    Priority,
    Status,
)
from jml.store.audit import AuditLog
from jml.store.db import make_engine
from jml.store.outbox import Outbox
from jml.store.repo import PersonSave, Store
from jml.store.tables import AuditRow, metadata

T0 = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def _person(eid: str, **kw: object) -> Person:
    base: dict[str, object] = {"first_name": "Ana", "last_name": "Smith", "work_email": f"{eid.lower()}@example.com",
                               "department": "Engineering", "hire_date": dt.date(2024, 1, 2)}
    base.update(kw)
    return Person(eid, kw.pop("status", Status.ACTIVE), **{k: v for k, v in base.items() if k != "status"})  # type: ignore[arg-type]


def _create(eid: str, connector: str = "demo") -> Operation:
    return Operation(connector, Action.CREATE, eid, {"username": f"{eid.lower()}@example.com", "active": True,
                                                      "attributes": {"given_name": "Ana", "department": "Eng"}})


def _add(eid: str, group: str, rule: str = "everyone", connector: str = "demo",
         priority: Priority = Priority.NORMAL) -> Operation:
    return Operation(connector, Action.ADD_MEMBER, eid, {"username": f"{eid.lower()}@example.com",
                                                          "group": f"group:{group}", "rule": rule}, priority)


def _deactivate(eid: str, connector: str = "demo") -> Operation:
    return Operation(connector, Action.DEACTIVATE, eid, {"username": f"{eid.lower()}@example.com"}, Priority.LEAVER)


# ---- schema -----------------------------------------------------------------------

def test_migrations_from_empty_create_every_table(db_url: str) -> None:
    engine = make_engine(db_url)
    assert inspect(engine).get_table_names() == []
    store = Store(db_url, engine=engine)
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables
    with engine.connect() as conn:
        versions = [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    assert len(versions) == 1
    # Opening again (a second process) is a no-op, not an error.
    Store(db_url, engine=engine)
    with engine.connect() as conn:
        assert [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")] == versions
    store.close()


# ---- people -----------------------------------------------------------------------

def test_people_roundtrip_with_override_and_aware_times(db_url: str) -> None:
    store = Store(db_url)
    seen_terminated = dt.datetime(2026, 11, 20, 17, 30, tzinfo=BERLIN)  # not UTC on the way in
    override_at = dt.datetime(2026, 11, 21, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    ana = _person("E1", preferred_name="Annie", termination_date=dt.date(2026, 11, 20), status=Status.TERMINATED,
                  extra={"badge": "B-7"})
    bob = _person("E2", first_name="Bob", work_email="bob@example.com")
    states = [
        PersonSave(PersonState("E1", ana, first_seen_terminated_at=seen_terminated,
                               override=Override(OverrideKind.OFFBOARD, override_at, "security incident", "cli")),
                   "hash-1", Lifecycle(Phase.LEAVER, effective_termination=seen_terminated, reason="offboard")),
        PersonSave(PersonState("E2", bob, missing_count=1), "hash-2",
                   Lifecycle(Phase.ACTIVE, next_change_at=dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.UTC))),
    ]
    store.save_people(states, T0)
    loaded = store.load_states()
    assert loaded["E1"].person == ana
    assert loaded["E2"].person == bob
    assert loaded["E2"].missing_count == 1
    e1 = loaded["E1"]
    assert e1.first_seen_terminated_at == seen_terminated  # same instant, tz-aware
    assert e1.first_seen_terminated_at is not None and e1.first_seen_terminated_at.tzinfo is not None
    assert e1.override is not None
    assert (e1.override.kind, e1.override.reason, e1.override.actor) == (OverrideKind.OFFBOARD, "security incident",
                                                                         "cli")
    assert e1.override.effective_at == override_at and e1.override.effective_at.tzinfo is not None

    index = store.person_index()
    assert index["E1"].row_hash == "hash-1" and index["E1"].phase == "leaver" and index["E1"].has_override
    assert index["E2"].next_change_at == dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.UTC)
    assert index["E2"].missing_count == 1 and not index["E2"].has_override
    assert store.due_people(dt.datetime(2026, 12, 1, 22, 59, tzinfo=dt.UTC)) == []
    assert store.due_people(dt.datetime(2026, 12, 2, tzinfo=BERLIN)) == ["E2"]

    # Upsert: a second save replaces, it does not duplicate; lifting the override sticks.
    moved = _person("E2", first_name="Bob", work_email="bob@example.com", department="Sales")
    store.save_people([PersonSave(PersonState("E2", moved), "hash-3", Lifecycle(Phase.ACTIVE))], T0)
    store.set_override("E1", None, T0)
    loaded = store.load_states(["E1", "E2"])
    assert loaded["E2"].person is not None and loaded["E2"].person.department == "Sales"
    assert loaded["E2"].missing_count == 0
    assert loaded["E1"].override is None
    assert len(store.load_states()) == 2

    # An offboard for someone never seen in an export creates a bare row.
    store.set_override("E9", Override(OverrideKind.HR_TERMINATION, T0, "webhook"), T0)
    e9 = store.load_states(["E9"])["E9"]
    assert e9.person is None and e9.override is not None and e9.override.kind is OverrideKind.HR_TERMINATION
    store.close()


# ---- accounts and grants ------------------------------------------------------------

def test_accounts_and_grants_via_record_success(db_url: str) -> None:
    store = Store(db_url)
    store.record_success(Operation("demo", Action.CREATE_GROUP, "", {"group": "group:All Staff"}), "g-1", T0)
    store.record_success(_create("E1"), "remote-1", T0)
    t1 = T0 + dt.timedelta(minutes=5)
    store.record_success(_add("E1", "All Staff"), None, t1)
    store.record_success(_add("E1", "Engineering", rule="engineering"), None, t1)
    accounts = store.load_accounts(["E1"])
    rec = accounts[("demo", "E1")]
    assert rec == AccountRecord("demo", "E1", "e1@example.com", True, {"given_name": "Ana", "department": "Eng"},
                                frozenset({"group:All Staff", "group:Engineering"}), "remote-1", False)
    details = {(g["name"], g["rule"]): g["since"] for g in store.grant_details(["E1"])}
    assert details == {("group:All Staff", "everyone"): t1, ("group:Engineering", "engineering"): t1}
    assert store.known_groups() == {"demo": frozenset({"group:All Staff", "group:Engineering"})}
    assert store.managed_counts() == {"demo": 1}

    # A mover: an attribute update and a removed grant; a leaver: deactivated, then deleted.
    moved = {"username": "e1@example.com", "attributes": {"department": "Sales", "given_name": ""}}
    store.record_success(Operation("demo", Action.UPDATE, "E1", moved), "remote-1", t1)
    store.record_success(Operation("demo", Action.REMOVE_MEMBER, "E1", {"group": "group:Engineering"}), None, t1)
    rec = store.load_accounts(["E1"])[("demo", "E1")]
    assert rec.attributes == {"department": "Sales"} and rec.grants == frozenset({"group:All Staff"})
    store.record_success(_deactivate("E1"), None, t1)
    assert not store.load_accounts()[("demo", "E1")].active
    store.record_success(Operation("demo", Action.DELETE, "E1", {"username": "e1@example.com"}, Priority.LEAVER),
                         None, t1)
    rec = store.load_accounts()[("demo", "E1")]
    assert rec.deleted and not rec.active and rec.grants == frozenset()
    assert store.grant_details(["E1"]) == []
    assert store.managed_counts() == {}

    # Conversion: the successor takes the account over, grants included.
    store.record_success(_create("E2"), "remote-2", t1)
    store.record_success(_add("E2", "All Staff"), None, t1)
    store.record_success(Operation("demo", Action.UPDATE, "E3", {
        "username": "e2@example.com", "all_attributes": {"given_name": "Ana"}, "attributes": {"given_name": "Ana"},
        "external_id": "E3", "previous_employee_id": "E2"}), "remote-2", t1)
    accounts = store.load_accounts()
    assert ("demo", "E2") not in accounts
    assert accounts[("demo", "E3")].remote_id == "remote-2"
    assert accounts[("demo", "E3")].grants == frozenset({"group:All Staff"})
    store.close()


def test_accounts_read_on_the_cursor_equal_what_sqlalchemy_reads(db_url: str) -> None:
    """The engine's account reads (Store._accounts_of, on the driver's cursor) give what the
    SQLAlchemy read of every account gives: JSON attributes, flags, grants, ids, on both
    databases and past the 900-parameter chunk."""
    store = Store(db_url)
    results: list[tuple[Operation, str | None, dt.datetime]] = []
    for i in range(950):
        eid = f"E{i:04d}"
        connector = "demo" if i % 3 else "other"
        results.append((Operation(connector, Action.CREATE, eid, {
            "username": f"{eid.lower()}@example.com", "active": True,
            "attributes": {"given_name": "Émile \u2028 \"q\"", "title": f"T{i % 7}"} if i % 5 else {}}),
            None if i % 11 == 0 else f"r-{i}", T0))
        if i % 4 == 0:
            results.append((_add(eid, f"G{i % 3}", connector=connector), None, T0))
        if i % 9 == 0:
            results.append((_deactivate(eid, connector), None, T0))
    store.record_results(results)
    store.record_success(Operation("demo", Action.DELETE, "E0001", {"username": "e0001@example.com"},
                                   Priority.LEAVER), None, T0)
    everyone = store.load_accounts()
    assert len(everyone) == 950 and everyone[("demo", "E0001")].deleted
    assert store.load_accounts([f"E{i:04d}" for i in range(950)] + ["NOBODY"]) == everyone
    assert store.load_accounts(["E0003"]) == {("other", "E0003"): everyone[("other", "E0003")]}
    assert everyone[("other", "E0000")].attributes == {} and everyone[("other", "E0000")].remote_id is None
    assert everyone[("demo", "E0004")].grants == {"group:G1"} and everyone[("demo", "E0005")].grants == frozenset()
    assert everyone[("demo", "E0004")].attributes == {"given_name": "Émile \u2028 \"q\"", "title": "T4"}
    assert not everyone[("other", "E0009")].active and everyone[("demo", "E0010")].active
    # A manager's reference: a live account's id; none for a deleted one, another app's, or nobody.
    assert store.remote_id("demo", "E0002") == "r-2" and store.remote_id("demo", "E0001") is None
    assert store.remote_id("other", "E0002") is None and store.remote_id("demo", "NOBODY") is None
    store.close()


# ---- outbox ---------------------------------------------------------------------------

def _plan(outbox: Outbox, plan_id: str, ops: list[Operation], *, held: bool = False, at: dt.datetime = T0,
          reasons: list[str] | None = None) -> None:
    outbox.save_plan(plan_id, ops, held=held, origin="export", reasons=reasons or [], summary={"ops": len(ops)},
                     policy_hash="p", export_id=None, now=at)


def test_outbox_plans_held_and_pending(db_url: str) -> None:
    store = Store(db_url)
    outbox = Outbox(store)
    _plan(outbox, "p1", [_create("E1"), _add("E1", "All Staff")])
    _plan(outbox, "p2", [_deactivate("E2")], held=True, at=T0 + dt.timedelta(minutes=1), reasons=["too many"])
    assert outbox.plan("p1") is not None and outbox.plan("p1").state == "queued"  # type: ignore[union-attr]
    held = outbox.plan("p2")
    assert held is not None and held.state == "held" and held.reasons == ["too many"]
    assert [p.id for p in outbox.plans(["held"])] == ["p2"]
    assert {q.op.action for q in outbox.pending()} == {Action.CREATE, Action.ADD_MEMBER}  # held ops never claimable
    assert outbox.counts() == {("demo", "pending"): 2, ("demo", "held"): 1}
    assert [q.state for q in outbox.plan_ops("p2")] == ["held"]

    # A newer held export plan supersedes the older one.
    _plan(outbox, "p3", [_deactivate("E3")], held=True, at=T0 + dt.timedelta(minutes=2), reasons=["again"])
    assert outbox.plan("p2").state == "superseded"  # type: ignore[union-attr]
    assert [q.state for q in outbox.plan_ops("p2")] == ["cancelled"]
    assert outbox.decide("p2", approve=True, actor="cli", now=T0) == "plan p2 is superseded, not held"
    assert outbox.decide("nope", approve=True, actor="cli", now=T0) == "no plan nope"

    # Approve: its operations become pending.
    assert outbox.decide("p3", approve=True, actor="alice", now=T0 + dt.timedelta(minutes=3)) is None
    p3 = outbox.plan("p3")
    assert p3 is not None and p3.state == "queued" and p3.decided_by == "alice"
    assert [q.state for q in outbox.plan_ops("p3")] == ["pending"]
    assert outbox.decide("p3", approve=False, actor="alice", now=T0) == "plan p3 is queued, not held"

    # Discard: its operations are cancelled and never run.
    _plan(outbox, "p4", [_deactivate("E4")], held=True, at=T0 + dt.timedelta(minutes=4))
    assert outbox.decide("p4", approve=False, actor="bob", now=T0 + dt.timedelta(minutes=5)) is None
    assert outbox.plan("p4").state == "discarded"  # type: ignore[union-attr]
    assert [q.state for q in outbox.plan_ops("p4")] == ["cancelled"]
    assert all(q.op.employee_id != "E4" for q in outbox.pending())
    store.close()


def test_approve_refuses_a_plan_that_is_no_longer_current(db_url: str) -> None:
    store = Store(db_url)
    outbox = Outbox(store)
    _plan(outbox, "old", [_deactivate("E1")], held=True)
    _plan(outbox, "newer", [_create("E2")], at=T0 + dt.timedelta(minutes=1))
    refusal = outbox.decide("old", approve=True, actor="cli", now=T0 + dt.timedelta(minutes=2))
    assert refusal is not None and "no longer current" in refusal
    assert outbox.plan("old").state == "held"  # type: ignore[union-attr]
    # Discarding it is still allowed.
    assert outbox.decide("old", approve=False, actor="cli", now=T0 + dt.timedelta(minutes=2)) is None
    store.close()


def test_pending_puts_leavers_first(db_url: str) -> None:
    store = Store(db_url)
    outbox = Outbox(store)
    _plan(outbox, "bulk", [_create(f"E{i}") for i in range(5)])
    _plan(outbox, "leaver", [_deactivate("E9"), _add("E9", "x", priority=Priority.LEAVER)],
          at=T0 + dt.timedelta(minutes=1))
    order = [(q.plan_id, q.op.priority) for q in outbox.pending()]
    assert order[:2] == [("leaver", Priority.LEAVER), ("leaver", Priority.LEAVER)]
    assert [p for p, _ in order[2:]] == ["bulk"] * 5
    ids = [q.id for q in outbox.pending()]
    assert ids[2:] == sorted(ids[2:])  # plan order within a priority
    # exclude / paused filters
    assert all(q.id != ids[0] for q in outbox.pending(exclude=[ids[0]]))
    assert outbox.pending(paused=["demo"]) == []
    assert len(outbox.pending(limit=3)) == 3
    store.close()


def test_running_work_is_recovered_after_a_crash_and_dead_letters_retried(db_url: str) -> None:
    store = Store(db_url)
    outbox = Outbox(store)
    _plan(outbox, "p1", [_create("E1"), _create("E2"), _create("E3")])
    a, b, c = (q.id for q in sorted(outbox.pending(), key=lambda q: q.id))
    outbox.mark_running([a, b], T0)
    assert {q.id for q in outbox.pending()} == {c}
    assert outbox.open_count("p1") == 3
    # The process dies here; the next lease holder puts `running` back to pending.
    assert outbox.recover(T0 + dt.timedelta(minutes=1)) == 2
    assert {q.id for q in outbox.pending()} == {a, b, c}

    outbox.mark_running([a], T0)
    outbox.mark_done(a, T0)
    outbox.mark_running([b], T0)
    outbox.mark_failed(b, "demo: 400 userName invalid", dead=True, attempts=1, now=T0)
    outbox.mark_running([c], T0)
    outbox.mark_done(c, T0)
    assert outbox.plan_state_counts("p1") == {"done": 2, "dead": 1}
    assert outbox.finish_plans(T0) == ["p1"]
    assert outbox.plan("p1").state == "done"  # type: ignore[union-attr]
    dead = outbox.ops(["dead"])
    assert [(q.id, q.last_error, q.attempts) for q in dead] == [(b, "demo: 400 userName invalid", 1)]
    assert outbox.recover(T0) == 0  # dead letters are not crash leftovers

    assert outbox.retry(None, T0) == 1
    assert [q.id for q in outbox.pending()] == [b]
    assert outbox.plan("p1").state == "queued"  # type: ignore[union-attr]  # open again until done
    assert outbox.retry(b, T0) == 0  # not dead any more
    store.close()


def test_lease_is_exclusive_between_two_holders(db_url: str) -> None:
    store = Store(db_url)
    other = Store(db_url)  # a second process: its own engine
    ttl = dt.timedelta(minutes=2)
    one, two = Outbox(store), Outbox(other)
    assert one.acquire_lease("sync-1", T0, ttl)
    assert not two.acquire_lease("serve-2", T0 + dt.timedelta(seconds=30), ttl)
    assert one.acquire_lease("sync-1", T0 + dt.timedelta(minutes=1), ttl)  # renewal
    assert not two.acquire_lease("serve-2", T0 + dt.timedelta(minutes=2, seconds=30), ttl)  # renewed: still held
    # Expired (the holder died without releasing): the other process takes over...
    assert two.acquire_lease("serve-2", T0 + dt.timedelta(minutes=3, seconds=1), ttl)
    # ...and the old holder cannot take it back while it is live.
    assert not one.acquire_lease("sync-1", T0 + dt.timedelta(minutes=3, seconds=2), ttl)
    one.release_lease("sync-1")  # releasing a lease one does not hold changes nothing
    assert not one.acquire_lease("sync-1", T0 + dt.timedelta(minutes=3, seconds=3), ttl)
    two.release_lease("serve-2")
    assert one.acquire_lease("sync-1", T0 + dt.timedelta(minutes=3, seconds=4), ttl)
    store.close()
    other.close()


# ---- audit ----------------------------------------------------------------------------

def test_audit_chain_appends_verifies_and_catches_tampering(db_url: str) -> None:
    store = Store(db_url)
    audit = AuditLog(store)
    audit.append("export", {"rows": 3, "note": "Zoë \"quoted\" \\ back"}, now=T0)
    audit.append_many([("hr_change", {"kind": "joiner"}, "hr", "E1"), ("plan", {"plan_id": "p1"}, "jml", None)],
                      now=T0 + dt.timedelta(seconds=1))
    audit.append("approval", {"plan_id": "p1"}, now=T0 + dt.timedelta(seconds=2), actor="cli")
    count, head = audit.head()
    assert count == 4
    result = audit.verify()
    assert result.ok and result.count == 4
    recs = list(audit.records())
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["data"]["note"] == "Zoë \"quoted\" \\ back"
    assert recs[-1]["hash"] == head
    assert [r["kind"] for r in audit.records(subject="E1")] == ["hr_change"]
    assert [r["seq"] for r in audit.records(since=T0 + dt.timedelta(seconds=1))] == [2, 3, 4]

    # A second writer (another process) continues the same chain.
    AuditLog(Store(db_url)).append("retry", {"count": 1}, now=T0 + dt.timedelta(seconds=3))
    assert audit.verify().ok and audit.head()[0] == 5

    # Edit a record: caught.
    A = AuditRow.__table__  # type: ignore[attr-defined]
    with store.engine.begin() as conn:
        conn.execute(A.update().where(A.c.seq == 2).values(data={"kind": "leaver"}))
    bad = audit.verify()
    assert not bad.ok and "record 2" in bad.problem
    with store.engine.begin() as conn:
        conn.execute(A.update().where(A.c.seq == 2).values(data={"kind": "joiner"}))
    assert audit.verify().ok
    # Cut the tail: caught by the head row.
    with store.engine.begin() as conn:
        conn.execute(A.delete().where(A.c.seq == 5))
        assert [r[0] for r in conn.execute(select(A.c.seq).order_by(A.c.seq))] == [1, 2, 3, 4]
    cut = audit.verify()
    assert not cut.ok and "deleted" in cut.problem
    store.close()


def test_recent_event_leavers_counted_from_the_last_hours_plans_through_their_index(db_url: str) -> None:
    """The event-leaver bound's count (every event pass asks it): distinct people deprovisioned
    by released event/offboard plans since `since`, not an export's, a held plan's or an older
    plan's; on SQLite the plans are found through ix_plan_origin_created (0010), not by reading
    every plan ever made."""
    store = Store(db_url)
    outbox = Outbox(store)
    hour_ago = T0 - dt.timedelta(hours=1)
    for plan_id, origin, at, held, ops in (
            ("ev1", "event", T0, False, [_deactivate("E1"), _deactivate("E1", "other"), _deactivate("E2")]),
            ("off", "offboard", T0, False, [_deactivate("E3")]),
            ("old", "event", hour_ago - dt.timedelta(seconds=1), False, [_deactivate("E4")]),
            ("exp", "export", T0, False, [_deactivate("E5")]),
            ("held", "event", T0, True, [_deactivate("E6")]),
            ("grant", "event", T0, False, [_add("E7", "Eng")])):
        outbox.save_plan(plan_id, ops, held=held, origin=origin, reasons=[], summary={}, policy_hash=None,
                         export_id=None, now=at)
    seen: list[tuple[str, object]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        assert outbox.recent_leavers(("event", "offboard"), hour_ago) == 3  # E1 (twice), E2, E3
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    assert outbox.recent_leavers(("event",), hour_ago) == 2
    assert "ix_plan_origin_created" in {i["name"] for i in inspect(store.engine).get_indexes("plan")}
    if store.engine.dialect.name == "sqlite":
        (statement, parameters), = seen
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()  # type: ignore[arg-type]
        assert any("ix_plan_origin_created" in str(row) for row in plan), plan
    store.close()


def test_an_event_and_a_clock_say_whether_they_went_in(db_url: str) -> None:
    """A webhook's event is new once (the processor is woken, the HR webhook answers "accepted"),
    and a clock is opened once: on PostgreSQL too, whose driver gives no rowcount for an
    INSERT ... ON CONFLICT DO NOTHING (every event had counted as a duplicate there)."""
    from types import SimpleNamespace

    from jml.store.inbox import Inbox

    store = Store(db_url)
    inbox = Inbox(store)
    event = SimpleNamespace(id="h-1", type="hire", occurred_at=T0, person={"employee_id": "E1"})
    assert inbox.add_hr(event, T0) is True  # type: ignore[arg-type]
    assert inbox.add_hr(event, T0) is False  # type: ignore[arg-type]
    okta = [SimpleNamespace(uuid=u, published=T0, raw={"uuid": u}) for u in ("a", "b")]
    assert inbox.add_okta(okta, T0) == 2  # type: ignore[arg-type]
    assert inbox.add_okta([*okta, SimpleNamespace(uuid="c", published=T0, raw={})], T0) == 1  # type: ignore[arg-type]
    row = {"connector": "demo", "employee_id": "E1", "started_at": T0, "deadline": T0 + dt.timedelta(hours=1),
           "breached": False, "predicted_breach": False, "last_check": "started|x|plan p"}
    assert store.sla.open([row]) == [row]
    assert store.sla.open([row]) == []
    store.close()
