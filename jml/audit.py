"""The audit trail: append-only, each record chained to the previous by hash.

hash_n = sha256(hash_{n-1} + canonical JSON of record n). The head hash and the count
are kept in their own row, so deleting the newest records (a cut tail) is caught as
surely as editing one. Exports are JSON lines that `verify_lines` checks on their own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from jml.redact import redact
from jml.store.db import utc
from jml.store.repo import Store
from jml.store.tables import AuditHeadRow, AuditRow

AU = AuditRow.__table__  # type: ignore[attr-defined]
AH = AuditHeadRow.__table__  # type: ignore[attr-defined]
GENESIS = "0" * 64


def canonical(seq: int, at: str, kind: str, actor: str, subject: str | None, data: Any) -> str:
    return json.dumps({"seq": seq, "at": at, "kind": kind, "actor": actor, "subject": subject, "data": data},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain(prev_hash: str, record: str) -> str:
    return hashlib.sha256((prev_hash + record).encode()).hexdigest()


def _scrub(value: Any) -> Any:
    """Secrets never reach the trail, even if a caller passes an error text with one."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    count: int
    problem: str = ""


class AuditLog:
    _lock = threading.Lock()

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def append(self, kind: str, data: Any, *, now: dt.datetime, actor: str = "jml", subject: str | None = None) -> int:
        return self.append_many([(kind, data, actor, subject)], now=now)

    def append_many(self, records: Iterable[tuple[str, Any, str, str | None]], *, now: dt.datetime) -> int:
        items = [(k, _scrub(d), a, s) for k, d, a, s in records]
        if not items:
            return 0
        at = now.astimezone(dt.UTC).isoformat()
        for _attempt in range(10):
            try:
                with self._lock, self.engine.begin() as conn:
                    head = conn.execute(select(AH).where(AH.c.id == 1).with_for_update()).mappings().first()
                    count, prev = (head["count"], head["head_hash"]) if head else (0, GENESIS)
                    rows = []
                    for kind, data, actor, subject in items:
                        count += 1
                        h = chain(prev, canonical(count, at, kind, actor, subject, data))
                        rows.append({"seq": count, "at": now, "kind": kind, "actor": actor, "subject": subject,
                                     "data": data, "prev_hash": prev, "hash": h})
                        prev = h
                    for i in range(0, len(rows), 5000):
                        conn.execute(AU.insert(), rows[i : i + 5000])
                    if head:
                        conn.execute(update(AH).where(AH.c.id == 1).values(count=count, head_hash=prev))
                    else:
                        conn.execute(AH.insert().values(id=1, count=count, head_hash=prev))
                    return count
            except IntegrityError:
                continue  # another process appended at the same time: re-read the head
        raise RuntimeError("could not append to the audit trail")

    def records(self, since: dt.datetime | None = None, subject: str | None = None,
                limit: int | None = None) -> Iterator[dict[str, Any]]:
        q = select(AU).order_by(AU.c.seq)
        if since is not None:
            q = q.where(AU.c.at >= since)
        if subject is not None:
            q = q.where(AU.c.subject == subject)
        if limit is not None:
            q = q.order_by(None).order_by(AU.c.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            for r in conn.execute(q).mappings():
                at = utc(r["at"])
                yield {"seq": r["seq"], "at": at.isoformat() if at else None, "kind": r["kind"], "actor": r["actor"],
                       "subject": r["subject"], "data": r["data"], "prev_hash": r["prev_hash"], "hash": r["hash"]}

    def head(self) -> tuple[int, str]:
        with self.engine.connect() as conn:
            r = conn.execute(select(AH.c.count, AH.c.head_hash).where(AH.c.id == 1)).first()
        return (int(r[0]), str(r[1])) if r else (0, GENESIS)

    def verify(self) -> VerifyResult:
        count, head = self.head()
        result = verify_lines(self.records(), expect_count=count, expect_head=head)
        return result


def verify_lines(records: Iterable[dict[str, Any]], *, expect_count: int | None = None,
                 expect_head: str | None = None) -> VerifyResult:
    """Check a chain (from the database or an export). The first record may be any point
    of the chain (an export `--since`): its prev_hash is taken as given."""
    prev: str | None = None
    n = 0
    last_seq = None
    for rec in records:
        n += 1
        seq = rec.get("seq")
        if last_seq is not None and seq != last_seq + 1:
            return VerifyResult(False, n, f"record {seq}: sequence gap after {last_seq} (a record was deleted)")
        if prev is not None and rec.get("prev_hash") != prev:
            return VerifyResult(False, n, f"record {seq}: does not chain to record {last_seq}")
        body = canonical(int(seq or 0), str(rec.get("at")), str(rec.get("kind")), str(rec.get("actor")),
                         rec.get("subject"), rec.get("data"))
        if chain(str(rec.get("prev_hash")), body) != rec.get("hash"):
            return VerifyResult(False, n, f"record {seq}: content does not match its hash (edited)")
        prev, last_seq = str(rec.get("hash")), seq
    if expect_count is not None and last_seq != (expect_count or None):
        return VerifyResult(False, n, f"the chain ends at record {last_seq} but {expect_count} were written "
                                      "(records deleted from the end)")
    if expect_head is not None and n and prev != expect_head:
        return VerifyResult(False, n, "the last record's hash does not match the recorded head")
    return VerifyResult(True, n)
