"""People, accounts, grants, exports and settings. Sync SQLAlchemy Core for bulk speed.

The same code runs on SQLite and PostgreSQL; `Store(url)` migrates on open.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update

from jml import plan as planner
from jml.model import (
    CANONICAL_FIELDS,
    AccountRecord,
    Action,
    Lifecycle,
    Operation,
    Override,
    OverrideKind,
    PersonState,
    Status,
    person_from_dict,
    person_to_dict,
)
from jml.store.access import AccessStore
from jml.store.db import (
    bulk_write,
    json_text,
    make_engine,
    migrate,
    ping,
    raw_rows,
    read_stamp,
    to_driver,
    upsert,
    utc,
)
from jml.store.dialects import DialectStore
from jml.store.identity import IdentityStore
from jml.store.remote import RemoteState
from jml.store.reviews import ReviewStore
from jml.store.sla import SlaClocks
from jml.store.tables import AccountRow, ExportRow, GrantRow, GroupRow, PersonRow, SettingRow

P = PersonRow.__table__  # type: ignore[attr-defined]
A = AccountRow.__table__  # type: ignore[attr-defined]
G = GrantRow.__table__  # type: ignore[attr-defined]
GR = GroupRow.__table__  # type: ignore[attr-defined]
E = ExportRow.__table__  # type: ignore[attr-defined]
S = SettingRow.__table__  # type: ignore[attr-defined]

# Statements the engine runs for every operation, built once: building a Core statement and
# its cache key costs more than SQLite executing it (measured: 350 µs built, 130 µs reused).
# (The accounts the engine reads, it reads on the driver's cursor: Store._accounts_of.)
# A manager's id, once per manager a connector meets (350 µs a statement built per call).
_REMOTE_ID = select(A.c.remote_id).where(A.c.connector == bindparam("k_connector"),
                                         A.c.employee_id == bindparam("k_eid"), A.c.deleted.is_(False))
_DELETE_ACCOUNT = delete(A).where(A.c.connector == bindparam("k_connector"), A.c.employee_id == bindparam("k_eid"))
_DELETE_GRANTS = delete(G).where(G.c.connector == bindparam("k_connector"), G.c.employee_id == bindparam("k_eid"))
_DELETE_GRANT = delete(G).where(G.c.connector == bindparam("k_connector"), G.c.employee_id == bindparam("k_eid"),
                                G.c.name == bindparam("k_name"))
_SET_OVERRIDE = update(P).where(P.c.employee_id == bindparam("k_eid")).values(
    {c: bindparam(c) for c in ("override_kind", "override_at", "override_reason", "override_actor", "updated_at")})
# Whether a table has any row: a first import asks for 100k people's states and accounts, 900
# at a time, of tables that are still empty (112 statements each, compiled anew every time).
_ANY_PERSON = select(P.c.employee_id).limit(1)
# Run on every event pass (a leaver wave: one pass every 0.1 s), with the people as one
# expanding parameter: an IN built per call (operator, coercion, cache key) cost ~0.4 ms.
_STATES_OF = select(P).where(P.c.employee_id.in_(bindparam("eids", expanding=True)))
_INDEX_OF = select(P.c.employee_id, P.c.row_hash, P.c.next_change_at, P.c.missing_count, P.c.phase,
                   P.c.override_kind).where(P.c.employee_id.in_(bindparam("eids", expanding=True)))
_EXISTING = select(P.c.employee_id).where(P.c.employee_id.in_(bindparam("eids", expanding=True)))
_MATCH: dict[str, Any] = {}  # attribute -> its match statement (a few attributes, built once each)
_ANY_ACCOUNT = select(A.c.employee_id).limit(1)
_ACCOUNT_COLUMNS = ("connector", "employee_id", "username", "active", "deleted", "attributes", "remote_id",
                    "created_at", "updated_at")
_GRANT_COLUMNS = ("connector", "employee_id", "name", "rule", "since")
Key = tuple[str, str]


@dataclass(slots=True)
class IndexEntry:
    """The cheap per-person facts that decide whether a person needs planning at all. Read
    only (not frozen: every poll builds one per person, and a frozen dataclass's __init__
    costs twice as much — 100k entries 0.21 -> 0.11 s)."""

    row_hash: str | None
    next_change_at: dt.datetime | None
    missing_count: int
    phase: str | None
    has_override: bool


@dataclass(frozen=True, slots=True)
class PersonSave:
    state: PersonState
    row_hash: str | None
    lifecycle: Lifecycle | None


@dataclass(frozen=True, slots=True)
class PersonSummary:
    """Who a person is, for reports and pages (empty name and email: no HR record)."""

    name: str
    email: str
    phase: str


@dataclass(frozen=True, slots=True)
class AccountSummary:
    username: str
    active: bool
    deleted: bool
    created_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ExportInfo:
    id: int
    source: str
    name: str | None
    checksum: str | None
    etag: str | None
    last_modified: str | None
    columns: tuple[str, ...]
    row_count: int
    status: str
    reason: str | None
    read_at: dt.datetime | None


class Store:
    def __init__(self, url: str, *, engine: Engine | None = None, migrate_schema: bool = True) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        if migrate_schema:
            migrate(self.engine)
        self.dialects = DialectStore(self.engine)
        self.sla = SlaClocks(self.engine)
        self.remote = RemoteState(self.engine)
        self.identities = IdentityStore(self.engine)
        self.reviews = ReviewStore(self.engine)
        self.access = AccessStore(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """Whether the database answers (readiness, `jml check`)."""
        return ping(self.engine)

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One transaction spanning several repositories (people, plan, audit): commits at
        the end of the `with`, rolls back on an exception. Run it through store.retry.retry_write."""
        return self.engine.begin()

    # ---- people ------------------------------------------------------------------
    def person_index(self) -> dict[str, IndexEntry]:
        # Everyone (a plan of more than 20,000 people, the people page): one plain cursor, no ORM rows.
        with self.engine.connect() as conn:
            return _index_entries(raw_rows(conn, _INDEX_READ))

    def flagged_index(self) -> dict[str, IndexEntry]:
        """person_index of the people every poll looks at, whatever the export says: a change
        due at a set time, or missing from earlier exports."""
        with self.engine.connect() as conn:
            return _index_entries(raw_rows(conn, f"{_INDEX_READ} WHERE next_change_at IS NOT NULL "
                                                 "OR missing_count > 0"))

    def row_hashes(self) -> dict[str, str]:
        """employee_id -> stored row hash, for everyone read from an export: what a poll's parser
        compares each row with (the driver's pairs straight into one dict)."""
        with self.engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute("SELECT employee_id, row_hash FROM person WHERE row_hash IS NOT NULL")
                return dict(cursor.fetchall())
            finally:
                cursor.close()

    def index_of(self, eids: Iterable[str]) -> dict[str, IndexEntry]:
        """person_index for these people only (an event's, a reconciliation's)."""
        out: dict[str, IndexEntry] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(eids):
                for r in conn.execute(_INDEX_OF, {"eids": chunk or []}):
                    out[r[0]] = IndexEntry(r[1], utc(r[2]), r[3] or 0, r[4], r[5] is not None)
        return out

    def match_people(self, attribute: str, values: Iterable[str]) -> dict[str, str]:
        """casefolded value of a person attribute (employee_id, a canonical field or an extra
        column) -> employee_id; a non-terminated person wins a tie."""
        wanted = sorted({v.casefold() for v in values if v})
        if not wanted:
            return {}
        q = _MATCH.get(attribute)
        if q is None:
            col: Any
            if attribute == "employee_id":
                col = P.c.employee_id
            elif attribute in CANONICAL_FIELDS:
                col = P.c.data[attribute].as_string()
            else:
                col = P.c.data[("extra", attribute)].as_string()
            q = select(P.c.employee_id, func.lower(col), P.c.status).where(
                func.lower(col).in_(bindparam("values", expanding=True)))
            if len(_MATCH) < 64:  # (configured attributes: a handful)
                _MATCH[attribute] = q
        out: dict[str, tuple[bool, str]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                for eid, value, status in conn.execute(q, {"values": wanted[i:i + 500]}):
                    live = status != Status.TERMINATED.value
                    key = str(value).casefold()
                    if key not in out or (live and not out[key][0]):
                        out[key] = (live, eid)
        return {k: v[1] for k, v in out.items()}

    def load_states(self, eids: Iterable[str] | None = None) -> dict[str, PersonState]:
        out: dict[str, PersonState] = {}
        ids = None if eids is None else list(eids)
        with self.engine.connect() as conn:
            # An empty table answers many chunks at once (a first import); one chunk (an
            # event's few people) is asked for directly.
            if (ids is None or len(ids) > 900) and conn.execute(_ANY_PERSON).first() is None:
                return out
            for chunk in _chunks(ids):
                rows = conn.execute(select(P)) if chunk is None else conn.execute(_STATES_OF, {"eids": chunk})
                for r in rows.mappings():
                    out[r["employee_id"]] = _state_from_row(r)
        return out

    def save_people(self, saves: list[PersonSave], now: dt.datetime, conn: Connection | None = None) -> None:
        if not saves:
            return
        if conn is None:
            with self.engine.begin() as c:
                self.save_people(saves, now, c)
            return
        cols = list(_PERSON_COLUMNS)
        # Rows in the driver's form: a first import writes 100k people in this transaction.
        stamps: dict[dt.datetime, Any] = {}

        def stamp(value: dt.datetime | None) -> Any:
            if value is None:
                return None
            out = stamps.get(value)
            if out is None:
                out = stamps[value] = to_driver(conn, value, "ts")
            return out

        at = stamp(now)
        bulk_write(conn, P, cols, (_row_from_state(s, at, stamp) for s in saves), conflict=["employee_id"],
                   update=cols[1:], adapted=True)

    def set_override(self, employee_id: str, override: Override | None, now: dt.datetime) -> None:
        self.set_overrides({employee_id: override}, now)

    def set_overrides(self, overrides: Mapping[str, Override | None], now: dt.datetime) -> None:
        """Set (or lift, with None) people's sticky overrides, in one transaction."""
        def values(override: Override | None) -> dict[str, Any]:
            return {"override_kind": override.kind.value if override else None,
                    "override_at": override.effective_at if override else None,
                    "override_reason": override.reason if override else None,
                    "override_actor": override.actor if override else None,
                    "updated_at": now}

        if not overrides:
            return
        with self.engine.begin() as conn:
            # One update of them all, then one read of who has a row (an event pass sets a
            # wave's overrides: a statement per person cost 0.4 ms each). The update first:
            # on SQLite it opens the write transaction, so the read sees what the inserts meet.
            if conn.execute(_SET_OVERRIDE, [{"k_eid": e, **values(o)} for e, o in overrides.items()]).rowcount \
                    == len(overrides):
                return
            eids = list(overrides)
            present = {r[0] for chunk in _chunks(eids) for r in conn.execute(_EXISTING, {"eids": chunk})}
            for employee_id, override in overrides.items():
                if employee_id not in present:
                    conn.execute(P.insert().values(employee_id=employee_id, missing_count=0, **values(override)))

    def due_people(self, now: dt.datetime) -> list[str]:
        """People whose phase changes by time alone at or before `now` (pre-hire day, termination)."""
        with self.engine.connect() as conn:
            q = select(P.c.employee_id).where(P.c.next_change_at.is_not(None), P.c.next_change_at <= now)
            return [r[0] for r in conn.execute(q)]

    def find_people(self, query: str, limit: int = 25) -> list[PersonState]:
        """By employee_id, email or name (case-insensitive substring), for the HR view."""
        q = query.strip().casefold()
        if not q:
            return []
        hits: list[PersonState] = []
        for state in self.load_states().values():
            p = state.person
            hay = [state.employee_id.casefold()]
            if p is not None:
                hay += [p.work_email.casefold(), p.display_name.casefold(), f"{p.first_name} {p.last_name}".casefold()]
            if any(q in h for h in hay):
                hits.append(state)
                if len(hits) >= limit:
                    break
        return hits

    # ---- accounts ----------------------------------------------------------------
    def load_accounts(self, eids: Iterable[str] | None = None) -> dict[tuple[str, str], AccountRecord]:
        with self.engine.connect() as conn:
            if eids is None:
                return _records(conn.execute(select(A)).mappings(),
                                conn.execute(select(G.c.connector, G.c.employee_id, G.c.name)))
            return self._accounts_of(conn, eids)

    def remote_id(self, connector: str, employee_id: str) -> str | None:
        """The app's id of this person's live account there (a manager's reference)."""
        with self.engine.connect() as conn:
            row = conn.execute(_REMOTE_ID, {"k_connector": connector, "k_eid": employee_id}).first()
        return str(row[0]) if row is not None and row[0] else None

    @staticmethod
    def _accounts_of(conn: Connection, eids: Iterable[str]) -> dict[Key, AccountRecord]:
        """Every connector's account of these people, 900 at a time (SQLite's bound-parameter cap).
        Read on the DB-API cursor: the engine reads a person's accounts before every chain and
        again in every group-committed result, and SQLAlchemy's statement and row handling cost
        several times SQLite's query (8% of a leaver wave's CPU)."""
        out: dict[Key, AccountRecord] = {}
        ids = eids if isinstance(eids, list) else list(eids)
        if len(ids) > 900 and conn.execute(_ANY_ACCOUNT).first() is None:
            return out  # (a grant row belongs to an account row: no accounts, no records)
        mark = "?" if conn.dialect.name == "sqlite" else "%s"
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for chunk in _chunks(ids):
                assert chunk is not None
                marks = ", ".join([mark] * len(chunk))
                # Identifiers are our own table's; the values are bound.
                cursor.execute(f"{_ACCOUNT_READ} ({marks})", chunk)
                accounts = cursor.fetchall()
                cursor.execute(f"{_GRANT_READ} ({marks})", chunk)
                out.update(_records_raw(accounts, cursor.fetchall()))
        finally:
            cursor.close()
        return out

    def grant_details(self, eids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = select(G)
            if eids is not None:
                q = q.where(G.c.employee_id.in_(list(eids)))
            return [dict(r, since=utc(r["since"])) for r in conn.execute(q.order_by(G.c.employee_id)).mappings()]

    def managed_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            q = select(A.c.connector, func.count()).where(A.c.deleted.is_(False)).group_by(A.c.connector)
            return {c: int(n) for c, n in conn.execute(q)}

    def people_summary(self) -> dict[str, PersonSummary]:
        out: dict[str, PersonSummary] = {}
        with self.engine.connect() as conn:
            for eid, data, phase in conn.execute(select(P.c.employee_id, P.c.data, P.c.phase)):
                name = email = ""
                if data:
                    p = person_from_dict(data)
                    name, email = p.display_name, p.work_email
                out[eid] = PersonSummary(name, email, phase or "")
        return out

    def account_summaries(self) -> dict[Key, AccountSummary]:
        """Every recorded account, deleted ones included, by (connector, employee_id)."""
        with self.engine.connect() as conn:
            return {(r["connector"], r["employee_id"]): AccountSummary(r["username"], bool(r["active"]),
                                                                         bool(r["deleted"]), utc(r["created_at"]))
                    for r in conn.execute(select(A)).mappings()}

    def people_on_record(self) -> frozenset[str]:
        """Everyone HR has told jml about (a person row with data, not only an override)."""
        with self.engine.connect() as conn:
            return frozenset(r[0] for r in conn.execute(select(P.c.employee_id).where(P.c.data.is_not(None))))

    def known_groups(self) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for c, n in conn.execute(select(GR.c.connector, GR.c.name)):
                out.setdefault(c, set()).add(n)
        return {c: frozenset(v) for c, v in out.items()}

    def record_success(self, op: Operation, remote_id: str | None, now: dt.datetime, conn: Any = None) -> None:
        """Fold a succeeded operation into the recorded state (plan.apply, persisted)."""
        self.record_results([(op, remote_id, now)], conn)

    def record_results(self, results: Sequence[tuple[Operation, str | None, dt.datetime]], conn: Any = None) -> None:
        """Fold succeeded operations, in order, into the recorded state (plan.apply, persisted):
        one read of every account they touch, then one executemany per kind of write, so a
        group commit of many results costs about what one result does."""
        if conn is None:
            with self.engine.begin() as c:
                self.record_results(results, c)
            return
        for op, remote_id, _at in results:
            if op.action is Action.CREATE_GROUP:
                name = str(op.detail["group"])
                conn.execute(delete(GR).where(GR.c.connector == op.connector, GR.c.name == name))
                conn.execute(GR.insert().values(connector=op.connector, name=name, remote_id=remote_id))
        ops = [r for r in results if r[0].action is not Action.CREATE_GROUP]
        if not ops:
            return
        eids = sorted({e for op, _, _ in ops for e in _touched(op)})
        before = self._accounts_of(conn, eids)
        state = dict(before)
        rule_of: dict[tuple[Key, str], str | None] = {}  # the rule of the operation that added a grant
        stamped: dict[Key, dt.datetime] = {}
        for op, remote_id, at in ops:
            mine = {k: state[k] for k in ((op.connector, e) for e in _touched(op)) if k in state}
            after = planner.apply(mine, op, remote_id)
            for key in mine.keys() - after.keys():
                del state[key]
            for key, rec in after.items():
                old = mine.get(key)
                for name in rec.grants - (old.grants if old is not None else frozenset()):
                    rule_of[(key, name)] = op.detail.get("rule")
                if old != rec:
                    stamped[key] = at
                state[key] = rec
        gone = [{"k_connector": c, "k_eid": e} for c, e in before if (c, e) not in state]
        if gone:
            conn.execute(_DELETE_ACCOUNT, gone)
            conn.execute(_DELETE_GRANTS, gone)
        changed = [(key, rec) for key, rec in state.items() if before.get(key) != rec]
        # An upsert, not "update, else insert": the row may have appeared since it was read.
        bulk_write(conn, A, _ACCOUNT_COLUMNS, (
            (c, e, rec.username, rec.active, rec.deleted, dict(rec.attributes), rec.remote_id, stamped[(c, e)],
             stamped[(c, e)]) for (c, e), rec in changed),
            conflict=("connector", "employee_id"), update=(*_ACCOUNT_COLUMNS[2:7], "updated_at"))
        revoked, granted = [], []
        for key, rec in changed:
            old = before.get(key)
            old_grants = old.grants if old is not None else frozenset()
            revoked += [{"k_connector": key[0], "k_eid": key[1], "k_name": n} for n in old_grants - rec.grants]
            granted += [(key[0], key[1], n, rule_of.get((key, n)), stamped[key]) for n in rec.grants - old_grants]
        if revoked:
            conn.execute(_DELETE_GRANT, revoked)
        bulk_write(conn, G, _GRANT_COLUMNS, granted, conflict=("connector", "employee_id", "name"))
        # A membership names a group the app has: remember it (its id is resolved by the connector).
        groups = {(op.connector, str(op.detail["group"])) for op, _, _ in ops
                  if op.action is Action.ADD_MEMBER and op.detail.get("group")}
        bulk_write(conn, GR, ("connector", "name"), sorted(groups), conflict=("connector", "name"))

    # ---- exports -----------------------------------------------------------------
    def add_export(self, *, source: str, name: str | None, checksum: str | None, etag: str | None,
                   last_modified: str | None, columns: Iterable[str], row_count: int, quarantined: int,
                   status: str, reason: str | None, now: dt.datetime) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(E.insert().values(
                source=source, name=name, checksum=checksum, etag=etag, last_modified=last_modified,
                columns=list(columns), row_count=row_count, quarantined=quarantined, status=status,
                reason=reason, read_at=now))
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def set_export_status(self, export_id: int, status: str, reason: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(E).where(E.c.id == export_id).values(status=status, reason=reason))

    def last_export(self, source: str, *, good: bool = False) -> ExportInfo | None:
        q = select(E).where(E.c.source == source)
        if good:
            q = q.where(E.c.status == "accepted")
        with self.engine.connect() as conn:
            r = conn.execute(q.order_by(E.c.id.desc()).limit(1)).mappings().first()
        if r is None:
            return None
        return ExportInfo(r["id"], r["source"], r["name"], r["checksum"], r["etag"], r["last_modified"],
                          tuple(r["columns"] or ()), r["row_count"], r["status"], r["reason"], utc(r["read_at"]))

    def recent_exports(self, limit: int = 10) -> list[ExportInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(E).order_by(E.c.id.desc()).limit(limit)).mappings().all()
        return [ExportInfo(r["id"], r["source"], r["name"], r["checksum"], r["etag"], r["last_modified"],
                           tuple(r["columns"] or ()), r["row_count"], r["status"], r["reason"], utc(r["read_at"]))
                for r in rows]

    # ---- settings ----------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        with self.engine.connect() as conn:
            r = conn.execute(select(S.c.value).where(S.c.key == key)).first()
        return default if r is None else r[0]

    def set_setting(self, key: str, value: Any) -> None:
        upsert(self.engine, S, [{"key": key, "value": value}], ["key"], ["value"])


def _touched(op: Operation) -> list[str]:
    """The people whose recorded accounts `op` changes (a conversion moves the old id's)."""
    if "previous_employee_id" in op.detail:
        return [op.employee_id, str(op.detail["previous_employee_id"])]
    return [op.employee_id]


_INDEX_READ = "SELECT employee_id, row_hash, next_change_at, missing_count, phase, override_kind FROM person"


def _index_entries(rows: Iterable[Sequence[Any]]) -> dict[str, IndexEntry]:
    # next_change_at is empty for almost everyone: parse only the stamps there are.
    return {eid: IndexEntry(h, None if due is None else read_stamp(due), missing, phase, kind is not None)
            for eid, h, due, missing, phase, kind in rows}


_ACCOUNT_READ = ('SELECT "connector", "employee_id", "username", "active", "attributes", "remote_id", "deleted" '
                 'FROM "account" WHERE "employee_id" IN')
_GRANT_READ = 'SELECT "connector", "employee_id", "name" FROM "grant" WHERE "employee_id" IN'


def _records_raw(accounts: Iterable[Sequence[Any]], grants: Iterable[Sequence[Any]]) -> dict[Key, AccountRecord]:
    """_records of the driver's rows (SQLite: JSON as text, booleans as 0/1; PostgreSQL: parsed)."""
    held: dict[Key, set[str]] = {}
    for c, e, n in grants:
        held.setdefault((c, e), set()).add(n)
    out: dict[Key, AccountRecord] = {}
    for c, e, username, active, attributes, remote_id, deleted in accounts:
        if isinstance(attributes, str):
            attributes = json.loads(attributes)
        out[(c, e)] = AccountRecord(c, e, username, bool(active), dict(attributes or {}),
                                    frozenset(held.get((c, e), ())), remote_id, bool(deleted))
    return out


def _records(accounts: Iterable[Any], grants: Iterable[Any]) -> dict[Key, AccountRecord]:
    held: dict[Key, set[str]] = {}
    for c, e, n in grants:
        held.setdefault((c, e), set()).add(n)
    return {
        (r["connector"], r["employee_id"]): AccountRecord(
            r["connector"], r["employee_id"], r["username"], bool(r["active"]), dict(r["attributes"] or {}),
            frozenset(held.get((r["connector"], r["employee_id"]), ())), r["remote_id"], bool(r["deleted"]))
        for r in accounts
    }


def _chunks(eids: Iterable[str] | None, size: int = 900) -> Iterable[list[str] | None]:
    # SQLite caps bound parameters; a None chunk means "everyone".
    if eids is None:
        yield None
        return
    ids = list(eids)
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _state_from_row(r: Any) -> PersonState:
    override = None
    if r["override_kind"]:
        override = Override(OverrideKind(r["override_kind"]), utc(r["override_at"]) or dt.datetime.now(dt.UTC),
                            r["override_reason"] or "", r["override_actor"] or "")
    return PersonState(
        employee_id=r["employee_id"],
        person=person_from_dict(r["data"]) if r["data"] else None,
        first_seen_terminated_at=utc(r["first_seen_terminated_at"]),
        missing_count=r["missing_count"] or 0,
        override=override,
    )


_PERSON_COLUMNS = (
    "employee_id", "data", "row_hash", "status", "first_seen_terminated_at", "missing_count", "override_kind",
    "override_at", "override_reason", "override_actor", "phase", "effective_termination", "next_change_at",
    "updated_at",
)


def _row_from_state(s: PersonSave, at: Any, stamp: Callable[[dt.datetime | None], Any]) -> tuple[Any, ...]:
    """A person row as bulk_write(..., adapted=True) takes it (`at`: updated_at, adapted)."""
    st, lc = s.state, s.lifecycle
    ov = st.override
    person = st.person
    return (
        st.employee_id,
        json_text(person_to_dict(person)) if person is not None else None,
        s.row_hash,
        person.status.value if person is not None else None,
        stamp(st.first_seen_terminated_at),
        st.missing_count,
        ov.kind.value if ov else None,
        stamp(ov.effective_at) if ov else None,
        ov.reason if ov else None,
        ov.actor if ov else None,
        lc.phase.value if lc else None,
        stamp(lc.effective_termination) if lc else None,
        stamp(lc.next_change_at) if lc else None,
        at,
    )
