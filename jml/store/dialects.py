"""What each connector's server turned out to support (its SCIM dialect), kept in the
store so a restart or another replica starts from what was already learnt instead of
repeating the failed request that taught it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select

from jml.store.db import upsert
from jml.store.tables import ConnectorDialectRow

D = ConnectorDialectRow.__table__  # type: ignore[attr-defined]


class DialectStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, connector: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(D.c.facts).where(D.c.connector == connector)).first()
        return dict(row[0] or {}) if row is not None else {}

    def all(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r[0]: dict(r[1] or {}) for r in conn.execute(select(D.c.connector, D.c.facts))}

    def merge(self, connector: str, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Lay `facts` over what is stored (another replica may have learnt other keys)
        and return the result."""
        with self.engine.begin() as conn:
            row = conn.execute(select(D.c.facts).where(D.c.connector == connector)).first()
            merged = {**(dict(row[0] or {}) if row is not None else {}), **facts}
        upsert(self.engine, D, [{"connector": connector, "facts": merged, "updated_at": dt.datetime.now(dt.UTC)}],
               ["connector"], ["facts", "updated_at"])
        return merged

    def forget(self, connector: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(D.delete().where(D.c.connector == connector))
