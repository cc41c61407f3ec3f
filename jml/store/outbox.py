"""Plans and the durable outbox of operations, and the workers' lease.

A plan's operations are written in one transaction before anything is pushed. A held
plan's operations are stored as `held` (never claimable) until approved. Workers take
operations `pending -> running -> done | dead`; a crash leaves `running` rows, which the
next lease holder puts back to `pending` (connectors are idempotent, so re-applying is safe).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, delete, func, or_, select, update

from jml.model import Action, Operation, Priority
from jml.store.db import bulk_write, json_text, raw_execute, to_driver, utc
from jml.store.repo import Store
from jml.store.tables import LeaseRow, OperationRow, PlanRow

_OP_COLUMNS = ("plan_id", "connector", "employee_id", "action", "detail", "priority", "state", "attempts",
               "created_at", "updated_at")
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
PL = PlanRow.__table__  # type: ignore[attr-defined]
L = LeaseRow.__table__  # type: ignore[attr-defined]

# Run for every operation: built once (see the statements atop repo.py).
_CLAIM = update(O).where(O.c.id.in_(bindparam("ids", expanding=True)), O.c.state == "pending").values(
    state="running", updated_at=bindparam("now"))
# Every event pass asks these (a leaver wave: a pass every 0.1 s): built once, as the claims.
_RECENT_LEAVERS = (select(func.count(func.distinct(O.c.employee_id))).select_from(O.join(PL, O.c.plan_id == PL.c.id))
                   .where(PL.c.origin.in_(bindparam("origins", expanding=True)), PL.c.created_at >= bindparam("since"),
                          PL.c.state.in_(["queued", "done"]),
                          O.c.action.in_([Action.DEACTIVATE.value, Action.DELETE.value]), O.c.state != "cancelled"))
_CANCEL_ALL = update(O).where(O.c.employee_id.in_(bindparam("eids", expanding=True)), O.c.state == "pending").values(
    state="cancelled", updated_at=bindparam("now"))
_CANCEL_QUEUED = update(O).where(O.c.employee_id.in_(bindparam("eids", expanding=True)), O.c.state == "pending",
                                 O.c.priority != int(Priority.LEAVER)).values(state="cancelled",
                                                                               updated_at=bindparam("now"))
_PENDING_AFTER = (select(O).where(O.c.state == "pending", O.c.id > bindparam("after"))
                  .order_by(O.c.priority, O.c.id).limit(bindparam("limit", type_=Integer)))
# The engine claims one operation at a time and records each done: on the driver's cursor
# (db.raw_execute), as SQLAlchemy's statement handling cost more than SQLite's write (an
# expanding IN rendered per claim was 4.6% of a leaver wave's CPU, the compiled `id = ?` 3.4%).
_CLAIM_ONE = 'UPDATE "operation" SET "state" = \'running\', "updated_at" = ? WHERE "id" = ? AND "state" = \'pending\''
_DONE = ('UPDATE "operation" SET "state" = \'done\', "done_at" = ?, "updated_at" = ?, "attempts" = "attempts" + 1 '
         'WHERE "id" = ?')


@dataclass(frozen=True, slots=True)
class QueuedOp:
    id: int
    plan_id: str
    op: Operation
    attempts: int
    state: str
    last_error: str | None = None
    updated_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class PlanInfo:
    id: str
    state: str
    origin: str
    reasons: list[str]
    summary: dict[str, int]
    created_at: dt.datetime | None
    policy_hash: str | None
    decided_by: str | None
    export_id: int | None = None


def _op_from_row(r: Any) -> QueuedOp:
    op = Operation(r["connector"], Action(r["action"]), r["employee_id"], dict(r["detail"] or {}),
                   Priority(r["priority"]))
    return QueuedOp(r["id"], r["plan_id"], op, r["attempts"], r["state"], r["last_error"], utc(r["updated_at"]))


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    # ---- plans -------------------------------------------------------------------
    def save_plan(self, plan_id: str, ops: Sequence[Operation], *, held: bool, origin: str, reasons: list[str],
                  summary: dict[str, int], policy_hash: str | None, export_id: int | None, now: dt.datetime,
                  conn: Connection | None = None) -> None:
        if conn is None:
            with self.engine.begin() as c:
                self.save_plan(plan_id, ops, held=held, origin=origin, reasons=reasons, summary=summary,
                               policy_hash=policy_hash, export_id=export_id, now=now, conn=c)
            return
        state = "held" if held else ("queued" if ops else "done")
        op_state = "held" if held else "pending"
        # Rows in the driver's form (a plan can hold 288k operations): the detail encoded by one
        # shared encoder, the timestamp once, the enums by their values.
        at = to_driver(conn, now, "ts")
        actions = {a: a.value for a in Action}
        rows = ((plan_id, o.connector, o.employee_id, actions[o.action],
                 None if o.detail is None else json_text(o.detail), int(o.priority),
                 op_state, 0, at, at) for o in ops)
        if held and origin == "export":
            # A newer held plan supersedes an older one (README "Reliability": held plans).
            old = [r[0] for r in conn.execute(select(PL.c.id).where(PL.c.state == "held", PL.c.origin == "export"))]
            if old:
                conn.execute(update(PL).where(PL.c.id.in_(old)).values(state="superseded", decided_at=now))
                conn.execute(update(O).where(O.c.plan_id.in_(old)).values(state="cancelled", updated_at=now))
        conn.execute(PL.insert().values(id=plan_id, created_at=now, state=state, origin=origin, reasons=reasons,
                                        summary=summary, policy_hash=policy_hash, export_id=export_id))
        bulk_write(conn, O, _OP_COLUMNS, rows, adapted=True)

    def plan(self, plan_id: str) -> PlanInfo | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(PL).where(PL.c.id == plan_id)).mappings().first()
        return _plan_info(r) if r else None

    def plans(self, states: Iterable[str] | None = None, limit: int = 50) -> list[PlanInfo]:
        q = select(PL).order_by(PL.c.created_at.desc()).limit(limit)
        if states is not None:
            q = q.where(PL.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return [_plan_info(r) for r in conn.execute(q).mappings()]

    def plan_ops(self, plan_id: str) -> list[QueuedOp]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(O).where(O.c.plan_id == plan_id).order_by(O.c.id)).mappings().all()
        return [_op_from_row(r) for r in rows]

    def decide(self, plan_id: str, *, approve: bool, actor: str, now: dt.datetime) -> str | None:
        """Approve or discard a held plan. Returns a refusal reason, or None on success."""
        with self.engine.begin() as conn:
            r = conn.execute(select(PL).where(PL.c.id == plan_id)).mappings().first()
            if r is None:
                return f"no plan {plan_id}"
            if r["state"] != "held":
                return f"plan {plan_id} is {r['state']}, not held"
            if approve:
                newer = conn.execute(select(func.count()).select_from(PL).where(
                    PL.c.origin == "export", PL.c.created_at > r["created_at"],
                    PL.c.state.in_(["queued", "done"]))).scalar_one()
                if newer:
                    return f"plan {plan_id} is no longer current: a newer export has been planned since"
            conn.execute(update(PL).where(PL.c.id == plan_id).values(
                state="queued" if approve else "discarded", decided_by=actor, decided_at=now))
            conn.execute(update(O).where(O.c.plan_id == plan_id, O.c.state == "held").values(
                state="pending" if approve else "cancelled", updated_at=now))
        return None

    def finish_plans(self, now: dt.datetime) -> list[str]:
        """Mark queued plans with no open operations as done; returns their ids."""
        with self.engine.begin() as conn:
            open_ops = select(O.c.plan_id).where(O.c.state.in_(["pending", "running"])).distinct()
            ids = [r[0] for r in conn.execute(select(PL.c.id).where(PL.c.state == "queued", PL.c.id.not_in(open_ops)))]
            if ids:
                conn.execute(update(PL).where(PL.c.id.in_(ids)).values(state="done", decided_at=func.coalesce(
                    PL.c.decided_at, now)))
        return ids

    # ---- operations --------------------------------------------------------------
    def pending(self, *, limit: int = 5000, exclude: Iterable[int] = (), paused: Iterable[str] = (),
                after_id: int | None = None, plan_ids: Iterable[str] | None = None) -> list[QueuedOp]:
        """Pending operations, leavers first; `after_id` reads only ones newer than that,
        `plan_ids` only those of these plans."""
        paused, ex = list(paused), list(exclude)
        if after_id is not None and plan_ids is None and not paused and not ex:
            # The engine's read of what is new since its last (every plan announced): built once.
            with self.engine.connect() as conn:
                return [_op_from_row(r) for r in conn.execute(_PENDING_AFTER, {"after": after_id, "limit": limit})
                        .mappings()]
        q = select(O).where(O.c.state == "pending")
        if after_id is not None:
            q = q.where(O.c.id > after_id)
        if plan_ids is not None:
            q = q.where(O.c.plan_id.in_(list(plan_ids)))
        if paused:
            q = q.where(O.c.connector.not_in(paused))
        if ex and len(ex) < 900:
            q = q.where(O.c.id.not_in(ex))
        q = q.order_by(O.c.priority, O.c.id).limit(limit + (len(ex) if len(ex) >= 900 else 0))
        exs = set(ex)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [_op_from_row(r) for r in rows if r["id"] not in exs][:limit]

    def mark_running(self, ids: Sequence[int], now: dt.datetime) -> int:
        """Claim pending operations; returns how many were still pending (a cancelled one is not)."""
        with self.engine.begin() as conn:
            if len(ids) == 1:
                return raw_execute(conn, _CLAIM_ONE, (to_driver(conn, now, "ts"), ids[0]))
            return int(conn.execute(_CLAIM, {"ids": list(ids), "now": now}).rowcount)

    def mark_done(self, op_id: int, now: dt.datetime, conn: Any = None) -> None:
        self.mark_done_many([(op_id, now)], conn)

    def mark_done_many(self, done: Sequence[tuple[int, dt.datetime]], conn: Any = None) -> None:
        if conn is None:
            with self.engine.begin() as c:
                self.mark_done_many(done, c)
            return
        if done:
            raw_execute(conn, _DONE, [(at, at, i) for i, at in ((i, to_driver(conn, at, "ts")) for i, at in done)],
                        many=True)

    def mark_failed(self, op_id: int, error: str, *, dead: bool, attempts: int, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(O).where(O.c.id == op_id).values(
                state="dead" if dead else "pending", last_error=error[:2000], attempts=O.c.attempts + attempts,
                updated_at=now))

    def release(self, ids: Sequence[int], now: dt.datetime) -> None:
        """Put claimed-but-unfinished operations back (graceful shutdown)."""
        if ids:
            with self.engine.begin() as conn:
                conn.execute(update(O).where(O.c.id.in_(list(ids)), O.c.state == "running").values(
                    state="pending", updated_at=now))

    def recover(self, now: dt.datetime) -> int:
        """After a crash: every `running` row goes back to `pending` (the caller holds the lease)."""
        with self.engine.begin() as conn:
            return int(conn.execute(update(O).where(O.c.state == "running").values(state="pending",
                                                                                    updated_at=now)).rowcount)

    def retry(self, op_id: int | None, now: dt.datetime) -> int:
        q = update(O).where(O.c.state == "dead")
        if op_id is not None:
            q = q.where(O.c.id == op_id)
        with self.engine.begin() as conn:
            n = int(conn.execute(q.values(state="pending", updated_at=now)).rowcount)
            if n:
                held_plans = select(O.c.plan_id).where(O.c.state == "pending").distinct()
                conn.execute(update(PL).where(PL.c.state == "done", PL.c.id.in_(held_plans)).values(state="queued"))
        return n

    def person_history(self, employee_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """One person's operations, oldest first, with their plan (origin, state, who decided,
        when) and how long each took: the person's history page (issue 17)."""
        q = (select(O, PL.c.origin, PL.c.state.label("plan_state"), PL.c.decided_by, PL.c.decided_at,
                    PL.c.created_at.label("plan_created_at"), PL.c.reasons)
             .select_from(O.outerjoin(PL, PL.c.id == O.c.plan_id))
             .where(O.c.employee_id == employee_id).order_by(O.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = []
        for r in reversed(rows):
            out.append({"operation_id": r["id"], "plan_id": r["plan_id"], "connector": r["connector"],
                        "action": r["action"], "detail": dict(r["detail"] or {}), "state": r["state"],
                        "attempts": r["attempts"], "error": r["last_error"], "created_at": utc(r["created_at"]),
                        "done_at": utc(r["done_at"]), "updated_at": utc(r["updated_at"]), "origin": r["origin"],
                        "plan_state": r["plan_state"], "decided_by": r["decided_by"],
                        "decided_at": utc(r["decided_at"]), "plan_created_at": utc(r["plan_created_at"]),
                        "reasons": list(r["reasons"] or [])})
        return out

    def discard_dead(self, op_id: int, now: dt.datetime) -> int:
        """Give up on one dead letter (an operator's decision: the cause is handled elsewhere);
        it leaves the dead letters as `cancelled`. Returns 1, or 0 when it is not dead."""
        q = update(O).where(O.c.state == "dead", O.c.id == op_id)
        with self.engine.begin() as conn:
            return int(conn.execute(q.values(state="cancelled", updated_at=now)).rowcount or 0)

    def ops(self, states: Iterable[str], limit: int = 200, plan_id: str | None = None) -> list[QueuedOp]:
        q = select(O).where(O.c.state.in_(list(states)))
        if plan_id:
            q = q.where(O.c.plan_id == plan_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(O.c.id.desc()).limit(limit)).mappings().all()
        return [_op_from_row(r) for r in rows]

    def open_count(self, plan_id: str | None = None) -> int:
        q = select(func.count()).select_from(O).where(O.c.state.in_(["pending", "running"]))
        if plan_id:
            q = q.where(O.c.plan_id == plan_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def counts(self) -> dict[tuple[str, str], int]:
        """(connector, state) -> number of operations, for status and metrics."""
        q = select(O.c.connector, O.c.state, func.count()).where(
            O.c.state.in_(["pending", "running", "dead", "held"])).group_by(O.c.connector, O.c.state)
        with self.engine.connect() as conn:
            return {(c, s): int(n) for c, s, n in conn.execute(q)}

    def plan_state_counts(self, plan_id: str) -> dict[str, int]:
        q = select(O.c.state, func.count()).where(O.c.plan_id == plan_id).group_by(O.c.state)
        with self.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(q)}

    def recent_leavers(self, origins: Sequence[str], since: dt.datetime) -> int:
        """Distinct people deprovisioned (deactivate, delete) by released plans of these
        origins created since `since`."""
        with self.engine.connect() as conn:
            return int(conn.execute(_RECENT_LEAVERS, {"origins": list(origins), "since": since}).scalar_one())

    def cancel_people(self, employee_ids: Sequence[str], now: dt.datetime, *, leaver_too: bool = False) -> int:
        """Drop these people's queued work: the non-leaver work (an offboard supersedes a
        pending grant), or everything (`leaver_too`: a lifted override's queued deactivate)."""
        if not employee_ids:
            return 0
        with self.engine.begin() as conn:
            return int(conn.execute(_CANCEL_ALL if leaver_too else _CANCEL_QUEUED,
                                    {"eids": list(employee_ids), "now": now}).rowcount or 0)

    # ---- lease -------------------------------------------------------------------
    def acquire_lease(self, holder: str, now: dt.datetime, ttl: dt.timedelta, name: str = "workers") -> bool:
        """Take or renew the workers' lease; False if another live process holds it.

        A lease named by `process_holder()` on this host whose process is gone (SIGKILL,
        OOM) is taken over at once rather than after its TTL."""
        with self.engine.begin() as conn:
            expires = now + ttl
            res = conn.execute(update(L).where(L.c.name == name, or_(L.c.holder == holder, L.c.expires_at < now))
                               .values(holder=holder, expires_at=expires))
            if res.rowcount:
                return True
            exists = conn.execute(select(L.c.holder).where(L.c.name == name)).first()
            if exists is None:
                conn.execute(L.insert().values(name=name, holder=holder, expires_at=expires))
                return True
            if holder_is_dead(str(exists[0])):
                res = conn.execute(update(L).where(L.c.name == name, L.c.holder == exists[0])
                                   .values(holder=holder, expires_at=expires))
                return bool(res.rowcount)
            return False

    def release_lease(self, holder: str, name: str = "workers") -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(L).where(and_(L.c.name == name, L.c.holder == holder)))


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process (Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields 3 and 22; the command name (field 2) may hold blanks and parentheses: split after it.
    fields = stat.rsplit(")", 1)[-1].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _start_ticks(pid: int) -> str | None:
    st = _proc_stat(pid)
    return st[1] if st else None


def process_holder() -> str:
    """A lease holder name that says which process holds it: host:pid:start:random."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '-'}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """True only when `holder` is a `process_holder()` name of this host whose process has
    certainly ended (gone, or its pid now belongs to a process started later)."""
    parts = holder.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # this process: alive, whatever lease name it used
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # exists, owned by another user
    st = _proc_stat(pid)
    if st is None:
        return False
    state, started = st
    return state in ("Z", "X") or (parts[2] != "-" and started != parts[2])


def _plan_info(r: Any) -> PlanInfo:
    return PlanInfo(r["id"], r["state"], r["origin"], list(r["reasons"] or []), dict(r["summary"] or {}),
                    utc(r["created_at"]), r["policy_hash"], r["decided_by"], r["export_id"])
