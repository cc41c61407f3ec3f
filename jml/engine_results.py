"""The engine's results, written by group commit: a pushed operation's recorded account state,
its outbox row and its audit record are written in ONE transaction (what jml believes, what it
still owes and what it can prove never disagree), together with every other operation that
finished meanwhile.

Written on the event loop: a writer thread would contend with the loop's own statements for
SQLite's single write lock, and SQLite's busy wait sleeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from jml.store.audit import AuditLog
from jml.store.outbox import Outbox, QueuedOp
from jml.store.repo import Store
from jml.store.retry import retry_write

__all__ = ["Done", "ResultWriter"]

log = logging.getLogger("jml.engine")


@dataclass
class Done:
    """A pushed operation waiting to be recorded; `written` resolves once it is."""

    q: QueuedOp
    remote_id: str | None
    push: dict[str, object]
    at: dt.datetime
    written: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ResultWriter:
    """Batches finished operations into transactions. `record` waits for its result to be
    written (a chain step whose successor needs the record); `record_behind` does not (a
    chain's last step: its worker moves on while the batch fills). `others_running` says
    whether waiting a little lets more results join a batch."""

    def __init__(self, store: Store, outbox: Outbox, audit: AuditLog, others_running: Callable[[], bool]) -> None:
        self.store = store
        self.outbox = outbox
        self.audit = audit
        self._others_running = others_running
        self._finished: list[Done] = []
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        # The first failed write behind a worker: the engine's, raised by run_until_idle.
        self.error: BaseException | None = None
        # How long the results of a chain's last step may wait to be written together with
        # others' while other operations are still running: the worker does not wait for it,
        # so this costs a result's latency, never the app's throughput.
        self.linger = 0.02

    async def record(self, done: Done) -> None:
        """Write `done` (with whatever else finished meanwhile) and return once it is written."""
        self._finished.append(done)
        async with self._lock:
            if done.written.done():
                return
            await asyncio.sleep(0)  # let operations finishing in this same turn join the batch
            batch, self._finished = self._finished, []
            try:
                self.write(batch)
            except BaseException as e:
                for d in batch:
                    if not d.written.done():
                        d.written.set_exception(e if isinstance(e, Exception) else RuntimeError("interrupted"))
                raise
            for d in batch:
                if not d.written.done():
                    d.written.set_result(None)
        await done.written

    def record_behind(self, done: Done) -> None:
        """Write `done` soon, without waiting: its `written` future tells when."""
        self._finished.append(done)
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_behind())

    async def _flush_behind(self) -> None:
        try:
            if self._others_running():
                await asyncio.sleep(self.linger)  # results of operations still running join
            self._flusher = None  # what finishes from now on starts the next batch
            async with self._lock:
                batch, self._finished = self._finished, []
                if not batch:
                    return
                try:
                    self.write(batch)
                except Exception as e:
                    log.error("recording finished operations failed", exc_info=e)
                    self.error = e
                    for d in batch:
                        if not d.written.done():
                            d.written.set_exception(e)
                            d.written.exception()  # retrieved: the error is the engine's, raised by run_until_idle
                    return
                for d in batch:
                    if not d.written.done():
                        d.written.set_result(None)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def flush_all(self) -> None:
        """Write every result still waiting (stopping: what was pushed is recorded as done)."""
        while self._flusher is not None or self._finished:
            flusher = self._flusher
            if flusher is None:
                flusher = self._flusher = asyncio.ensure_future(self._flush_behind())
            await asyncio.gather(flusher, return_exceptions=True)
            if self.error is not None:
                return

    def write(self, batch: list[Done]) -> None:
        """One transaction for the batch: the accounts' state, the outbox rows, the audit records."""
        def write() -> None:
            with self.audit.lock, self.store.transaction() as tx:
                self.store.record_results([(d.q.op, d.remote_id, d.at) for d in batch], tx)
                self.outbox.mark_done_many([(d.q.id, d.at) for d in batch], tx)
                self.audit.append_in(tx, [("push", d.push, "jml", d.q.op.employee_id or None) for d in batch],
                                     now=batch[-1].at)

        retry_write(write, "recording finished operations")
