"""What the daemon's parts share while `jml serve` runs (HTTP handlers, jobs, workers)."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from jml.engine import Engine
from jml.runtime import Runtime


@dataclass
class ServiceContext:
    rt: Runtime
    engine: Engine
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: dt.datetime | None = None
    # Last successful read of each source, and its error if the last attempt failed.
    source_ok_at: dict[str, dt.datetime] = field(default_factory=dict)
    source_error: dict[str, str] = field(default_factory=dict)
    # Work queued by webhooks/offboards, processed after the HTTP answer (Okta's 3 s).
    event_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    extra: dict[str, Any] = field(default_factory=dict)

    def wake(self, *plan_ids: str) -> None:
        """New outbox work: dispatch now rather than at the next tick (Engine.wake)."""
        self.engine.wake(*plan_ids)

    @property
    def now(self) -> dt.datetime:
        return self.rt.clock()
