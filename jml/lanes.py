"""An engine lane: one connector's queue of chains, its workers, and the seats they take.

A chain parked on a batched group write (connectors/pool.py) gives its seat to the next
queued chain: `LanePool` is that pool's view of one lane, for the connector to park in and
to ask whether every chain in hand is waiting (jml/engine.py runs the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from connectors.base import Connector
from jml.store.outbox import QueuedOp


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    budget: float = 300.0  # seconds all attempts of one operation may take
    initial: float = 0.5
    maximum: float = 30.0


@dataclass
class Lane:
    """One connector's queue and workers."""

    connector: Connector
    concurrency: int
    retry: RetryPolicy
    timeout: float
    queue: asyncio.PriorityQueue[tuple[int, int, int, list[QueuedOp]]] = field(default_factory=asyncio.PriorityQueue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    busy: int = 0  # workers holding a chain
    parked: int = 0  # of those, waiting for others' changes to ride along (connectors/pool.py)
    spawn: Callable[[], None] = lambda: None  # start one more worker (set by the engine)

    @property
    def seats(self) -> int:
        """Workers this lane may run: `concurrency` working, plus one per parked chain."""
        return self.concurrency + self.parked


class LanePool:
    """connectors/pool.py's WorkerPool over one lane: a parked chain gives its seat to the
    next queued chain, and the lane is settled when every chain in hand is parked."""

    poll = 0.005  # seconds between looks; settled needs two quiet looks in a row

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    @contextlib.contextmanager
    def parked(self) -> Iterator[None]:
        lane = self.lane
        lane.parked += 1
        if len(lane.workers) < lane.seats and not lane.queue.empty():
            lane.spawn()
        try:
            yield
        finally:
            lane.parked -= 1

    async def settled(self, most: float, until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + most
        quiet_before = False
        while not until() and time.monotonic() < deadline:
            quiet = self.lane.busy <= self.lane.parked and self.lane.queue.empty()
            if quiet and quiet_before:
                return
            quiet_before = quiet
            await asyncio.sleep(self.poll)
