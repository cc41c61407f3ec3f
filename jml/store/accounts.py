"""The accounts jml has pushed and the grants they hold, as jml last recorded them: read before
every chain and by the planner, folded forward by every group-committed result (plan.apply,
persisted). Part of the Store (jml/store/repo.py), whose transactions these join."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select

from jml import plan as planner
from jml.model import AccountRecord, Action, Operation
from jml.store.db import bulk_write, chunks, utc
from jml.store.tables import AccountRow, GrantRow, GroupRow

__all__ = ["AccountRepo", "AccountSummary", "Key"]

A = AccountRow.__table__  # type: ignore[attr-defined]
G = GrantRow.__table__  # type: ignore[attr-defined]
GR = GroupRow.__table__  # type: ignore[attr-defined]
Key = tuple[str, str]

# Statements the engine runs for every operation, built once: building a Core statement and
# its cache key costs more than SQLite executing it (measured: 350 µs built, 130 µs reused).
# (The accounts the engine reads, it reads on the driver's cursor: AccountRepo._accounts_of.)
# A manager's id, once per manager a connector meets (350 µs a statement built per call).
_REMOTE_ID = select(A.c.remote_id).where(A.c.connector == bindparam("k_connector"),
                                         A.c.employee_id == bindparam("k_eid"), A.c.deleted.is_(False))
_DELETE_ACCOUNT = delete(A).where(A.c.connector == bindparam("k_connector"), A.c.employee_id == bindparam("k_eid"))
_DELETE_GRANTS = delete(G).where(G.c.connector == bindparam("k_connector"), G.c.employee_id == bindparam("k_eid"))
_DELETE_GRANT = delete(G).where(G.c.connector == bindparam("k_connector"), G.c.employee_id == bindparam("k_eid"),
                                G.c.name == bindparam("k_name"))
_ANY_ACCOUNT = select(A.c.employee_id).limit(1)
_ACCOUNT_COLUMNS = ("connector", "employee_id", "username", "active", "deleted", "attributes", "remote_id",
                    "created_at", "updated_at")
_GRANT_COLUMNS = ("connector", "employee_id", "name", "rule", "since")


@dataclass(frozen=True, slots=True)
class AccountSummary:
    username: str
    active: bool
    deleted: bool
    created_at: dt.datetime | None


class AccountRepo:
    """The accounts part of the Store."""

    engine: Engine

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
            for chunk in chunks(ids):
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

    def account_summaries(self) -> dict[Key, AccountSummary]:
        """Every recorded account, deleted ones included, by (connector, employee_id)."""
        with self.engine.connect() as conn:
            return {(r["connector"], r["employee_id"]): AccountSummary(r["username"], bool(r["active"]),
                                                                         bool(r["deleted"]), utc(r["created_at"]))
                    for r in conn.execute(select(A)).mappings()}

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


def _touched(op: Operation) -> list[str]:
    """The people whose recorded accounts `op` changes (a conversion moves the old id's)."""
    if "previous_employee_id" in op.detail:
        return [op.employee_id, str(op.detail["previous_employee_id"])]
    return [op.employee_id]


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
