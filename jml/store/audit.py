"""The audit trail in the database: append-only, each record chained to the previous by
hash (the chain's rules and `verify_lines`: jml/audit.py). The head hash and the count are
kept in their own row, so a cut tail is caught as surely as an edited record."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Text, cast, select

from jml.audit import GENESIS, VerifyResult, canonical, chain, dump, verify_lines
from jml.redact import Redacted, redact_data
from jml.store.db import bulk_write, raw_execute, raw_rows, to_driver, utc
from jml.store.repo import Store
from jml.store.retry import retry_write
from jml.store.tables import AuditHeadRow, AuditRow

__all__ = ["AuditLog", "Records"]

AU = AuditRow.__table__  # type: ignore[attr-defined]
AH = AuditHeadRow.__table__  # type: ignore[attr-defined]
# Every transaction that audits reads and moves the head (on the cursor: AuditLog.append_in).
_HEAD_SQL = 'SELECT "count", "head_hash" FROM "audit_head" WHERE "id" = 1'
_HEAD_PG = _HEAD_SQL + " FOR UPDATE"  # (SQLite has no row locks: its write lock serialises appenders)
_MOVE_HEAD = 'UPDATE "audit_head" SET "count" = ?, "head_hash" = ? WHERE "id" = 1'
Records = Iterable[tuple[str, Any, str, str | None]]
_COLUMNS = ("seq", "at", "kind", "actor", "subject", "data", "prev_hash", "hash")


@dataclass(slots=True)
class _Head:
    count: int
    prev: str


def _rows(source: Records, state: _Head, stored_at: Any, at: str) -> Iterator[tuple[Any, ...]]:
    """The rows as bulk_write(..., adapted=True) takes them (`stored_at`: the timestamp, adapted)."""
    for kind, data, actor, subject in source:
        state.count += 1
        # Redacted by structure, then serialised: a regex over the serialised record could
        # cross from one HR field into the next and leave text that is not JSON (issue 14).
        # (Data its maker redacted already, jml.redact.Redacted, is not walked twice.)
        body = dump(data.data if isinstance(data, Redacted) else redact_data(data))
        h = chain(state.prev, canonical(state.count, at, kind, actor, subject, None, body))
        yield (state.count, stored_at, kind, actor, subject, body, state.prev, h)
        state.prev = h


class AuditLog:
    # One appender at a time in this process. Always taken before a transaction's first write,
    # so it can never wait on a SQLite write lock held by its own process's other thread.
    lock = threading.RLock()

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def append(self, kind: str, data: Any, *, now: dt.datetime, actor: str = "jml", subject: str | None = None) -> int:
        return self.append_many([(kind, data, actor, subject)], now=now)

    def append_many(self, records: Records | Callable[[], Records], *, now: dt.datetime) -> int:
        """Append records in one transaction. Given a function returning a generator, the
        records are made as they are written (a 100k-record plan never sits in memory
        twice) and made again if another process appended first."""
        if not callable(records) and not isinstance(records, (list, tuple)):
            records = list(records)
        def append() -> int:
            # Another process may have appended meanwhile: each attempt re-reads the head.
            source = records() if callable(records) else records
            with self.lock, self.engine.begin() as conn:
                return self.append_in(conn, source, now=now)

        return retry_write(append, "appending to the audit trail")

    def append_in(self, conn: Connection, records: Records, *, now: dt.datetime) -> int:
        """Append inside the caller's transaction (the caller holds `lock`, taken before any
        write of that transaction, and retries the whole transaction on a write conflict)."""
        at = now.astimezone(dt.UTC).isoformat()
        # On the driver's cursor, as the rows themselves (bulk_write): every result the engine
        # records and every event pass audits here, and SQLAlchemy's handling of these two
        # one-row statements cost more than SQLite running them.
        found = raw_rows(conn, _HEAD_PG if conn.dialect.name == "postgresql" else _HEAD_SQL)
        head = found[0] if found else None
        state = _Head(head[0], head[1]) if head else _Head(0, GENESIS)
        if not bulk_write(conn, AU, _COLUMNS, _rows(records, state, to_driver(conn, now, "ts"), at), adapted=True,
                          weigh=_COLUMNS.index("data")):
            return state.count
        if head:
            raw_execute(conn, _MOVE_HEAD, (state.count, state.prev))
        else:
            conn.execute(AH.insert().values(id=1, count=state.count, head_hash=state.prev))
        return state.count

    def records(self, since: dt.datetime | None = None, subject: str | None = None,
                limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The records, oldest first. A row whose data is not JSON (written before issue 14's
        fix, or edited) comes back with its text as `data` and an `error`, never an exception."""
        cols = [c for c in AU.c if c.name != "data"]
        # The stored text, parsed here: the JSON column's own decoder would raise mid-iteration.
        q = select(*cols, cast(AU.c.data, Text).label("data")).order_by(AU.c.seq)
        if since is not None:
            q = q.where(AU.c.at >= since)
        if subject is not None:
            q = q.where(AU.c.subject == subject)
        if limit is not None:
            q = q.order_by(None).order_by(AU.c.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            for r in conn.execute(q).mappings():
                at = utc(r["at"])
                rec = {"seq": r["seq"], "at": at.isoformat() if at else None, "kind": r["kind"], "actor": r["actor"],
                       "subject": r["subject"], "data": r["data"], "prev_hash": r["prev_hash"], "hash": r["hash"]}
                if r["data"] is not None:
                    try:
                        rec["data"] = json.loads(r["data"])
                    except ValueError as e:
                        rec["error"] = f"data is not JSON ({e.msg} at character {e.pos})" \
                            if isinstance(e, json.JSONDecodeError) else "data is not JSON"
                yield rec

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            r = conn.execute(select(AH.c.count, AH.c.head_hash).where(AH.c.id == 1)).first()
        return (int(r[0]), str(r[1])) if r else (0, GENESIS)

    def verify(self) -> VerifyResult:
        count, head = self.head()
        result = verify_lines(self.records(), expect_count=count, expect_head=head)
        return result
