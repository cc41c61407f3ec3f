"""Access review campaigns (issue 18): campaigns, their items, the decisions on them, and the
access reconciliation found in apps beyond what jml manages (`found_access`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, select, update

from jml.review_items import Holding, ItemDraft, Why, state_of
from jml.store.db import bulk_write, utc
from jml.store.tables import AuditRow, FoundAccessRow, ReviewCampaignRow, ReviewDecisionRow, ReviewItemRow

__all__ = ["AlreadyDecided", "Campaign", "Item", "ReviewStore"]

C = ReviewCampaignRow.__table__  # type: ignore[attr-defined]
I = ReviewItemRow.__table__  # type: ignore[attr-defined]  # noqa: E741
D = ReviewDecisionRow.__table__  # type: ignore[attr-defined]
F = FoundAccessRow.__table__  # type: ignore[attr-defined]
AU = AuditRow.__table__  # type: ignore[attr-defined]

_ITEM_COLUMNS = ("campaign_id", "employee_id", "connector", "username", "entitlement", "reviewer", "why",
                 "why_detail", "held_by", "last_change")
_FOUND_COLUMNS = ("connector", "username", "entitlement", "employee_id", "remote_id", "seen_at")


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    name: str
    by: str
    connector: str | None
    created_by: str | None
    created_at: dt.datetime | None
    due_at: dt.datetime | None
    total: int
    decided: int


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    campaign_id: int
    holding: Holding
    reviewer: str
    why: Why
    decision: str | None = None
    decided_by: str | None = None
    reason: str = ""
    decided_at: dt.datetime | None = None
    audit_seq: int | None = None
    audit_hash: str | None = None
    plan_id: str | None = None
    verified_at: dt.datetime | None = None
    verify_error: str | None = None

    @property
    def state(self) -> str:
        return state_of(self.decision, self.verified_at is not None, self.verify_error)


class AlreadyDecided(Exception):
    def __init__(self, item_ids: list[int]) -> None:
        super().__init__(f"already decided: {item_ids}")
        self.item_ids = item_ids


class ReviewStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- campaigns ---------------------------------------------------------------
    def create_campaign(self, *, name: str, by: str, connector: str | None, created_by: str, now: dt.datetime,
                        due_at: dt.datetime | None, items: Sequence[ItemDraft],
                        conn: Connection | None = None) -> int:
        if conn is None:
            with self.engine.begin() as c:
                return self.create_campaign(name=name, by=by, connector=connector, created_by=created_by, now=now,
                                            due_at=due_at, items=items, conn=c)
        res = conn.execute(C.insert().values(name=name, by=by, connector=connector, created_by=created_by,
                                             created_at=now, due_at=due_at))
        cid = int(res.inserted_primary_key[0])  # type: ignore[index]
        bulk_write(conn, I, _ITEM_COLUMNS, (
            (cid, d.holding.employee_id, d.holding.connector, d.holding.username, d.holding.entitlement, d.reviewer,
             d.why.kind, _detail(d), d.holding.held_by, d.holding.last_change) for d in items))
        return cid

    def campaigns(self) -> list[Campaign]:
        return self._campaigns(None)

    def campaign(self, campaign_id: int) -> Campaign | None:
        found = self._campaigns(campaign_id)
        return found[0] if found else None

    def _campaigns(self, campaign_id: int | None) -> list[Campaign]:
        totals = select(I.c.campaign_id, func.count().label("n")).group_by(I.c.campaign_id)
        decided = select(D.c.campaign_id, func.count().label("n")).group_by(D.c.campaign_id)
        q = select(C)
        if campaign_id is not None:
            totals = totals.where(I.c.campaign_id == campaign_id)
            decided = decided.where(D.c.campaign_id == campaign_id)
            q = q.where(C.c.id == campaign_id)
        with self.engine.connect() as conn:
            t = {int(r[0]): int(r[1]) for r in conn.execute(totals)}
            d = {int(r[0]): int(r[1]) for r in conn.execute(decided)}
            rows = conn.execute(q.order_by(C.c.id)).mappings().all()
        return [Campaign(r["id"], r["name"], r["by"], r["connector"], r["created_by"], utc(r["created_at"]),
                         utc(r["due_at"]), t.get(r["id"], 0), d.get(r["id"], 0)) for r in rows]

    # ---- items -------------------------------------------------------------------
    def items(self, campaign_id: int, *, reviewer: str | None = None,
              item_ids: Iterable[int] | None = None) -> list[Item]:
        q = select(I, D.c.decision, D.c.decided_by, D.c.reason, D.c.decided_at, D.c.audit_seq, D.c.audit_hash,
                   D.c.plan_id, D.c.verified_at, D.c.verify_error).select_from(
            I.outerjoin(D, D.c.item_id == I.c.id)).where(I.c.campaign_id == campaign_id)
        if reviewer is not None:
            q = q.where(I.c.reviewer == reviewer.casefold())
        out: list[Item] = []
        with self.engine.connect() as conn:
            if item_ids is None:
                out = [_item(r) for r in conn.execute(q.order_by(I.c.id)).mappings()]
            else:
                ids = sorted(set(item_ids))
                for i in range(0, len(ids), 900):  # SQLite's bound-parameter cap
                    out += [_item(r) for r in conn.execute(q.where(I.c.id.in_(ids[i:i + 900]))).mappings()]
        return out

    def decide_in(self, conn: Connection, items: Sequence[Item], *, decision: str, decided_by: str, reason: str,
                  now: dt.datetime) -> None:
        """Record the decisions (inside the caller's transaction, which also audits them). One
        decision per item: AlreadyDecided names the items another reviewer decided meanwhile
        (their primary key stops a race this check loses)."""
        ids = [it.id for it in items]
        taken: set[int] = set()
        for i in range(0, len(ids), 900):
            taken |= {int(r[0]) for r in conn.execute(select(D.c.item_id).where(D.c.item_id.in_(ids[i:i + 900])))}
        if taken:
            raise AlreadyDecided(sorted(taken))
        bulk_write(conn, D, ("item_id", "campaign_id", "decision", "decided_by", "reason", "decided_at"),
                   ((it.id, it.campaign_id, decision, decided_by, reason, now) for it in items))

    def tie_to_audit_in(self, conn: Connection, item_seqs: Sequence[tuple[int, int]]) -> None:
        """Store each decision's audit record (sequence number and hash), read back in the same
        transaction that appended them: the evidence export names the chain's own rows."""
        seqs = sorted(s for _, s in item_seqs)
        hashes: dict[int, str] = {}
        if seqs:
            q = select(AU.c.seq, AU.c.hash).where(AU.c.seq >= seqs[0], AU.c.seq <= seqs[-1])
            hashes = {int(s): str(h) for s, h in conn.execute(q)}
        stmt = update(D).where(D.c.item_id == bindparam("k_item")).values(audit_seq=bindparam("k_seq"),
                                                                        audit_hash=bindparam("k_hash"))
        rows = [{"k_item": i, "k_seq": s, "k_hash": hashes.get(s)} for i, s in item_seqs]
        if rows:
            conn.execute(stmt, rows)

    def set_plan(self, item_ids: Iterable[int], plan_id: str) -> None:
        ids = list(item_ids)
        with self.engine.begin() as conn:
            for i in range(0, len(ids), 900):
                conn.execute(update(D).where(D.c.item_id.in_(ids[i:i + 900])).values(plan_id=plan_id))

    def set_verified(self, results: Iterable[tuple[int, dt.datetime | None, str | None]]) -> None:
        """(item_id, verified at or None, what the read-back found instead)."""
        rows = [{"k_item": i, "k_at": at, "k_err": err} for i, at, err in results]
        if not rows:
            return
        stmt = update(D).where(D.c.item_id == bindparam("k_item")).values(verified_at=bindparam("k_at"),
                                                                        verify_error=bindparam("k_err"))
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    def unverified_revocations(self) -> list[tuple[int, int]]:
        """(campaign_id, item_id) of revocations not yet read back without the entitlement."""
        q = select(D.c.campaign_id, D.c.item_id).where(and_(D.c.decision == "revoke", D.c.verified_at.is_(None)))
        with self.engine.connect() as conn:
            return [(int(c), int(i)) for c, i in conn.execute(q)]

    def state_counts(self) -> dict[tuple[int, str], int]:
        """(campaign id, item state) -> items, for the gauge."""
        q = select(I.c.campaign_id, D.c.decision, D.c.verified_at.is_not(None), D.c.verify_error.is_not(None),
                   func.count()).select_from(I.outerjoin(D, D.c.item_id == I.c.id)).group_by(
            I.c.campaign_id, D.c.decision, D.c.verified_at.is_not(None), D.c.verify_error.is_not(None))
        out: dict[tuple[int, str], int] = {}
        with self.engine.connect() as conn:
            for cid, decision, verified, failed, n in conn.execute(q):
                key = (int(cid), state_of(decision, bool(verified), "x" if failed else None))
                out[key] = out.get(key, 0) + int(n)
        return out

    def progress_rows(self, campaign_id: int) -> list[tuple[str, bool]]:
        """(reviewer, decided) of every item of a campaign."""
        q = select(I.c.reviewer, D.c.item_id.is_not(None)).select_from(
            I.outerjoin(D, D.c.item_id == I.c.id)).where(I.c.campaign_id == campaign_id)
        with self.engine.connect() as conn:
            return [(str(r), bool(d)) for r, d in conn.execute(q)]

    # ---- access found in apps ------------------------------------------------------
    def replace_found(self, connector: str, found: Iterable[Holding], now: dt.datetime) -> None:
        """What the latest reconciliation of `connector` found beyond what jml manages."""
        rows = {(h.username.casefold(), h.entitlement): h for h in found}
        with self.engine.begin() as conn:
            conn.execute(delete(F).where(F.c.connector == connector))
            bulk_write(conn, F, _FOUND_COLUMNS, ((connector, h.username, h.entitlement, h.employee_id, h.remote_id,
                                                  now) for h in rows.values()))

    def found(self) -> list[Holding]:
        with self.engine.connect() as conn:
            return [Holding(r["connector"], r["employee_id"] or "", r["username"], r["entitlement"], "app", None,
                            r["remote_id"]) for r in conn.execute(select(F).order_by(F.c.connector, F.c.username))
                    .mappings()]

    def forget_found(self, connector: str, username: str, entitlement: str) -> None:
        """A revoked thing the app no longer holds: not unexplained any more."""
        with self.engine.begin() as conn:
            conn.execute(delete(F).where(F.c.connector == connector, func.lower(F.c.username) == username.casefold(),
                                         F.c.entitlement == entitlement))


def _detail(d: ItemDraft) -> dict[str, object]:
    out = dict(d.why.detail)
    if (not d.holding.employee_id or d.holding.held_by == "app") and d.holding.remote_id:
        out["remote_id"] = d.holding.remote_id
    return out


def _item(r: object) -> Item:
    m: dict[str, object] = dict(r)  # type: ignore[call-overload]
    detail = m["why_detail"] if isinstance(m["why_detail"], dict) else {}
    remote_id = detail.get("remote_id")  # an account found in the app (its delete needs it)
    h = Holding(str(m["connector"]), str(m["employee_id"]), str(m["username"]), str(m["entitlement"]),
                str(m["held_by"]), utc(m["last_change"]), str(remote_id) if remote_id else None)  # type: ignore[arg-type]
    return Item(int(m["id"]), int(m["campaign_id"]), h, str(m["reviewer"]),  # type: ignore[call-overload]
                Why(str(m["why"]), detail), m["decision"], m["decided_by"],  # type: ignore[arg-type]
                str(m["reason"] or ""), utc(m["decided_at"]), m["audit_seq"], m["audit_hash"],  # type: ignore[arg-type]
                m["plan_id"], utc(m["verified_at"]), m["verify_error"])  # type: ignore[arg-type]
