"""Who may act: scoped API tokens (stored as sha256 only) and the four-eyes approval records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from jml.store.db import utc
from jml.store.tables import ApiTokenRow, ApprovalRequestRow, ApprovalVoteRow

T = ApiTokenRow.__table__  # type: ignore[attr-defined]
R = ApprovalRequestRow.__table__  # type: ignore[attr-defined]
V = ApprovalVoteRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ApiToken:
    name: str
    roles: tuple[str, ...]
    created_at: dt.datetime | None
    created_by: str | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    def live(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    kind: str
    requested_by: str | None
    requester: str | None
    payload: dict[str, Any]
    state: str
    created_at: dt.datetime | None
    approvers: tuple[str, ...]  # the actor text of each vote, in order


def _token(r: Any) -> ApiToken:
    return ApiToken(r["name"], tuple(r["roles"] or ()), utc(r["created_at"]), r["created_by"], utc(r["expires_at"]),
                    utc(r["revoked_at"]), utc(r["last_used_at"]))


class IdentityStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- API tokens ------------------------------------------------------------------
    def create_token(self, name: str, token_hash: str, roles: list[str], *, created_by: str, now: dt.datetime,
                     expires_at: dt.datetime | None) -> bool:
        """False when a token of that name exists (revoked ones too: names are not reused)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(T.insert().values(name=name, token_hash=token_hash, roles=list(roles), created_at=now,
                                               created_by=created_by, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    def tokens(self) -> list[ApiToken]:
        with self.engine.connect() as conn:
            return [_token(r) for r in conn.execute(select(T).order_by(T.c.name)).mappings()]

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(T).where(T.c.token_hash == token_hash)).mappings().first()
        return _token(r) if r is not None else None

    def touch_token(self, name: str, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(T).where(T.c.name == name).values(last_used_at=now))

    def revoke_token(self, name: str, now: dt.datetime) -> bool:
        """False when there is no such live token."""
        with self.engine.begin() as conn:
            n = conn.execute(update(T).where(T.c.name == name, T.c.revoked_at.is_(None)).values(revoked_at=now))
        return bool(n.rowcount)

    # ---- four eyes -------------------------------------------------------------------
    def request(self, request_id: str) -> ApprovalRequest | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(R).where(R.c.id == request_id)).mappings().first()
            if r is None:
                return None
            votes = [v[0] for v in conn.execute(select(V.c.approver).where(V.c.request_id == request_id)
                                                .order_by(V.c.at, V.c.approver_key))]
        return ApprovalRequest(r["id"], r["kind"], r["requested_by"], r["requester"], dict(r["payload"] or {}),
                               r["state"], utc(r["created_at"]), tuple(v or "" for v in votes))

    def requests(self, kind: str, state: str = "pending") -> list[ApprovalRequest]:
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(R.c.id).where(R.c.kind == kind, R.c.state == state)
                                              .order_by(R.c.created_at))]
        return [x for x in (self.request(i) for i in ids) if x is not None]

    def open_request(self, request_id: str, kind: str, *, requested_by: str | None, requester: str | None,
                     payload: dict[str, Any] | None, now: dt.datetime) -> None:
        """Record who asked (first writer wins: a plan's requester does not change)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(R.insert().values(id=request_id, kind=kind, requested_by=requested_by,
                                               requester=requester, payload=payload or {}, state="pending",
                                               created_at=now))
        except IntegrityError:
            pass

    def vote(self, request_id: str, approver_key: str, approver: str, now: dt.datetime) -> int | None:
        """Record one approval; the number of distinct approvers so far, or None if this one already voted."""
        try:
            with self.engine.begin() as conn:
                conn.execute(V.insert().values(request_id=request_id, approver_key=approver_key, approver=approver,
                                               at=now))
        except IntegrityError:
            return None
        return self.votes(request_id)

    def votes(self, request_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(V).where(V.c.request_id == request_id))
                       .scalar_one())

    def close_request(self, request_id: str, state: str, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(R).where(R.c.id == request_id).values(state=state, decided_at=now))
