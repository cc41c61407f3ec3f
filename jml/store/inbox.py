"""The webhook inbox: events stored before the HTTP answer (deduplicated by their id),
processed after it (jml/events.py), or set aside with their error (quarantined)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Integer, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from jml import metrics
from jml.store.db import utc
from jml.store.repo import Store
from jml.store.tables import WebhookEventRow

__all__ = ["Inbox", "InboxHealth", "InboxItem"]

W = WebhookEventRow.__table__  # type: ignore[attr-defined]
_FINISH = update(W).where(W.c.id == bindparam("k_id")).values(processed_at=bindparam("processed_at"),
                                                             outcome=bindparam("outcome"))
_OPEN = (W.c.processed_at.is_(None), W.c.quarantined_at.is_(None))  # waiting to be processed
# Run on every pass of the event processor (a leaver wave: one pass every 0.1 s): built once.
_PENDING = (select(W.c.id, W.c.source, W.c.occurred_at, W.c.payload).where(*_OPEN)
            .order_by(W.c.occurred_at, W.c.received_at, W.c.id).limit(bindparam("limit", type_=Integer)))
_WAITING = select(func.count(), func.min(W.c.received_at)).where(*_OPEN)
_QUARANTINED = select(func.count()).where(W.c.quarantined_at.is_not(None))
# RETURNING says whether the row went in: PostgreSQL's driver reports no rowcount (-1) for an
# INSERT ... ON CONFLICT DO NOTHING, and every event counted as a duplicate that woke nothing.
_INSERT = {"postgresql": postgresql.insert(W).on_conflict_do_nothing(index_elements=["id"]).returning(W.c.id),
           "sqlite": sqlite.insert(W).on_conflict_do_nothing(index_elements=["id"]).returning(W.c.id)}


class OktaEventLike(Protocol):  # jml.webhooks.OktaEvent
    @property
    def uuid(self) -> str: ...
    @property
    def published(self) -> dt.datetime: ...
    @property
    def raw(self) -> Mapping[str, Any]: ...


class HrEventLike(Protocol):  # jml.webhooks.HrEvent
    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> dt.datetime: ...
    @property
    def person(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: str
    source: str
    occurred_at: dt.datetime
    payload: Mapping[str, Any]


class Inbox:
    """webhook_event rows: stored before the HTTP answer, processed after it."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        stmt = _INSERT[self.engine.dialect.name]
        new = 0
        with self.engine.begin() as conn:
            for row in rows:
                new += conn.execute(stmt, row).first() is not None
        return new

    def add_okta(self, events: Iterable[OktaEventLike], now: dt.datetime) -> int:
        """Store new events (dedup by uuid); returns how many were new."""
        return self._insert([{"id": f"okta:{e.uuid}", "source": "okta", "received_at": now,
                              "occurred_at": e.published, "payload": dict(e.raw)} for e in events])

    def add_hr(self, ev: HrEventLike, now: dt.datetime) -> bool:
        return self._insert([{"id": f"hr:{ev.id}", "source": "hr", "received_at": now, "occurred_at": ev.occurred_at,
                              "payload": {"id": ev.id, "type": ev.type, "occurred_at": ev.occurred_at.isoformat(),
                                          "person": dict(ev.person)}}]) == 1

    def pending(self, limit: int = 2000) -> list[InboxItem]:
        with self.engine.connect() as conn:
            return [InboxItem(r[0], r[1], utc(r[2]) or dt.datetime.min.replace(tzinfo=dt.UTC), r[3] or {})
                    for r in conn.execute(_PENDING, {"limit": limit})]

    def finish(self, outcomes: Mapping[str, str], now: dt.datetime) -> None:
        if outcomes:
            with self.engine.begin() as conn:
                conn.execute(_FINISH, [{"k_id": i, "processed_at": now, "outcome": o[:200]}
                                       for i, o in outcomes.items()])

    def outcomes(self) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(W.c.id, W.c.outcome))}

    def still_open(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 900):
                out.update(r[0] for r in conn.execute(select(W.c.id).where(W.c.id.in_(wanted[i:i + 900]), *_OPEN)))
        return out

    def quarantine(self, item_id: str, error: str, now: dt.datetime) -> None:
        """Set one event aside with its error: it is no longer pending, and it is not done."""
        with self.engine.begin() as conn:
            conn.execute(update(W).where(W.c.id == item_id).values(quarantined_at=now, error=error[:2000],
                                                                   outcome="quarantined"))

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        q = (select(W.c.id, W.c.source, W.c.received_at, W.c.occurred_at, W.c.quarantined_at, W.c.error)
             .where(W.c.quarantined_at.is_not(None)).order_by(W.c.quarantined_at.desc(), W.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [{"id": r[0], "source": r[1], "received_at": _iso(utc(r[2])), "occurred_at": _iso(utc(r[3])),
                     "quarantined_at": _iso(utc(r[4])), "error": r[5]} for r in conn.execute(q)]

    def health(self, now: dt.datetime) -> InboxHealth:
        """How many events wait, how long the oldest has waited, how many are quarantined;
        the gauges are set from it."""
        with self.engine.connect() as conn:
            n, oldest = conn.execute(_WAITING).one()
            quarantined = conn.execute(_QUARANTINED).scalar_one()
        first = utc(oldest) if n else None
        age = max(0.0, (now - first).total_seconds()) if first is not None else 0.0
        h = InboxHealth(int(n), first, age, int(quarantined))
        metrics.events_pending.set(h.pending)
        metrics.events_oldest_pending.set(h.oldest_pending_seconds)
        metrics.events_quarantined.set(h.quarantined)
        return h


@dataclass(frozen=True, slots=True)
class InboxHealth:
    pending: int
    oldest_received_at: dt.datetime | None
    oldest_pending_seconds: float
    quarantined: int


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None
