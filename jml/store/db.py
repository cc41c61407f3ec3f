"""Database engine, migrations and small shared helpers for the store modules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from jml.errors import ConfigError
from jml.redact import redact

_MIGRATIONS = Path(__file__).with_name("migrations")


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
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


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


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
