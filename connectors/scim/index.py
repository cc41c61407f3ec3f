"""Finding resources on a server whose filters cannot be trusted.

Some apps ignore `filter` and answer every user they hold (or refuse the parameter); then
`Resources[0]` is whoever comes first, and trusting it would adopt a stranger's account.
Instead, the connector keeps a paged listing as an index: (attribute, value) -> ids, built
on first need, kept current by the connector's own creates and deletes, and rebuilt when a
lookup misses and the listing is older than `max_age` seconds (so each run sees accounts
made by hand since the last one). Values compare case-insensitively where RFC 7643 says
so (userName, displayName); ids and externalId exactly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

Resource = Mapping[str, Any]
CASE_EXACT = frozenset({"id", "externalId"})


def _norm(attribute: str, value: str) -> str:
    return value if attribute in CASE_EXACT else value.casefold()


class ResourceIndex:
    def __init__(self, attributes: tuple[str, ...], *, max_age: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attributes = attributes
        self.max_age = max_age
        self._clock = clock
        self._built_at: float | None = None
        self._ids: dict[tuple[str, str], list[str]] = {}

    @property
    def stale(self) -> bool:
        return self._built_at is None or self._clock() - self._built_at > self.max_age

    async def rebuild(self, listing: AsyncIterator[Resource]) -> None:
        ids: dict[tuple[str, str], list[str]] = {}
        async for r in listing:
            if r.get("id"):
                for attribute in self.attributes:
                    value = r.get(attribute)
                    if isinstance(value, str) and value:
                        ids.setdefault((attribute, _norm(attribute, value)), []).append(str(r["id"]))
        self._ids = ids
        self._built_at = self._clock()

    def lookup(self, attribute: str, value: str) -> list[str]:
        return list(self._ids.get((attribute, _norm(attribute, value)), ()))

    def add(self, resource: Resource) -> None:
        rid = resource.get("id")
        if not rid:
            return
        for attribute in self.attributes:
            value = resource.get(attribute)
            if isinstance(value, str) and value:
                ids = self._ids.setdefault((attribute, _norm(attribute, value)), [])
                if str(rid) not in ids:
                    ids.append(str(rid))

    def remove(self, rid: str) -> None:
        for ids in self._ids.values():
            if rid in ids:
                ids.remove(rid)
