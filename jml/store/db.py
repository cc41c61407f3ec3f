"""Database engine, migrations and small shared helpers for the store modules."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, DateTime, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from jml.errors import ConfigError
from jml.jsontext import one_shot
from jml.redact import redact
from jml.store.kept import keep_main_thread_connection

_MIGRATIONS = Path(__file__).with_name("migrations")

# What callers outside the store catch: any database error, and the ones that mean the
# database itself is failing (unreachable, dropped connection, locked) rather than the data.
DatabaseError = SQLAlchemyError
TRANSIENT_ERRORS: tuple[type[SQLAlchemyError], ...] = (OperationalError, InterfaceError, DisconnectionError)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite drops tzinfo: every timestamp jml stores is UTC, so attach it on read."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            keep_main_thread_connection(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    except (SQLAlchemyError, ValueError, ImportError) as e:
        raise ConfigError(f"cannot use database URL: {redact(str(e))}", "state.url") from None
    return engine


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    # WAL lets the status page read while workers write; NORMAL sync is durable across
    # process crashes (the case we care about), only not across power loss mid-commit.
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    # Two processes starting on a fresh database at once must not both create the tables:
    # PostgreSQL serialises them with an advisory lock, SQLite with a lock file beside the db.
    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7270001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate-lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def upsert(engine: Engine, table: Any, rows: list[dict[str, Any]], keys: list[str], update: list[str]) -> None:
    """INSERT … ON CONFLICT DO UPDATE, in chunks, on SQLite and PostgreSQL alike."""
    if not rows:
        return
    dialect = engine.dialect.name
    ins: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    stmt = ins.on_conflict_do_update(index_elements=keys, set_={c: getattr(ins.excluded, c) for c in update})
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(stmt, rows[i : i + 5000])


class RawJSON(str):
    """A value already serialised as JSON: bulk_write stores it as is."""


# `json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)`, byte for byte, from
# one encoder: json.dumps with arguments builds a JSONEncoder per call, which for the small
# documents of a bulk write (an operation's detail, a person) costs as much as the encoding.
json_text = one_shot(json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str))


def to_driver(conn: Connection, value: Any, kind: str) -> Any:
    """`value` as bulk_write stores a column of `kind` ("json", "ts", "bool" or "") on this
    connection's database: for rows a caller adapts itself (bulk_write(..., adapted=True))."""
    return _adapt(conn.dialect.name, value, kind)


def _adapt(dialect: str, value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "json":
        if isinstance(value, RawJSON):
            return str(value)
        return json_text(value)
    if kind == "ts" and dialect == "sqlite":
        # The text form SQLAlchemy's SQLite DateTime type writes and parses back.
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if kind == "bool" and dialect == "sqlite":
        return 1 if value else 0
    return value


def _stamp(cache: dict[Any, Any], dialect: str, value: Any) -> Any:
    if value is None:
        return None
    out = cache.get(value)
    if out is None:
        out = cache[value] = _adapt(dialect, value, "ts")
    return out


def _kinds(table: Any, columns: Sequence[str]) -> list[str]:
    key = (table, tuple(columns))
    known = _KINDS.get(key)
    if known is None:
        known = _KINDS[key] = _column_kinds(table, columns)
    return known


_KINDS: dict[tuple[Any, tuple[str, ...]], list[str]] = {}  # (our own tables and column lists: a few dozen)


def _column_kinds(table: Any, columns: Sequence[str]) -> list[str]:
    out = []
    for name in columns:
        t = table.c[name].type
        if isinstance(t, TypeDecorator):  # tables.UTCDateTime: stored as its DateTime impl
            t = t.impl_instance
        if isinstance(t, JSON):
            out.append("json")
        elif isinstance(t, DateTime):
            out.append("ts")
        elif isinstance(t, Boolean):
            out.append("bool")
        else:
            out.append("")
    return out


def bulk_write(conn: Connection, table: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
               conflict: Sequence[str] = (), update: Sequence[str] = (), chunk: int = 5000,
               adapted: bool = False, weigh: int | None = None, chunk_bytes: int = 1 << 20) -> int:
    """Fast executemany straight on the DB-API cursor: for 100k-row writes SQLAlchemy's
    per-row bind processing dominates, so JSON, timestamps and booleans are adapted here,
    once, the way SQLAlchemy's own types store them. `conflict`+`update` make it an upsert
    (INSERT … ON CONFLICT … DO UPDATE, valid on SQLite ≥ 3.24 and PostgreSQL). `adapted`: the
    rows are already in that form (`to_driver`, `json_text`), written as they come. `weigh`: the
    index of a text column whose sizes also bound a batch (`chunk_bytes`): the audit's
    plan_operations records are 5,000 operations each, and 5,000 of them in one batch held a
    100k import's whole plan as JSON text (~0.4 KB a person at the first sync's peak)."""
    dialect = conn.dialect.name
    mark = "?" if dialect == "sqlite" else "%s"
    quoted = [f'"{c}"' for c in columns]
    # Identifiers come from our own table metadata, never from input.
    sql = f'INSERT INTO "{table.name}" ({", ".join(quoted)}) VALUES ({", ".join([mark] * len(columns))})'  # noqa: S608
    if conflict:
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in update)
        target = ", ".join(f'"{c}"' for c in conflict)
        sql += f" ON CONFLICT ({target}) DO " + (f"UPDATE SET {sets}" if update else "NOTHING")
    kinds = _kinds(table, columns)
    plain = adapted or all(k == "" for k in kinds)
    stamps: dict[Any, Any] = {}  # rows of one write mostly share their timestamps: format each once
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    n = 0
    try:
        batch: list[Sequence[Any]] = []
        size = 0
        for row in rows:
            if not plain:
                row = [_stamp(stamps, dialect, v) if k == "ts" else (_adapt(dialect, v, k) if k else v)
                       for v, k in zip(row, kinds, strict=True)]
            batch.append(row)
            if weigh is not None:
                size += len(row[weigh] or "")
            if len(batch) >= chunk or size >= chunk_bytes:
                cursor.executemany(sql, batch)
                n += len(batch)
                batch, size = [], 0
        if batch:
            cursor.executemany(sql, batch)
            n += len(batch)
    finally:
        cursor.close()
    return n


def raw_execute(conn: Connection, sql: str, params: Sequence[Any] | Sequence[Sequence[Any]], *,
                many: bool = False) -> int:
    """One statement (or `many` rows of it) on the DB-API cursor; returns the rows it changed.
    `sql` marks its parameters `?`, rewritten for PostgreSQL's driver. For the engine's
    per-operation writes, where SQLAlchemy's statement handling costs more than the write;
    values in the driver's form (`to_driver`)."""
    if conn.dialect.name != "sqlite":
        sql = _PG_MARKS.get(sql) or _PG_MARKS.setdefault(sql, sql.replace("?", "%s"))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        return int(cursor.rowcount)
    finally:
        cursor.close()


_PG_MARKS: dict[str, str] = {}  # (our own statements: a handful)


def raw_first(conn: Connection, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """One statement on the DB-API cursor (`?` marks, values as `to_driver` gives them), and the
    first row it returns (an INSERT … RETURNING that inserted: its row; one that hit a conflict
    and did nothing: None)."""
    if conn.dialect.name != "sqlite":
        sql = _PG_MARKS.get(sql) or _PG_MARKS.setdefault(sql, sql.replace("?", "%s"))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        return tuple(row) if row is not None else None
    finally:
        cursor.close()


def raw_rows(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    """A plain SELECT on the DB-API cursor, rows as the driver's tuples: reading 100k rows,
    SQLAlchemy's per-row result processing costs more than the query. Timestamps come as the
    driver gives them (SQLite: text) — read them with `read_stamp`."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def read_stamp(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp read by raw_rows, as UTCDateTime would give it: aware, in UTC."""
    if value is None:
        return None
    return utc(dt.datetime.fromisoformat(value) if isinstance(value, str) else value)


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


def chunks(eids: Iterable[str] | None, size: int = 900) -> Iterable[list[str] | None]:
    # SQLite caps bound parameters; a None chunk means "everyone".
    if eids is None:
        yield None
        return
    ids = list(eids)
    for i in range(0, len(ids), size):
        yield ids[i : i + size]
