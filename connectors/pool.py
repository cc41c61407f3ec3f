"""What a connector may ask of the workers that call it: a seat given up while a call waits
for others' changes to ride along, and a signal that no one else's change is on its way.

A group PATCH carries every member change queued for the group when it is sent. Changes
nobody waits on (joiners' and movers' grants) are worth holding until every worker of the
connector is itself waiting: then nothing else can join the batch and one PATCH carries the
day's changes to the group. While held, a worker would keep a seat of the connector's
`concurrency` and stop other people's chains: `parked()` gives the seat to the next chain
(the engine starts another worker) and takes it back when the call goes on.

The engine sets the pool of the lane a worker serves (a context variable, so every call the
worker makes sees it, however deep); called outside an engine (tests, one-off commands) a
connector gets `NO_POOL`: no seats to give up, and "settled" after a short wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol


class WorkerPool(Protocol):
    def parked(self) -> contextlib.AbstractContextManager[None]:
        """While inside, this call waits for others: its seat may serve another chain."""
        ...

    async def settled(self, most: float, until: Callable[[], bool]) -> None:
        """Return when every worker of the pool is parked and no chain is queued (nothing
        else can arrive), when `until()` is true, or after `most` seconds."""
        ...


class _NoPool:
    wait = 0.05  # outside an engine: what arrives within this rides along

    @contextlib.contextmanager
    def parked(self) -> Iterator[None]:
        yield

    async def settled(self, most: float, until: Callable[[], bool]) -> None:
        if not until():
            await asyncio.sleep(min(most, self.wait))


NO_POOL: WorkerPool = _NoPool()
_CURRENT: ContextVar[WorkerPool] = ContextVar("jml_worker_pool", default=NO_POOL)


def current() -> WorkerPool:
    return _CURRENT.get()


def serve(pool: WorkerPool) -> None:
    """Called by a worker task once: its calls (and tasks they start) see `pool`."""
    _CURRENT.set(pool)
