"""Access requests beyond the rules (requested and break-glass grants), their votes, and denials.

A request moves pending -> approved/denied/cancelled; an approved one becomes active with an
expiry; an active one ends expired or revoked. Every move is a compare-and-set on the state, so two
approvers (or the expiry job and a revoke) racing each other cannot both win.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from jml.store.db import utc
from jml.store.tables import AccessDenialRow, AccessRequestRow, AccessVoteRow, OperationRow

R = AccessRequestRow.__table__  # type: ignore[attr-defined]
V = AccessVoteRow.__table__  # type: ignore[attr-defined]
D = AccessDenialRow.__table__  # type: ignore[attr-defined]
# Read by every plan for the people it plans (an event pass's too): built once.
_IN_FORCE_OF = (select(R).where(R.c.state == "active", (R.c.expires_at.is_(None)) | (R.c.expires_at > bindparam("now")),
                                R.c.employee_id.in_(bindparam("eids", expanding=True)))
                .order_by(R.c.created_at, R.c.id))
_DENIALS_OF = (select(D).where(D.c.employee_id.in_(bindparam("eids", expanding=True)))
               .order_by(D.c.employee_id, D.c.connector, D.c.grant))
OP = OperationRow.__table__  # type: ignore[attr-defined]

STATES = ("pending", "approved", "denied", "active", "expired", "revoked", "cancelled")
OPEN_STATES = ("pending", "approved", "active")


@dataclass(frozen=True)
class Vote:
    approver_key: str
    approver: str
    basis: str
    at: dt.datetime | None


@dataclass(frozen=True)
class AccessRequest:
    id: str
    kind: str  # request | jit
    employee_id: str
    connector: str
    grant: str
    reason: str
    duration: dt.timedelta
    requested_by: str | None
    requester: str | None
    state: str
    required: int
    decided_by: str | None
    end_reason: str | None
    created_at: dt.datetime | None
    decided_at: dt.datetime | None
    granted_at: dt.datetime | None
    expires_at: dt.datetime | None
    ended_at: dt.datetime | None
    votes: tuple[Vote, ...] = ()
    removal_deadline: dt.datetime | None = None
    removal_verified_at: dt.datetime | None = None
    removal_breached: bool = False
    removal_check: str | None = None

    def in_force(self, now: dt.datetime) -> bool:
        """Granted and not yet expired: desired() keeps it."""
        return self.state == "active" and (self.expires_at is None or now < self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        def iso(v: dt.datetime | None) -> str | None:
            return v.isoformat() if v is not None else None
        return {"id": self.id, "kind": self.kind, "employee_id": self.employee_id, "connector": self.connector,
                "grant": self.grant, "reason": self.reason, "duration_seconds": int(self.duration.total_seconds()),
                "requester": self.requester, "state": self.state, "required": self.required,
                "decided_by": self.decided_by, "end_reason": self.end_reason,
                "created_at": iso(self.created_at), "decided_at": iso(self.decided_at),
                "granted_at": iso(self.granted_at), "expires_at": iso(self.expires_at), "ended_at": iso(self.ended_at),
                "removal_deadline": iso(self.removal_deadline), "removal_verified_at": iso(self.removal_verified_at),
                "removal_breached": self.removal_breached,
                "approvers": [{"approver": v.approver, "basis": v.basis, "at": iso(v.at)} for v in self.votes]}


@dataclass(frozen=True)
class Denial:
    employee_id: str
    connector: str
    grant: str
    reason: str
    decided_by: str | None
    source: str | None
    created_at: dt.datetime | None


def _request(r: Any, votes: Iterable[Any] = ()) -> AccessRequest:
    return AccessRequest(
        r["id"], r["kind"], r["employee_id"], r["connector"], r["grant"], r["reason"] or "",
        dt.timedelta(seconds=int(r["duration_seconds"] or 0)), r["requested_by"], r["requester"], r["state"],
        int(r["required"] or 1), r["decided_by"], r["end_reason"], utc(r["created_at"]), utc(r["decided_at"]),
        utc(r["granted_at"]), utc(r["expires_at"]), utc(r["ended_at"]),
        tuple(Vote(v["approver_key"], v["approver"] or "", v["basis"] or "", utc(v["at"])) for v in votes),
        utc(r["removal_deadline"]), utc(r["removal_verified_at"]), bool(r["removal_breached"]), r["removal_check"])


def _denial(r: Any) -> Denial:
    return Denial(r["employee_id"], r["connector"], r["grant"], r["reason"] or "", r["decided_by"], r["source"],
                  utc(r["created_at"]))


class AccessStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- requests --------------------------------------------------------------------
    def open(self, request_id: str, *, kind: str, employee_id: str, connector: str, grant: str, reason: str,
             duration: dt.timedelta, requested_by: str | None, requester: str | None, required: int,
             now: dt.datetime, state: str = "pending", expires_at: dt.datetime | None = None) -> AccessRequest:
        """Record a new request (a JIT grant is opened straight as `active` with its expiry)."""
        values: dict[str, Any] = dict(
            id=request_id, kind=kind, employee_id=employee_id, connector=connector, grant=grant, reason=reason,
            duration_seconds=int(duration.total_seconds()), requested_by=requested_by, requester=requester,
            state=state, required=required, created_at=now, removal_breached=False)
        if state == "active":
            values.update(decided_at=now, granted_at=now, expires_at=expires_at, decided_by=requester)
        with self.engine.begin() as conn:
            conn.execute(R.insert().values(**values))
        got = self.get(request_id)
        assert got is not None  # just written in its own committed transaction
        return got

    def get(self, request_id: str) -> AccessRequest | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(R).where(R.c.id == request_id)).mappings().first()
            if r is None:
                return None
            votes = list(conn.execute(select(V).where(V.c.request_id == request_id)
                                      .order_by(V.c.at, V.c.approver_key)).mappings())
        return _request(r, votes)

    def find(self, *, states: Collection[str] | None = None, eids: Collection[str] | None = None,
             connector: str | None = None, limit: int | None = None) -> list[AccessRequest]:
        """Newest first, each with its votes."""
        q = select(R)
        if states:
            q = q.where(R.c.state.in_(list(states)))
        if eids is not None:
            q = q.where(R.c.employee_id.in_(list(eids)))
        if connector is not None:
            q = q.where(R.c.connector == connector)
        q = q.order_by(R.c.created_at.desc(), R.c.id)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = list(conn.execute(q).mappings())
            by_id: dict[str, list[Any]] = {r["id"]: [] for r in rows}
            if by_id:
                for v in conn.execute(select(V).where(V.c.request_id.in_(list(by_id)))
                                      .order_by(V.c.at, V.c.approver_key)).mappings():
                    by_id[v["request_id"]].append(v)
        return [_request(r, by_id[r["id"]]) for r in rows]

    def in_force(self, now: dt.datetime, eids: Collection[str] | None = None) -> list[AccessRequest]:
        """Active grants not yet expired (votes not loaded: this runs every sync cycle)."""
        with self.engine.connect() as conn:
            if eids is not None:  # (each plan asks, an event pass's too: built once)
                rows = conn.execute(_IN_FORCE_OF, {"now": now, "eids": list(eids)})
            else:
                rows = conn.execute(select(R).where(R.c.state == "active", (R.c.expires_at.is_(None))
                                                    | (R.c.expires_at > now)).order_by(R.c.created_at, R.c.id))
            return [_request(r) for r in rows.mappings()]

    def due(self, now: dt.datetime) -> list[AccessRequest]:
        """Active grants whose expiry has come."""
        q = select(R).where(R.c.state == "active", R.c.expires_at.is_not(None), R.c.expires_at <= now)
        with self.engine.connect() as conn:
            return [_request(r) for r in conn.execute(q.order_by(R.c.expires_at, R.c.id)).mappings()]

    def active_counts(self, now: dt.datetime) -> dict[str, int]:
        """connector -> grants in force (the jml_access_grants_active gauge)."""
        q = (select(R.c.connector, func.count()).where(R.c.state == "active",
                                                       (R.c.expires_at.is_(None)) | (R.c.expires_at > now))
             .group_by(R.c.connector))
        with self.engine.connect() as conn:
            return {str(c): int(n) for c, n in conn.execute(q)}

    def removals_open(self) -> list[AccessRequest]:
        """Ended grants (expired, revoked) whose removal from the app is not verified yet."""
        q = select(R).where(R.c.state.in_(["expired", "revoked"]), R.c.granted_at.is_not(None),
                            R.c.removal_verified_at.is_(None))
        with self.engine.connect() as conn:
            return [_request(r) for r in conn.execute(q.order_by(R.c.ended_at, R.c.id)).mappings()]

    def set_removal(self, request_id: str, **values: Any) -> bool:
        """Update the removal clock while it is open (a verified one stays as it is)."""
        allowed = {"removal_deadline", "removal_verified_at", "removal_breached", "removal_check"}
        if not set(values) <= allowed:
            raise ValueError(f"not a removal field: {sorted(set(values) - allowed)}")
        with self.engine.begin() as conn:
            n = conn.execute(update(R).where(R.c.id == request_id, R.c.removal_verified_at.is_(None))
                             .values(**values))
        return bool(n.rowcount)

    def open_operations(self, employee_id: str, connector: str) -> int:
        """Operations for this person in this app still queued or running (the removal is not pushed yet)."""
        q = select(func.count()).select_from(OP).where(OP.c.employee_id == employee_id, OP.c.connector == connector,
                                                       OP.c.state.in_(["pending", "running", "held"]))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def vote(self, request_id: str, approver_key: str, approver: str, basis: str, now: dt.datetime) -> int | None:
        """Record one approval; the number of distinct approvers so far, or None if this one already voted."""
        try:
            with self.engine.begin() as conn:
                conn.execute(V.insert().values(request_id=request_id, approver_key=approver_key, approver=approver,
                                               basis=basis, at=now))
        except IntegrityError:
            return None
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(V).where(V.c.request_id == request_id))
                       .scalar_one())

    def move(self, request_id: str, from_states: Collection[str], to: str, **values: Any) -> bool:
        """Compare-and-set the state (with the given timestamps/fields); False when it was not in `from_states`."""
        if to not in STATES:
            raise ValueError(f"unknown access request state {to!r}")
        with self.engine.begin() as conn:
            n = conn.execute(update(R).where(R.c.id == request_id, R.c.state.in_(list(from_states)))
                             .values(state=to, **values))
        return bool(n.rowcount)

    # ---- denials ---------------------------------------------------------------------
    def add_denial(self, employee_id: str, connector: str, grant: str, *, reason: str, decided_by: str | None,
                   source: str | None, now: dt.datetime) -> bool:
        """Deny `grant` to the person whatever grants it; False when it is denied already (the first decision stays)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(D.insert().values(employee_id=employee_id, connector=connector, grant=grant,
                                               reason=reason, decided_by=decided_by, source=source, created_at=now))
        except IntegrityError:
            return False
        return True

    def denials(self, eids: Collection[str] | None = None) -> list[Denial]:
        with self.engine.connect() as conn:
            rows = conn.execute(_DENIALS_OF, {"eids": list(eids)}) if eids is not None else conn.execute(
                select(D).order_by(D.c.employee_id, D.c.connector, D.c.grant))
            return [_denial(r) for r in rows.mappings()]

    def remove_denial(self, employee_id: str, connector: str, grant: str) -> bool:
        """False when there was no such denial."""
        with self.engine.begin() as conn:
            n = conn.execute(D.delete().where(D.c.employee_id == employee_id, D.c.connector == connector,
                                              D.c.grant == grant))
        return bool(n.rowcount)
