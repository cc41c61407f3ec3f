"""What an app was found to hold, written over what jml recorded pushing: reconciliation's
drift and an SLA read-back that found a leaver's access still there. The next plan then
diffs against the truth and repairs it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update

from jml.model import AccountRecord, RemoteAccount
from jml.store.tables import AccountRow, GrantRow

__all__ = ["Found", "RemoteState"]

A = AccountRow.__table__  # type: ignore[attr-defined]
G = GrantRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Found:
    """A recorded account and what the app holds for it (None: gone from the app)."""

    record: AccountRecord
    remote: RemoteAccount | None
    grants: frozenset[str]  # the managed grants the app holds
    memberships: bool  # whether those differ from the recorded ones


class RemoteState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_drift(self, found: Iterable[Found], now: dt.datetime) -> None:
        """Set the recorded accounts to what the apps hold, in one transaction."""
        with self.engine.begin() as conn:
            for f in found:
                rec, acc = f.record, f.remote
                where = (A.c.connector == rec.connector) & (A.c.employee_id == rec.employee_id)
                gwhere = (G.c.connector == rec.connector) & (G.c.employee_id == rec.employee_id)
                if acc is None:
                    conn.execute(update(A).where(where).values(deleted=True, active=False, updated_at=now))
                    conn.execute(delete(G).where(gwhere))
                    continue
                attrs = {k: acc.attributes.get(k, v) for k, v in rec.attributes.items()}
                conn.execute(update(A).where(where).values(active=acc.active, attributes=attrs,
                                                           remote_id=acc.remote_id, updated_at=now))
                if f.memberships:
                    for name in rec.grants - f.grants:
                        conn.execute(delete(G).where(gwhere & (G.c.name == name)))
                    for name in f.grants - rec.grants:
                        conn.execute(G.insert().values(connector=rec.connector, employee_id=rec.employee_id,
                                                       name=name, rule="(found in the app)", since=now))

    def record_still_held(self, connector: str, employee_id: str, remote: RemoteAccount, now: dt.datetime) -> None:
        """A leaver's account the app still has (live or invited) and the groups it holds:
        recorded, so that re-planning deprovisions what is really there."""
        with self.engine.begin() as conn:
            row = conn.execute(select(A.c.id).where(A.c.connector == connector,
                                                    A.c.employee_id == employee_id)).first()
            values = {"active": remote.active or remote.pending_invitation, "deleted": False, "updated_at": now}
            if row is None:
                conn.execute(A.insert().values(connector=connector, employee_id=employee_id,
                                               username=remote.username, remote_id=remote.remote_id, attributes={},
                                               created_at=now, **values))
            else:
                conn.execute(update(A).where(A.c.id == row[0]).values(**values))
            have = {n for (n,) in conn.execute(select(G.c.name).where(G.c.connector == connector,
                                                                      G.c.employee_id == employee_id))}
            for name in sorted(remote.groups - have):
                conn.execute(G.insert().values(connector=connector, employee_id=employee_id, name=name, rule=None,
                                               since=now))
