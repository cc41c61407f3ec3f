"""jml.store.access on SQLite and PostgreSQL: requests move by compare-and-set, one vote per
identity, grants in force by expiry, denials one per (person, connector, grant)."""

from __future__ import annotations

import datetime as dt

from jml.store.repo import Store

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def test_request_lifecycle(db_url: str) -> None:
    store = Store(db_url)
    acc = store.access
    r = acc.open("ar-1", kind="request", employee_id="E1", connector="app", grant="group:Prod Admins",
                 reason="incident 42", duration=8 * H, requested_by="person:ana", requester="person sub=ana",
                 required=2, now=T0)
    assert (r.state, r.required, r.duration, r.votes) == ("pending", 2, 8 * H, ())
    assert acc.vote("ar-1", "person:bob", "person sub=bob", "owner", T0) == 1
    assert acc.vote("ar-1", "person:bob", "person sub=bob", "owner", T0) is None  # once per identity
    assert acc.vote("ar-1", "person:cy", "person sub=cy", "manager", T0 + H) == 2
    assert acc.move("ar-1", ["pending"], "active", decided_at=T0 + H, granted_at=T0 + H, expires_at=T0 + 9 * H)
    assert not acc.move("ar-1", ["pending"], "denied")  # lost the race: it is active already
    got = acc.get("ar-1")
    assert got is not None and got.state == "active" and got.expires_at == T0 + 9 * H
    assert [(v.approver_key, v.basis) for v in got.votes] == [("person:bob", "owner"), ("person:cy", "manager")]
    assert got.in_force(T0 + 2 * H) and not got.in_force(T0 + 9 * H)
    assert [x.id for x in acc.in_force(T0 + 2 * H)] == ["ar-1"]
    assert acc.in_force(T0 + 2 * H, eids=["E2"]) == []
    assert acc.in_force(T0 + 9 * H) == []
    assert acc.due(T0 + 2 * H) == [] and [x.id for x in acc.due(T0 + 9 * H)] == ["ar-1"]
    assert acc.active_counts(T0 + 2 * H) == {"app": 1}
    jit = acc.open("jit-1", kind="jit", employee_id="E2", connector="app", grant="group:Ops", reason="pager",
                   duration=2 * H, requested_by="cli:op", requester="cli user=op", required=0, now=T0,
                   state="active", expires_at=T0 + 2 * H)
    assert jit.state == "active" and jit.granted_at == T0 and jit.expires_at == T0 + 2 * H
    assert [x.id for x in acc.find(states=["active"])] == ["ar-1", "jit-1"] or \
        {x.id for x in acc.find(states=["active"])} == {"ar-1", "jit-1"}
    assert [x.id for x in acc.find(eids=["E2"])] == ["jit-1"]
    assert acc.find(states=["pending"]) == []
    assert acc.find(states=["active"], eids=["E1"])[0].votes[0].approver == "person sub=bob"
    assert acc.get("nope") is None
    store.close()


def test_denials(db_url: str) -> None:
    store = Store(db_url)
    acc = store.access
    assert acc.add_denial("E1", "app", "group:Eng", reason="not needed", decided_by="person sub=rev",
                          source="review:c1", now=T0)
    assert not acc.add_denial("E1", "app", "group:Eng", reason="again", decided_by="x", source=None, now=T0)
    assert acc.add_denial("E2", "gh", "team:core", reason="r", decided_by=None, source=None, now=T0)
    assert [(d.employee_id, d.grant, d.source) for d in acc.denials()] == [("E1", "group:Eng", "review:c1"),
                                                                          ("E2", "team:core", None)]
    assert [d.employee_id for d in acc.denials(["E2"])] == ["E2"]
    assert acc.remove_denial("E1", "app", "group:Eng") and not acc.remove_denial("E1", "app", "group:Eng")
    assert [d.employee_id for d in acc.denials()] == ["E2"]
    store.close()
