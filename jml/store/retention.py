"""Retention in the database: which leavers are due for erasure, and the erasure itself.

Every table is looked at, not a list kept by hand: a JSON column, or a free-text column named
in `_TEXT_COLUMNS`, of any table in the schema (today's and tomorrow's) is scrubbed of the
purged people's terms (jml/erasure.py). Tables with an `employee_id` column are read for the
purged people only; the others (plans' reasons, webhook events, approvals, settings) in full.

The audit trail is rewritten as jml/audit.py describes (marker + erasure record), in the same
transaction as everything else, so `jml audit verify` passes before and after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Connection, Table, Text, and_, cast, exists, func, or_, select, update

from jml.audit import ERASED_KEY, ERASURE_KIND, dump, erased_by, rest_hash
from jml.erasure import ERASED, erased_person, pattern, scrub, scrub_text, terms_of
from jml.model import Phase
from jml.store.audit import AuditLog
from jml.store.db import utc
from jml.store.repo import Store
from jml.store.retry import retry_write
from jml.store.tables import (
    AccountRow,
    AuditHeadRow,
    AuditRow,
    OperationRow,
    PersonRow,
    SlaClockRow,
    WebhookEventRow,
    metadata,
)

P = PersonRow.__table__  # type: ignore[attr-defined]
A = AccountRow.__table__  # type: ignore[attr-defined]
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741 (the table, as elsewhere)
SC = SlaClockRow.__table__  # type: ignore[attr-defined]
W = WebhookEventRow.__table__  # type: ignore[attr-defined]
AU = AuditRow.__table__  # type: ignore[attr-defined]
AH = AuditHeadRow.__table__  # type: ignore[attr-defined]

# Free-text columns that may quote a person (an error echoing a username, a reason naming someone).
_TEXT_COLUMNS = frozenset({"reason", "last_error", "error", "last_check", "override_reason", "end_reason", "note",
                           "comment", "why", "removal_check", "verify_error", "username", "remote_id"})
# Who did something (asked, approved, reviewed, decided): may name a leaver on *other* people's rows.
_ACTOR_COLUMNS = frozenset({"requester", "requested_by", "approver", "reviewer", "decided_by", "created_by"})
# Handled on their own (person, audit) or holding nothing personal.
_SPECIAL = frozenset({"person", "audit", "audit_head", "lease", "connector_dialect", "alembic_version"})
_OPEN_OPERATIONS = ("held", "pending", "running")


@dataclass
class PurgeResult:
    people: list[str] = field(default_factory=list)  # employee ids erased (kept as the pseudonym)
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows rewritten
    audit_records: int = 0  # audit records rewritten
    erasure_seq: int | None = None  # the erasure record appended (None: nothing to erase, or a dry run)
    events: int = 0  # webhook events whose payload was erased by age


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back once it has counted."""


class Retention:
    """Built on a Store (like Outbox) and its AuditLog."""

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.engine = store.engine
        self.audit = audit

    def leavers_due(self, cutoff: dt.datetime) -> list[str]:
        """Leavers whose effective termination is before `cutoff`, not erased since HR last changed them,
        with every account deprovisioned (inactive or deleted), every SLA clock verified and no operation
        still open."""
        q = (select(P.c.employee_id).where(
            P.c.phase.in_([Phase.LEAVER.value, Phase.GONE.value]),
            P.c.effective_termination.is_not(None), P.c.effective_termination < cutoff,
            # Not erased yet, or HR sent a changed row since (its data is back): erased again.
            or_(P.c.erased_at.is_(None), P.c.updated_at > P.c.erased_at),
            ~exists().where(A.c.employee_id == P.c.employee_id, A.c.active.is_(True), A.c.deleted.is_(False)),
            ~exists().where(SC.c.employee_id == P.c.employee_id, SC.c.verified_at.is_(None)),
            ~exists().where(O.c.employee_id == P.c.employee_id, O.c.state.in_(_OPEN_OPERATIONS)),
        ).order_by(P.c.employee_id))
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def purge(self, eids: list[str], *, now: dt.datetime, actor: str, why: dict[str, Any],
              dry_run: bool = False) -> PurgeResult:
        """Erase these people's personal data everywhere, in one transaction; `dry_run`: count, change nothing."""
        if not eids:
            return PurgeResult()

        def run() -> PurgeResult:
            result = PurgeResult(people=list(eids))
            try:
                with self.audit.lock, self.engine.begin() as conn:
                    self._purge_in(conn, eids, now, actor, why, result)
                    if dry_run:
                        raise _DryRun
            except _DryRun:
                result.erasure_seq = None
            return result

        return retry_write(run, "erasing leavers' personal data")

    def erase_events(self, cutoff: dt.datetime, *, now: dt.datetime, dry_run: bool = False) -> int:
        """Processed webhook events received before `cutoff` lose their payload (its hash is kept)."""
        q = (select(W.c.id, cast(W.c.payload, Text)).where(
            W.c.processed_at.is_not(None), W.c.quarantined_at.is_(None), W.c.received_at < cutoff,
            W.c.payload.is_not(None)))

        def run() -> int:
            n = 0
            with self.engine.begin() as conn:
                for eid, text in conn.execute(q).all():
                    if text is None or text == "null" or ERASED_KEY in text[:20]:
                        continue
                    n += 1
                    if not dry_run:
                        marker = {ERASED_KEY: {"at": now.astimezone(dt.UTC).isoformat(),
                                               "sha256": hashlib.sha256(text.encode()).hexdigest()}}
                        conn.execute(update(W).where(W.c.id == eid).values(payload=marker))
            return n

        return retry_write(run, "erasing old webhook events")

    # ---- inside the transaction ---------------------------------------------------
    def _purge_in(self, conn: Connection, eids: list[str], now: dt.datetime, actor: str, why: dict[str, Any],
                  result: PurgeResult) -> None:
        people = {r[0]: r[1] for r in conn.execute(select(P.c.employee_id, P.c.data).where(P.c.employee_id.in_(eids)))}
        usernames: dict[str, list[str]] = {}
        for eid, username in conn.execute(select(A.c.employee_id, A.c.username).where(A.c.employee_id.in_(eids))):
            usernames.setdefault(eid, []).append(username)
        terms: set[str] = set()
        for eid in eids:
            terms |= terms_of(people.get(eid), usernames.get(eid, []))
        terms -= set(eids)  # the employee id is the pseudonym: kept
        pat = pattern(terms)

        for eid in eids:
            conn.execute(update(P).where(P.c.employee_id == eid).values(
                data=erased_person(people.get(eid), eid), erased_at=now))
        result.rows["person"] = len(people)
        if pat is not None:
            conn.execute(update(P).where(P.c.employee_id.in_(eids), P.c.override_reason.is_not(None)).values(
                override_reason=ERASED))
        conn.execute(update(A).where(A.c.employee_id.in_(eids)).values(username=ERASED))
        if pat is None:
            return  # nothing identifies them beyond the employee id: nothing else to scrub
        # Someone else's offboarding done or explained by a purged person (an HR colleague who left).
        acted = [func.lower(c).contains(t.lower(), autoescape=True)
                 for c in (P.c.override_actor, P.c.override_reason) for t in terms]
        for eid, by, reason in conn.execute(select(P.c.employee_id, P.c.override_actor, P.c.override_reason).where(
                P.c.employee_id.not_in(eids), or_(*acted))).all():
            new_by, new_reason = (scrub_text(by, pat) if by else by), (scrub_text(reason, pat) if reason else reason)
            if (new_by, new_reason) != (by, reason):
                conn.execute(update(P).where(P.c.employee_id == eid).values(override_actor=new_by,
                                                                            override_reason=new_reason))
                result.rows["person"] += 1
        for table in metadata.sorted_tables:
            if table.name in _SPECIAL:
                continue
            n = _scrub_table(conn, table, pat, eids, terms)
            if n:
                result.rows[table.name] = result.rows.get(table.name, 0) + n
        self._erase_audit(conn, pat, eids, now, actor, why, result)

    def _erase_audit(self, conn: Connection, pat: re.Pattern[str], eids: list[str], now: dt.datetime, actor: str,
                     why: dict[str, Any], result: PurgeResult) -> None:
        head = conn.execute(select(AH.c.count).where(AH.c.id == 1).with_for_update()).first()
        erasure_seq = (int(head[0]) if head else 0) + 1
        entries = []
        for rec in _audit_rows(conn):
            if rec["kind"] == ERASURE_KIND:
                continue  # names employee ids and counts only; and it vouches for others
            text, actor_text = rec["text"] or "", rec["actor"] or ""
            # A row the JSON type wrote holds "Sch\u00e4fer": searched as the text it stands for.
            probe = dump(json.loads(text)) if "\\u" in text else text
            if not (pat.search(probe) or pat.search(actor_text)):
                continue
            data = json.loads(text) if text else None
            prior = data.get(ERASED_KEY) if erased_by(data) is not None and isinstance(data, dict) else None
            original = prior["data_sha256"] if isinstance(prior, dict) and "data_sha256" in prior \
                else hashlib.sha256(dump(data).encode()).hexdigest()
            new = scrub(data, pat)
            if not isinstance(new, dict):
                new = {"value": new}
            new[ERASED_KEY] = {"by": erasure_seq, "data_sha256": original}
            new_actor = scrub_text(actor_text, pat)
            conn.execute(update(AU).where(AU.c.seq == rec["seq"]).values(data=new, actor=new_actor))
            entries.append({"seq": rec["seq"], "hash": rec["hash"], "data_sha256": original,
                            "rest": rest_hash(rec["seq"], rec["at"], rec["kind"], new_actor, rec["subject"],
                                              json.loads(dump(new)))})
        result.audit_records = len(entries)
        data = {**why, "people": len(eids), "employee_ids": sorted(eids), "rows": dict(result.rows),
                "audit_records": len(entries), "records": entries}
        seq = self.audit.append_in(conn, [(ERASURE_KIND, data, actor, None)], now=now)
        assert seq == erasure_seq, "the audit head moved inside the erasure's transaction"
        result.erasure_seq = seq


_AUDIT_BATCH = 2000


def _audit_rows(conn: Connection) -> Iterator[dict[str, Any]]:
    """The whole trail, a batch at a time (a long trail never sits in memory; the caller rewrites rows
    between batches on the same connection)."""
    q = select(AU.c.seq, AU.c.at, AU.c.kind, AU.c.actor, AU.c.subject, AU.c.hash,
               cast(AU.c.data, Text).label("text")).order_by(AU.c.seq).limit(_AUDIT_BATCH)
    last = 0
    while True:
        batch = conn.execute(q.where(AU.c.seq > last)).mappings().all()
        for r in batch:
            at = utc(r["at"])
            # The same text AuditLog.records() gives verify: the rest hash must be of what verify reads.
            yield {**r, "at": at.isoformat() if at else None}
        if len(batch) < _AUDIT_BATCH:
            return
        last = batch[-1]["seq"]


def _scrub_table(conn: Connection, table: Table, pat: re.Pattern[str], eids: list[str], terms: set[str]) -> int:
    pk = list(table.primary_key.columns)
    targets = [c for c in table.columns if not c.primary_key and c.name != "employee_id"
               and (isinstance(c.type, JSON) or c.name in _TEXT_COLUMNS or c.name in _ACTOR_COLUMNS)]
    if not pk or not targets:
        return 0
    q = select(*pk, *targets)
    if "employee_id" in table.c:
        # The purged people's rows; and others' rows where a purged person acted (asked, approved,
        # reviewed): found by the database first, confirmed by the pattern below.
        actors = [c for c in targets if c.name in _ACTOR_COLUMNS]
        acted = [func.lower(c).contains(t.lower(), autoescape=True) for c in actors for t in terms]
        q = q.where(or_(table.c.employee_id.in_(eids), *acted))
    n = 0
    for row in conn.execute(q).all():
        values = dict(zip([c.name for c in pk + targets], row, strict=True))
        changes: dict[str, Any] = {}
        for c in targets:
            old = values[c.name]
            if old is None:
                continue
            new = scrub(old, pat) if isinstance(c.type, JSON) else scrub_text(str(old), pat)
            if new != old:
                changes[c.name] = new
        if changes:
            n += 1
            conn.execute(update(table).where(and_(*[c == values[c.name] for c in pk])).values(**changes))
    return n
