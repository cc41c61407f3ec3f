"""What each plan replaced (plan_prior), for `jml revert`: the people's stored state and their
accounts just before the plan, written in the plan's own transaction; and which plan
reverted which (a plan's origin `revert:<PLAN_ID>`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, null, select, update

from jml.model import AccountRecord, Override, OverrideKind, PersonState, person_from_dict, person_to_dict
from jml.revert_plan import REVERT_PREFIX, Prior
from jml.store.db import bulk_write, utc
from jml.store.repo import Store
from jml.store.tables import PlanPriorRow, PlanRow

PP = PlanPriorRow.__table__  # type: ignore[attr-defined]
PL = PlanRow.__table__  # type: ignore[attr-defined]
_COLUMNS = ("plan_id", "employee_id", "state", "row_hash", "accounts", "restore", "restore_row_hash")
# A revert that still counts (a discarded or superseded one never ran: the plan may be reverted again).
_LIVE = ("held", "queued", "done")


def state_to_doc(s: PersonState) -> dict[str, Any]:
    ov = s.override
    return {"person": person_to_dict(s.person) if s.person is not None else None,
            "first_seen_terminated_at": s.first_seen_terminated_at.isoformat() if s.first_seen_terminated_at else None,
            "missing_count": s.missing_count,
            "override": None if ov is None else {"kind": ov.kind.value, "effective_at": ov.effective_at.isoformat(),
                                                 "reason": ov.reason, "actor": ov.actor}}


def state_from_doc(eid: str, d: Mapping[str, Any]) -> PersonState:
    ov = d.get("override")
    seen = d.get("first_seen_terminated_at")
    return PersonState(
        employee_id=eid,
        person=person_from_dict(d["person"]) if d.get("person") else None,
        first_seen_terminated_at=dt.datetime.fromisoformat(seen) if seen else None,
        missing_count=int(d.get("missing_count") or 0),
        override=None if not ov else Override(OverrideKind(ov["kind"]), dt.datetime.fromisoformat(ov["effective_at"]),
                                              ov.get("reason", ""), ov.get("actor", "")))


def _account_doc(r: AccountRecord) -> dict[str, Any]:
    return {"username": r.username, "active": r.active, "attributes": dict(r.attributes), "grants": sorted(r.grants),
            "remote_id": r.remote_id, "deleted": r.deleted}


def _account(connector: str, eid: str, d: Mapping[str, Any]) -> AccountRecord:
    return AccountRecord(connector, eid, str(d["username"]), bool(d["active"]), dict(d.get("attributes") or {}),
                         frozenset(d.get("grants") or ()), d.get("remote_id"), bool(d.get("deleted")))


class PlanPriors:
    """Built on a Store (like Outbox)."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    def save_in(self, conn: Connection, plan_id: str, priors: Iterable[Prior],
                restores: Mapping[str, tuple[PersonState, str | None]] | None = None) -> None:
        """Inside the plan's transaction. `restores`: a held revert's person state to write back on approval."""
        todo = dict(restores or {})
        rows = []
        for p in priors:
            restore = todo.pop(p.employee_id, None)
            rows.append((plan_id, p.employee_id, state_to_doc(p.state) if p.state is not None else None, p.row_hash,
                         {c: _account_doc(r) for c, r in p.accounts.items()},
                         state_to_doc(restore[0]) if restore else None, restore[1] if restore else None))
        rows += [(plan_id, eid, None, None, {}, state_to_doc(s), h) for eid, (s, h) in todo.items()]
        bulk_write(conn, PP, _COLUMNS, rows)

    def load(self, plan_id: str) -> dict[str, Prior]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(PP).where(PP.c.plan_id == plan_id)).mappings().all()
        return {r["employee_id"]: Prior(
            r["employee_id"], state_from_doc(r["employee_id"], r["state"]) if r["state"] else None, r["row_hash"],
            {c: _account(c, r["employee_id"], d) for c, d in (r["accounts"] or {}).items()}) for r in rows}

    def take_restores(self, plan_id: str, conn: Connection) -> dict[str, tuple[PersonState, str | None]]:
        """A held revert's person states, once (cleared as they are read, in the caller's transaction)."""
        rows = conn.execute(select(PP.c.employee_id, PP.c.restore, PP.c.restore_row_hash).where(
            PP.c.plan_id == plan_id, PP.c.restore.is_not(None))).mappings().all()
        out = {r["employee_id"]: (state_from_doc(r["employee_id"], r["restore"]), r["restore_row_hash"])
               for r in rows if r["restore"]}
        if out:
            conn.execute(update(PP).where(PP.c.plan_id == plan_id).values(restore=null(), restore_row_hash=None))
        return out

    def reverts_of(self, plan_id: str, conn: Connection | None = None) -> list[tuple[str, str, dt.datetime | None]]:
        """(plan id, state, created_at) of the reverts of `plan_id` that ran or wait for approval
        (`conn`: read inside the caller's transaction, just before it saves another)."""
        q = select(PL.c.id, PL.c.state, PL.c.created_at).where(
            PL.c.origin == f"{REVERT_PREFIX}{plan_id}", PL.c.state.in_(_LIVE)).order_by(PL.c.created_at)
        if conn is not None:
            return [(r[0], r[1], utc(r[2])) for r in conn.execute(q)]
        with self.engine.connect() as c:
            return [(r[0], r[1], utc(r[2])) for r in c.execute(q)]
