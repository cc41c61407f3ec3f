"""jml.store.identity on SQLite and PostgreSQL: API tokens (hash only, names not reused, revoke
once) and four-eyes votes (one per identity, first requester wins)."""

from __future__ import annotations

import datetime as dt

from jml.store.identity import IdentityStore
from jml.store.repo import Store

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_tokens(db_url: str) -> None:
    store = Store(db_url)
    ids = IdentityStore(store.engine)
    assert ids.create_token("ci", "h1", ["viewer", "operator"], created_by="cli user=a", now=T0,
                            expires_at=T0 + dt.timedelta(days=1))
    assert not ids.create_token("ci", "h2", ["admin"], created_by="cli user=a", now=T0, expires_at=None)
    assert not ids.create_token("other", "h1", ["admin"], created_by="cli user=a", now=T0, expires_at=None)
    tok = ids.token_by_hash("h1")
    assert tok is not None and tok.name == "ci" and tok.roles == ("viewer", "operator")
    assert tok.live(T0) and not tok.live(T0 + dt.timedelta(days=1))
    assert tok.expires_at == T0 + dt.timedelta(days=1)
    ids.touch_token("ci", T0 + dt.timedelta(minutes=5))
    assert ids.tokens()[0].last_used_at == T0 + dt.timedelta(minutes=5)
    assert ids.revoke_token("ci", T0)
    assert not ids.revoke_token("ci", T0)  # already revoked
    assert not ids.revoke_token("nobody", T0)
    tok = ids.token_by_hash("h1")
    assert tok is not None and not tok.live(T0)
    assert ids.token_by_hash("nope") is None
    store.close()


def test_votes(db_url: str) -> None:
    store = Store(db_url)
    ids = IdentityStore(store.engine)
    ids.open_request("p1", "plan", requested_by="person:ana", requester="person sub=ana", payload=None, now=T0)
    ids.open_request("p1", "plan", requested_by=None, requester=None, payload=None, now=T0)  # first one stands
    req = ids.request("p1")
    assert req is not None and req.requested_by == "person:ana" and req.state == "pending"
    assert ids.vote("p1", "person:bob", "person sub=bob", T0) == 1
    assert ids.vote("p1", "person:bob", "person sub=bob", T0) is None
    assert ids.vote("p1", "break-glass", "break-glass via=api", T0 + dt.timedelta(seconds=1)) == 2
    req = ids.request("p1")
    assert req is not None and req.approvers == ("person sub=bob", "break-glass via=api")
    ids.open_request("pa-1", "pre_approval", requested_by="cli:alice", requester="cli user=alice",
                     payload={"employee_ids": ["E1"]}, now=T0)
    assert [r.id for r in ids.requests("pre_approval")] == ["pa-1"]
    ids.close_request("pa-1", "approved", T0)
    assert ids.requests("pre_approval") == []
    assert ids.request("nope") is None
    store.close()
