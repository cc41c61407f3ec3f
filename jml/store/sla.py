"""The deprovision SLA clocks: one per leaver per connector (their rules: jml/sla.py).

Reading and opening clocks, the few writes everyone shares (a field set on an open clock,
a breach marked once, a clock stopped as verified), and the leaver operations the clocks
are judged against."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, or_, select, update

from jml.model import Priority
from jml.store.db import raw_execute, raw_first, to_driver, utc
from jml.store.tables import OperationRow, PersonRow, SlaClockRow

__all__ = ["OPEN_STATES", "Clock", "ClockView", "SlaClocks"]

C = SlaClockRow.__table__  # type: ignore[attr-defined]
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
P = PersonRow.__table__  # type: ignore[attr-defined]
# Run for every verified clock (600 in a wave of 200 leavers on three connectors): on the
# driver's cursor (db.raw_execute), as the engine's claims and done marks.
_STOP_VERIFIED = ('UPDATE "sla_clock" SET "verified_at" = ?, "predicted_breach" = ?, "last_check" = ? '
                  'WHERE "id" = ? AND "verified_at" IS NULL')

# Run on every event pass that has leavers (built once: an IN built per call cost ~0.4 ms).
_EFFECTIVE_OF = select(P.c.employee_id, P.c.effective_termination).where(
    P.c.employee_id.in_(bindparam("eids", expanding=True)))
_CLOCKS_OF = select(C).where(C.c.employee_id.in_(bindparam("eids", expanding=True)))
# RETURNING says whether a clock was opened (PostgreSQL's driver reports no rowcount for an
# INSERT ... ON CONFLICT DO NOTHING: no clock counted or logged as started there).
# Opening a clock is one row per leaver and connector on every event pass: on the driver's cursor
# (SQLAlchemy's statement handling cost ~10x the insert). A clock opened meanwhile by another path
# (the same person, connector and start) is a conflict: nothing inserted, no row returned.
_OPEN_COLUMNS = ("connector", "employee_id", "started_at", "deadline", "breached", "predicted_breach", "last_check")
_OPEN_KINDS = ("", "", "ts", "ts", "bool", "bool", "")
_OPEN_CLOCK = ('INSERT INTO "sla_clock" ("connector", "employee_id", "started_at", "deadline", "breached", '
               '"predicted_breach", "last_check") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING "id"')
OPEN_STATES = ("pending", "running", "held")


@dataclass(frozen=True, slots=True)
class Clock:
    id: int
    connector: str
    employee_id: str
    started_at: dt.datetime
    deadline: dt.datetime
    verified_at: dt.datetime | None
    breached: bool
    predicted_breach: bool
    last_check: str | None
    breach_cause: str | None = None

    @property
    def cancelled(self) -> bool:
        return (self.last_check or "").startswith("cancelled|")


@dataclass(frozen=True, slots=True)
class ClockView:
    """A clock as the pages show it: read as stored (an old row may lack a time)."""

    connector: str
    employee_id: str
    started_at: dt.datetime | None
    deadline: dt.datetime | None
    verified_at: dt.datetime | None
    breached: bool
    predicted_breach: bool
    breach_cause: str | None = None

    def late(self, now: dt.datetime) -> bool:
        if self.breached:
            return True
        if self.deadline is None:
            return False
        return (self.verified_at or now) > self.deadline

    def state(self, now: dt.datetime) -> str:
        if self.verified_at is not None:
            return "verified"
        return "breached" if self.late(now) else "in_progress"

    @property
    def duration(self) -> float | None:
        if self.verified_at is None or self.started_at is None:
            return None
        return max(0.0, (self.verified_at - self.started_at).total_seconds())


def _view(r: Any) -> ClockView:
    return ClockView(r["connector"], r["employee_id"], utc(r["started_at"]), utc(r["deadline"]), utc(r["verified_at"]),
                     bool(r["breached"]), bool(r["predicted_breach"]), r.get("breach_cause"))


def _clock(r: Any) -> Clock:
    started = utc(r["started_at"]) or dt.datetime.min.replace(tzinfo=dt.UTC)
    return Clock(r["id"], r["connector"], r["employee_id"], started, utc(r["deadline"]) or started,
                 utc(r["verified_at"]), bool(r["breached"]), bool(r["predicted_breach"]), r["last_check"],
                 r.get("breach_cause"))


def _not_cancelled() -> Any:
    return func.coalesce(C.c.last_check, "").not_like("cancelled|%")


# The verifier's reads of each batch of leavers (built once, as _CLOCKS_OF above).
_OPEN_CLOCKS_OF = (select(C).where(C.c.employee_id.in_(bindparam("eids", expanding=True)), C.c.verified_at.is_(None),
                                   _not_cancelled()).order_by(C.c.started_at, C.c.id))
_BUSY_LEAVERS = select(O.c.connector, O.c.employee_id).where(
    O.c.employee_id.in_(bindparam("eids", expanding=True)), O.c.priority == int(Priority.LEAVER),
    O.c.state.in_(OPEN_STATES)).distinct()


def _chunks(ids: Sequence[str], size: int = 900) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), size):  # SQLite's bound-parameter cap
        yield ids[i : i + size]


class SlaClocks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- clocks ------------------------------------------------------------------
    def clocks(self, *, open_only: bool = False, started_from: dt.datetime | None = None,
               started_before: dt.datetime | None = None) -> list[Clock]:
        q = select(C).order_by(C.c.started_at, C.c.id)
        if open_only:
            q = q.where(C.c.verified_at.is_(None), _not_cancelled())
        if started_from is not None:
            q = q.where(C.c.started_at >= started_from)
        if started_before is not None:
            q = q.where(C.c.started_at < started_before)
        with self.engine.connect() as conn:
            return [_clock(r) for r in conn.execute(q).mappings()]

    # ---- what the pages show (cancelled clocks never: the person is no longer a leaver) ----
    def open_or_verified_since(self, since: dt.datetime, limit: int) -> list[ClockView]:
        """Clocks not yet verified, and those verified since `since`, soonest deadline first."""
        q = (select(C).where(or_(C.c.verified_at.is_(None), C.c.verified_at >= since), _not_cancelled())
             .order_by(C.c.deadline).limit(limit))
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(q).mappings()]

    def missed_since(self, since: dt.datetime, now: dt.datetime, limit: int) -> list[ClockView]:
        """Deadlines since `since` that were missed: flagged, verified late, or overdue now."""
        late = or_(C.c.breached.is_(True), C.c.verified_at > C.c.deadline,
                   (C.c.verified_at.is_(None)) & (C.c.deadline < now))
        q = select(C).where(C.c.deadline >= since, late, _not_cancelled()).order_by(C.c.deadline.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(q).mappings()]

    def latest_verified(self, limit: int) -> list[ClockView]:
        """The most recently verified clocks, newest first."""
        q = select(C).where(C.c.verified_at.is_not(None)).order_by(C.c.verified_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(q).mappings()]

    def views_of(self, employee_id: str) -> list[ClockView]:
        """One person's clocks, oldest start first."""
        q = select(C).where(C.c.employee_id == employee_id, _not_cancelled()).order_by(C.c.started_at)
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(q).mappings()]

    def leaver_op_counts(self, employee_id: str, created_from: dt.datetime | None) -> dict[tuple[str, str], int]:
        """(connector, state) -> this person's leaver operations, created from `created_from`."""
        q = select(O.c.connector, O.c.state, func.count()).where(
            O.c.employee_id == employee_id, O.c.priority == int(Priority.LEAVER))
        if created_from is not None:
            q = q.where(O.c.created_at >= created_from)
        with self.engine.connect() as conn:
            return {(c, s): int(n) for c, s, n in conn.execute(q.group_by(O.c.connector, O.c.state))}

    def open_clocks_of(self, eids: Sequence[str]) -> list[Clock]:
        """These people's open clocks, oldest first."""
        with self.engine.connect() as conn:
            return [_clock(r) for chunk in _chunks(eids) for r in conn.execute(
                _OPEN_CLOCKS_OF, {"eids": chunk}).mappings()]

    def history(self, eids: Sequence[str], *, terminations: bool = True,
                ) -> tuple[dict[str, dt.datetime | None], dict[tuple[str, str], list[Clock]]]:
        """For opening clocks: each person's recorded effective termination (unless
        `terminations` is false: the caller knows them), and every clock they already have, by
        (connector, employee_id)."""
        known: dict[str, dt.datetime | None] = {}
        existing: dict[tuple[str, str], list[Clock]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(eids):
                for eid, eff in conn.execute(_EFFECTIVE_OF, {"eids": chunk}) if terminations else ():
                    known[eid] = utc(eff)
                for r in conn.execute(_CLOCKS_OF, {"eids": chunk}).mappings():
                    c = _clock(r)
                    existing.setdefault((c.connector, c.employee_id), []).append(c)
        return known, existing

    def open(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert these clocks in one transaction; those opened concurrently by another path
        (a webhook and an export at once) are left as they are. Returns the rows inserted."""
        opened = []
        with self.engine.begin() as conn:
            for row in rows:
                values = [to_driver(conn, row[c], k) for c, k in zip(_OPEN_COLUMNS, _OPEN_KINDS, strict=True)]
                if raw_first(conn, _OPEN_CLOCK, values) is not None:
                    opened.append(row)
        return opened

    def update(self, clock_id: int, *, only_open: bool = True, **values: Any) -> bool:
        q = update(C).where(C.c.id == clock_id)
        if only_open:
            q = q.where(C.c.verified_at.is_(None))
        with self.engine.begin() as conn:
            return bool(conn.execute(q.values(**values)).rowcount)

    def mark_breached(self, clock_id: int, cause: str | None = None) -> bool:
        """True for the caller that marked it (a breach is counted once), with its cause."""
        with self.engine.begin() as conn:
            return bool(conn.execute(update(C).where(C.c.id == clock_id, C.c.breached.is_(False))
                                     .values(breached=True, breach_cause=cause)).rowcount)

    @staticmethod
    def stop_verified(tx: Connection, clock_id: int, now: dt.datetime, last_check: str) -> bool:
        """Stop an open clock as verified, inside the caller's transaction (store.transaction());
        False when another path stopped it first."""
        return bool(raw_execute(tx, _STOP_VERIFIED, (to_driver(tx, now, "ts"), to_driver(tx, False, "bool"),
                                                     last_check, clock_id)))

    # ---- what the clocks are judged against --------------------------------------
    def phase_and_termination(self, employee_id: str) -> tuple[str | None, dt.datetime | None]:
        """A person's recorded lifecycle phase and effective termination."""
        with self.engine.connect() as conn:
            r = conn.execute(select(P.c.phase, P.c.effective_termination)
                             .where(P.c.employee_id == employee_id)).first()
        return (r[0], utc(r[1])) if r else (None, None)

    def phases(self, eids: Sequence[str]) -> dict[str, str | None]:
        with self.engine.connect() as conn:
            return {eid: phase for chunk in _chunks(eids)
                    for eid, phase in conn.execute(select(P.c.employee_id, P.c.phase).where(
                        P.c.employee_id.in_(chunk)))}

    def leaver_ops(self, connector: str, employee_id: str, states: Iterable[str]) -> int:
        q = select(func.count()).select_from(O).where(
            O.c.connector == connector, O.c.employee_id == employee_id, O.c.priority == int(Priority.LEAVER),
            O.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def open_leaver_ops(self) -> list[tuple[str, str, int, str]]:
        """(connector, employee_id, operation id, state) of every leaver operation not finished."""
        q = select(O.c.connector, O.c.employee_id, O.c.id, O.c.state).where(
            O.c.priority == int(Priority.LEAVER), O.c.state.in_(list(OPEN_STATES)))
        with self.engine.connect() as conn:
            return [(c, e, int(i), s) for c, e, i, s in conn.execute(q)]

    def busy_leavers(self, eids: Sequence[str]) -> set[tuple[str, str]]:
        """(connector, employee_id) of these people with leaver work still open."""
        with self.engine.connect() as conn:
            return {(c, e) for chunk in _chunks(eids) for c, e in conn.execute(_BUSY_LEAVERS, {"eids": chunk})}

    def leaver_done_since(self, connector: str, employee_id: str, since: dt.datetime) -> bool:
        q = select(func.count()).select_from(O).where(
            O.c.connector == connector, O.c.employee_id == employee_id,
            O.c.priority == int(Priority.LEAVER), O.c.state == "done", O.c.done_at >= since)
        with self.engine.connect() as conn:
            return bool(conn.execute(q).scalar_one())
