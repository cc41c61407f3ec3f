"""The access review store (jml/store/reviews.py) on SQLite and PostgreSQL: a campaign's items,
decisions tied to the audit rows appended in the same transaction, one decision per item, the
gauge's counts, and the access reconciliation found in apps."""

from __future__ import annotations

import datetime as dt

import pytest

from jml.review_items import ACCOUNT, Holding, ItemDraft, Why
from jml.store.audit import AuditLog
from jml.store.repo import Store
from jml.store.reviews import AlreadyDecided

NOW = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


def test_campaign_items_decisions_and_found(db_url: str) -> None:
    store = Store(db_url)
    audit = AuditLog(store)
    audit.append("before", {"n": 1}, now=NOW)  # the decisions' records are not the trail's first
    drafts = [
        ItemDraft(Holding("scim", "E1", "ana@x", ACCOUNT, "jml", NOW), "boss@x", Why("rule", {"rule": "everyone"})),
        ItemDraft(Holding("scim", "E1", "ana@x", "group:Eng", "jml", NOW), "owner@x", Why("rule", {"rule": "eng"})),
        ItemDraft(Holding("scim", "", "ghost", ACCOUNT, "app", None, "r-9"), "sec@x", Why("none")),
    ]
    cid = store.reviews.create_campaign(name="Q4", by="app", connector=None, created_by="cli", now=NOW,
                                        due_at=NOW + dt.timedelta(days=14), items=drafts)
    c = store.reviews.campaign(cid)
    assert c is not None and (c.name, c.total, c.decided, c.due_at) == ("Q4", 3, 0, NOW + dt.timedelta(days=14))
    items = store.reviews.items(cid)
    assert [(it.holding.entitlement, it.reviewer, it.why.kind, it.state) for it in items] == [
        (ACCOUNT, "boss@x", "rule", "open"), ("group:Eng", "owner@x", "rule", "open"), (ACCOUNT, "sec@x", "none",
                                                                                       "open")]
    assert items[2].holding.remote_id == "r-9"  # an orphan's id, kept for its delete
    assert [it.id for it in store.reviews.items(cid, reviewer="OWNER@x")] == [items[1].id]

    # Two decisions and their audit records in one transaction, tied by sequence number and hash.
    with audit.lock, store.transaction() as tx:
        store.reviews.decide_in(tx, items[:2], decision="revoke", decided_by="boss", reason="r", now=NOW)
        last = audit.append_in(tx, [("review_decision", {"item": it.id}, "boss", "E1") for it in items[:2]], now=NOW)
        store.reviews.tie_to_audit_in(tx, [(items[0].id, last - 1), (items[1].id, last)])
    chain = {r["seq"]: r for r in audit.records()}
    decided = store.reviews.items(cid, item_ids=[items[0].id, items[1].id])
    for it in decided:
        assert it.audit_seq is not None and chain[it.audit_seq]["hash"] == it.audit_hash
        assert chain[it.audit_seq]["data"]["item"] == it.id
    assert audit.verify().ok
    # One decision per item: deciding again fails, and nothing of that transaction stays.
    with pytest.raises(AlreadyDecided) as caught, audit.lock, store.transaction() as tx:
        store.reviews.decide_in(tx, items[:1], decision="keep", decided_by="x", reason="", now=NOW)
    assert caught.value.item_ids == [items[0].id]
    assert store.reviews.items(cid, item_ids=[items[0].id])[0].decision == "revoke"

    store.reviews.set_plan([items[0].id, items[1].id], "plan-1")
    store.reviews.set_verified([(items[0].id, NOW, None), (items[1].id, None, "the app still holds it")])
    assert sorted(store.reviews.unverified_revocations()) == [(cid, items[1].id)]
    assert store.reviews.state_counts() == {(cid, "revoked"): 1, (cid, "revoke_failed"): 1, (cid, "open"): 1}
    assert sorted(store.reviews.progress_rows(cid)) == [("boss@x", True), ("owner@x", True), ("sec@x", False)]
    assert store.reviews.campaign(cid).decided == 2  # type: ignore[union-attr]

    # Found access: each reconciliation of a connector replaces what it found before.
    store.reviews.replace_found("scim", [Holding("scim", "E1", "ana@x", "group:Secret", "app", None, "u1"),
                                         Holding("scim", "", "ghost", ACCOUNT, "app", None, "r-9")], NOW)
    store.reviews.replace_found("gh", [Holding("gh", "E2", "bo", "team:x", "app")], NOW)
    assert {(h.connector, h.username, h.entitlement) for h in store.reviews.found()} == {
        ("scim", "ana@x", "group:Secret"), ("scim", "ghost", ACCOUNT), ("gh", "bo", "team:x")}
    store.reviews.replace_found("scim", [], NOW)
    store.reviews.forget_found("gh", "BO", "team:x")
    assert store.reviews.found() == []
    store.close()
