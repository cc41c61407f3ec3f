"""reconcile.compare (pure): which differences are drift, what is left for review.

Managed grants are put back to what the rules say; grants jml does not manage are neither drift
nor dropped from the record; accounts jml holds no record of are orphans (nobody in HR) or an HR
person's account made outside jml (unrecorded) — both listed for review, never repaired.
"""

from __future__ import annotations

from jml.model import AccountRecord, RemoteAccount
from jml.reconcile import compare

MANAGED = frozenset({"group:All", "group:Eng"})


def _rec(eid: str, grants: set[str], *, active: bool = True) -> AccountRecord:
    return AccountRecord("app", eid, f"{eid}@x", active, {}, frozenset(grants), remote_id=f"r-{eid}")


def _acc(eid: str, groups: set[str], *, active: bool = True, ext: str | None = None) -> RemoteAccount:
    return RemoteAccount(f"r-{eid}", f"{eid}@x", active, ext if ext is not None else eid, {}, frozenset(groups))


def test_managed_drift_keeps_unmanaged_recorded_grants() -> None:
    records = {"e1": _rec("e1", {"group:All", "group:Prod"})}  # Prod: a requested group, not managed
    found = compare("app", records, [_acc("e1", {"group:All", "group:Eng", "group:Secret"})], frozenset({"e1"}),
                    MANAGED)
    [drift] = found.drift
    assert drift.kinds == ("memberships",)
    # the record becomes: the managed groups the app holds, plus the unmanaged ones recorded (Prod
    # stays; Secret, unmanaged and never recorded, is not taken in: it is found access for review)
    assert drift.grants == frozenset({"group:All", "group:Eng", "group:Prod"})
    assert [(eid, acc.groups) for eid, acc in found.held] == [
        ("e1", frozenset({"group:All", "group:Eng", "group:Secret"}))]


def test_unmanaged_membership_alone_is_not_drift() -> None:
    records = {"e1": _rec("e1", {"group:All"})}
    found = compare("app", records, [_acc("e1", {"group:All", "group:Secret"})], frozenset({"e1"}), MANAGED)
    assert found.drift == [] and len(found.held) == 1


def test_orphans_and_unrecorded_accounts() -> None:
    records = {"e1": _rec("e1", set())}
    remote = [_acc("e1", set()), _acc("ghost", set(), ext=""), _acc("e2", {"group:X"}),
              RemoteAccount("r-e3", "e3@x", False, "e3", pending_invitation=True)]
    found = compare("app", records, remote, frozenset({"e1", "e2", "e3"}), MANAGED)
    assert [o.username for o in found.orphans] == ["ghost@x"]
    assert [a.external_id for a in found.unrecorded] == ["e2"]  # a pending invitation is not an account yet
    assert found.drift == []
