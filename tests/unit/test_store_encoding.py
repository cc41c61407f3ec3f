"""Issue 16's first-import work writes people, operations and audit records in the driver's form
(one shared JSON encoder, timestamps adapted once, the audit's plan-shaped records built redacted):
what is stored must be what the generic path stored, byte for byte, and read back the same."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jml import sync
from jml.audit import dump
from jml.model import (
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
    person_to_dict,
)
from jml.redact import MASK, Redacted, is_secret_field, redact_data, redacting_memo, register_secret
from jml.store import db
from jml.store.outbox import O, Outbox
from jml.store.repo import P, PersonSave, Store
from jml.store.tables import AuditRow

SECRET = "s3cr3t-store-encoding-test-value"
register_secret(SECRET)

# Texts that exercise the redaction: a registered secret, credentials after a scheme, a URL password.
_tricky = st.sampled_from(["", SECRET, f"x{SECRET}y", "Bearer abcdef123456", "token ghp_1234567890abcdef",
                           "https://user:pa55word@example.com/x", "SRE//oncall", "Émile", "a\"b\\c", "\u2028"])
text = st.one_of(st.text(max_size=30), _tricky)
stamp = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.just(dt.UTC))
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text, st.dates()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12)


@given(json_like)
def test_the_shared_encoders_write_what_json_dumps_wrote(value: Any) -> None:
    assert db.json_text(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    assert dump(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def test_the_audit_records_built_redacted_have_no_secret_field_names() -> None:
    assert not [k for k in (*sync.OPERATION_KEYS, *sync.HR_CHANGE_KEYS, "plan_id", "offset", "operations")
                if is_secret_field(k)]


people = st.builds(
    Person, employee_id=st.text(min_size=1, max_size=12), status=st.sampled_from(list(Status)),
    first_name=text, last_name=text, work_email=text, department=text, job_title=text,
    hire_date=st.none() | st.dates(), termination_date=st.none() | st.dates(),
    extra=st.dictionaries(st.sampled_from(["token", "badge", "Password", "site"]), text, max_size=3))
overrides = st.none() | st.builds(Override, kind=st.sampled_from(list(OverrideKind)), effective_at=stamp,
                                  reason=text, actor=text)
lifecycles = st.none() | st.builds(Lifecycle, phase=st.sampled_from(list(Phase)),
                                   effective_termination=st.none() | stamp, reason=text,
                                   next_change_at=st.none() | stamp)


@st.composite
def saves(draw: st.DrawFn) -> list[PersonSave]:
    out: dict[str, PersonSave] = {}
    for _ in range(draw(st.integers(1, 6))):
        person = draw(st.none() | people)
        eid = person.employee_id if person is not None else draw(st.text(min_size=1, max_size=12))
        state = PersonState(eid, person, draw(st.none() | stamp), draw(st.integers(0, 5)), draw(overrides))
        out[eid] = PersonSave(state, draw(st.none() | st.text(max_size=32)), draw(lifecycles))
    return list(out.values())


def _generic_person_row(s: PersonSave, now: dt.datetime) -> tuple[Any, ...]:
    """The row as save_people built it before issue 16 (bulk_write adapted it)."""
    st_, lc = s.state, s.lifecycle
    ov = st_.override
    return (st_.employee_id, person_to_dict(st_.person) if st_.person else None, s.row_hash,
            st_.person.status.value if st_.person else None, st_.first_seen_terminated_at, st_.missing_count,
            ov.kind.value if ov else None, ov.effective_at if ov else None, ov.reason if ov else None,
            ov.actor if ov else None, lc.phase.value if lc else None, lc.effective_termination if lc else None,
            lc.next_change_at if lc else None, now)


_example = itertools.count()  # a database per example (tmp_path is shared by a test's examples)


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute(sql).fetchall()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(saves(), stamp)
def test_people_are_stored_as_the_generic_path_stored_them(tmp_path: Path, batch: list[PersonSave],
                                                           now: dt.datetime) -> None:
    n = next(_example)
    fast, generic = tmp_path / f"fast-{n}.db", tmp_path / f"generic-{n}.db"
    store, other = Store(f"sqlite:///{fast}"), Store(f"sqlite:///{generic}")
    try:
        store.save_people(batch, now)
        cols = ("employee_id", "data", "row_hash", "status", "first_seen_terminated_at", "missing_count",
                "override_kind", "override_at", "override_reason", "override_actor", "phase",
                "effective_termination", "next_change_at", "updated_at")
        with other.engine.begin() as conn:
            db.bulk_write(conn, P, cols, (_generic_person_row(s, now) for s in batch), conflict=["employee_id"],
                          update=cols[1:])
        sql = "SELECT * FROM person ORDER BY employee_id"
        assert _rows(fast, sql) == _rows(generic, sql)
        assert store.load_states() == other.load_states() == {s.state.employee_id: s.state for s in batch}
    finally:
        store.close()
        other.close()


operations = st.builds(
    Operation, connector=text, action=st.sampled_from(list(Action)), employee_id=text,
    detail=st.dictionaries(st.sampled_from(["group", "grant", "rule", "username", "attributes", "active"]),
                           json_like, max_size=4),
    priority=st.sampled_from(list(Priority)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(operations, max_size=6), st.booleans(), stamp)
def test_operations_are_stored_as_the_generic_path_stored_them(tmp_path: Path, ops: list[Operation], held: bool,
                                                               now: dt.datetime) -> None:
    n = next(_example)
    fast, generic = tmp_path / f"fast-{n}.db", tmp_path / f"generic-{n}.db"
    store, other = Store(f"sqlite:///{fast}"), Store(f"sqlite:///{generic}")
    try:
        Outbox(store).save_plan("p1", ops, held=held, origin="export", reasons=[], summary={}, policy_hash=None,
                                export_id=None, now=now)
        Outbox(other).save_plan("p1", [], held=held, origin="export", reasons=[], summary={}, policy_hash=None,
                                export_id=None, now=now)
        cols = ("plan_id", "connector", "employee_id", "action", "detail", "priority", "state", "attempts",
                "created_at", "updated_at")
        with other.engine.begin() as conn:
            db.bulk_write(conn, O, cols, (
                ("p1", o.connector, o.employee_id, o.action.value, o.detail, int(o.priority),
                 "held" if held else "pending", 0, now, now) for o in ops))
        sql = "SELECT * FROM operation ORDER BY id"
        assert _rows(fast, sql) == _rows(generic, sql)
        assert [q.op for q in Outbox(store).plan_ops("p1")] == [q.op for q in Outbox(other).plan_ops("p1")] == [
            Operation(o.connector, o.action, o.employee_id, json.loads(db.json_text(o.detail)), o.priority)
            for o in ops]
    finally:
        store.close()
        other.close()


class _Policy:
    @staticmethod
    def fingerprint() -> str:
        return "f" * 64


class _Rt:
    policy = _Policy()


@settings(max_examples=60, deadline=None)
@given(st.lists(operations, max_size=8), st.lists(st.tuples(people, people, lifecycles), max_size=4))
def test_audit_records_built_redacted_equal_redact_data_of_the_plain_records(
        ops: list[Operation], changes: list[tuple[Person, Person, Lifecycle | None]]) -> None:
    outcome = sync.PlanOutcome("plan-1", ops)
    transitions = []
    for before, after, lc in changes:
        prev = PersonState(after.employee_id, before)
        state = PersonState(after.employee_id, after)
        life = lc or Lifecycle(Phase.ACTIVE)
        transitions.append((after.employee_id, prev, state, life, "active"))
    records = list(sync._audit_records(_Rt(), outcome, transitions)())  # type: ignore[arg-type]
    hr = [r for r in records if r[0] == "hr_change"]
    assert len(hr) == len(transitions)
    for (_, data, actor, subject), (eid, prev, state, life, old) in zip(hr, transitions, strict=True):
        assert isinstance(data, Redacted) and (actor, subject) == ("hr", eid)
        plain = {**sync._describe(prev, state, life, old), "reason": life.reason or None}
        assert data.data == redact_data(plain)
        assert dump(data.data) == dump(redact_data(plain))
    chunks = [r[1] for r in records if r[0] == "plan_operations"]
    plain_ops = [{"connector": o.connector, "action": o.action.value, "person": o.employee_id,
                  "target": o.detail.get("group") or o.detail.get("grant"), "rule": o.detail.get("rule")}
                 for o in ops]
    assert len(chunks) == (1 if ops else 0)
    for c in chunks:
        assert isinstance(c, Redacted)
        plain_chunk = {"plan_id": "plan-1", "offset": 0, "operations": plain_ops}
        assert c.data == redact_data(plain_chunk)
        assert dump(c.data) == dump(redact_data(plain_chunk))
        if all(type(v) is str for op in plain_ops for v in op.values()):  # (redact_data keeps dict keys)
            assert SECRET not in dump(c.data)


def test_a_redacting_memo_forgets_what_it_kept_when_a_secret_is_registered() -> None:
    clean = redacting_memo()
    text = "group:late-registered-secret-4711"
    assert clean(text) == text
    assert clean({"token": "x", "a": [text]}) == redact_data({"token": "x", "a": [text]})
    register_secret("late-registered-secret-4711")
    assert clean(text) == f"group:{MASK}"
    assert clean(None) is None and clean(3) == 3


class _Cursor:
    def __init__(self, batches: list[int]) -> None:
        self.batches = batches

    def executemany(self, _sql: str, rows: list[Any]) -> None:
        self.batches.append(len(rows))

    def close(self) -> None:
        pass


class _Conn:
    """What bulk_write touches of a SQLAlchemy connection, recording each executemany's rows."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.dialect = type("D", (), {"name": "sqlite"})()
        driver = type("R", (), {"cursor": lambda _s: _Cursor(self.batches)})()
        self.connection = type("C", (), {"driver_connection": driver})()


@pytest.mark.parametrize(("sizes", "weigh", "chunk", "expect"), [
    ([10] * 12, None, 5, [5, 5, 2]),                 # by rows only
    ([400_000] * 5, None, 5000, [5]),                # big texts, unweighed: one batch
    ([400_000] * 5, 1, 5000, [3, 2]),                # weighed: a batch ends past 1 MiB
    ([10] * 7 + [2_000_000] + [10] * 3, 1, 5, [5, 3, 3]),  # one big text closes its batch
    ([], 1, 5, []),
])
def test_bulk_write_bounds_a_batch_by_rows_and_by_the_weighed_text(sizes: list[int], weigh: int | None, chunk: int,
                                                                    expect: list[int]) -> None:
    conn = _Conn()
    table = AuditRow.__table__  # type: ignore[attr-defined]
    rows = [(i, "x" * n) for i, n in enumerate(sizes)]
    n = db.bulk_write(conn, table, ("seq", "kind"), rows, chunk=chunk, adapted=True, weigh=weigh)  # type: ignore[arg-type]
    assert conn.batches == expect and n == len(sizes)
