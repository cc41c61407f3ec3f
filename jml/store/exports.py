"""The HR exports jml has read (what, when, with what verdict) and the small settings it keeps
(paused connectors, the last source error, …). Part of the Store (jml/store/repo.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from jml.store.db import upsert, utc
from jml.store.tables import ExportRow, SettingRow

__all__ = ["ExportInfo", "ExportRepo"]

E = ExportRow.__table__  # type: ignore[attr-defined]
S = SettingRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ExportInfo:
    id: int
    source: str
    name: str | None
    checksum: str | None
    etag: str | None
    last_modified: str | None
    columns: tuple[str, ...]
    row_count: int
    status: str
    reason: str | None
    read_at: dt.datetime | None


class ExportRepo:
    """The exports and settings part of the Store."""

    engine: Engine

    def add_export(self, *, source: str, name: str | None, checksum: str | None, etag: str | None,
                   last_modified: str | None, columns: Iterable[str], row_count: int, quarantined: int,
                   status: str, reason: str | None, now: dt.datetime) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(E.insert().values(
                source=source, name=name, checksum=checksum, etag=etag, last_modified=last_modified,
                columns=list(columns), row_count=row_count, quarantined=quarantined, status=status,
                reason=reason, read_at=now))
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def set_export_status(self, export_id: int, status: str, reason: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(E).where(E.c.id == export_id).values(status=status, reason=reason))

    def last_export(self, source: str, *, good: bool = False) -> ExportInfo | None:
        q = select(E).where(E.c.source == source)
        if good:
            q = q.where(E.c.status == "accepted")
        with self.engine.connect() as conn:
            r = conn.execute(q.order_by(E.c.id.desc()).limit(1)).mappings().first()
        if r is None:
            return None
        return ExportInfo(r["id"], r["source"], r["name"], r["checksum"], r["etag"], r["last_modified"],
                          tuple(r["columns"] or ()), r["row_count"], r["status"], r["reason"], utc(r["read_at"]))

    def recent_exports(self, limit: int = 10) -> list[ExportInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(E).order_by(E.c.id.desc()).limit(limit)).mappings().all()
        return [ExportInfo(r["id"], r["source"], r["name"], r["checksum"], r["etag"], r["last_modified"],
                           tuple(r["columns"] or ()), r["row_count"], r["status"], r["reason"], utc(r["read_at"]))
                for r in rows]

    def get_setting(self, key: str, default: Any = None) -> Any:
        with self.engine.connect() as conn:
            r = conn.execute(select(S.c.value).where(S.c.key == key)).first()
        return default if r is None else r[0]

    def set_setting(self, key: str, value: Any) -> None:
        upsert(self.engine, S, [{"key": key, "value": value}], ["key"], ["value"])
