"""Workers: claim operations from the outbox and push them through connectors.

- One chain per (connector, person): a person's steps run in plan order, different
  people run in parallel up to the connector's `concurrency`. A chain parked on a batched
  group write (connectors/pool.py) gives its seat to the next person until it goes on.
- Leavers first: chains are queued by (priority, first operation id), and the
  dispatcher re-reads the outbox every tick, so a new leaver overtakes queued bulk work.
- tenacity retries RetryableError (jml/engine_retry.py) with exponential backoff and jitter,
  honouring Retry-After; the count and the total time are bounded; then the operation is
  dead-lettered with its reason (visible in `jml status`, re-queued by `jml retry`).
- Results are written by group commit (jml/engine_results.py): a chain's last step is
  recorded behind its worker, which moves on to the next chain.
- A crash leaves at most the operations in flight as `running`; `recover()` re-queues
  them and the connectors' find-then-create makes the replay harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import Counter, Histogram
from tenacity import RetryCallState

from connectors import pool as worker_pool
from connectors.base import ApplyResult, Connector
from jml import metrics
from jml.engine_results import Done, ResultWriter
from jml.engine_retry import Attempts, retry_after_first
from jml.errors import ConnectorError, RetryableError
from jml.lanes import Lane, LanePool, RetryPolicy
from jml.model import AccountRecord, Action, Operation, Priority
from jml.redact import redact
from jml.store.audit import AuditLog
from jml.store.outbox import Outbox, QueuedOp
from jml.store.repo import Store

log = logging.getLogger("jml.engine")

Clock = Callable[[], dt.datetime]
OPERATION_TIMEOUT_FACTOR = 5
AfterSuccess = Callable[[QueuedOp, ApplyResult], Awaitable[None]]


class _Unset(enum.Enum):
    UNSET = "unset"


_UNSET = _Unset.UNSET
# Steps that change neither the account's remote id, its name nor its attributes (what
# connectors address an account by): within one chain, the record read for the first of
# them serves the next ones too (a leaver's deactivate + removals read it once).
_KEEPS_ACCOUNT = frozenset({Action.DEACTIVATE, Action.CANCEL_INVITE, Action.REMOVE_MEMBER, Action.UNASSIGN,
                            Action.ADD_MEMBER, Action.ASSIGN})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Engine:
    def __init__(
        self,
        store: Store,
        connectors: Mapping[str, Connector],
        *,
        concurrency: Mapping[str, int] | None = None,
        retry: Mapping[str, RetryPolicy] | None = None,
        timeouts: Mapping[str, float] | None = None,
        audit: AuditLog | None = None,
        clock: Clock = utcnow,
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.outbox = Outbox(store)
        self.audit = audit or AuditLog(store)
        self.clock = clock
        self.poll_interval = poll_interval
        self.after_success: list[AfterSuccess] = []
        self.paused: set[str] = set(store.get_setting("paused_connectors", []) or [])
        self._lanes = {
            name: Lane(c, (concurrency or {}).get(name, 4), (retry or {}).get(name, RetryPolicy()),
                        (timeouts or {}).get(name, 30.0))
            for name, c in connectors.items()
        }
        self._in_flight: set[tuple[str, str]] = set()  # chains queued or running
        self._claimed: set[int] = set()
        self._running: set[int] = set()
        self._wake = asyncio.Event()
        self._deferred: dict[tuple[str, str], list[QueuedOp]] = {}
        # Pushed operations' results, group-committed (jml/engine_results.py).
        self.results = ResultWriter(store, self.outbox, self.audit,
                                    lambda: bool(self._running) and not self._stopping)
        self._watermark = 0
        self._full_scan = True
        self._new_plans: set[str] = set()
        self._last_read = -float("inf")
        self._next_full_scan = 0.0
        self.full_scan_interval = 5.0
        self._stopping = False
        self._background: set[asyncio.Future[None]] = set()
        self._hooks_due: list[tuple[QueuedOp, ApplyResult]] = []  # finished chains' after-success hooks
        self._hooks_draining = False
        # (connector, action) -> its success counter and duration histogram, labelled once.
        self._success_metrics: dict[tuple[str, Action], tuple[Counter, Histogram]] = {}

    # ---- lifecycle -----------------------------------------------------------------
    def wake(self, *plan_ids: str) -> None:
        """Dispatch now. New plans (a webhook leaver, an offboard, an HR poll) name themselves
        and only their operations are read; re-opened work (an approval, a retry: operations
        older than the last one seen) asks, with no plan ids, for a full scan. In a leaver
        wave a plan arrives every tenth of a second: a full scan each time re-read the whole
        backlog (measured: 12% of jml's CPU)."""
        if plan_ids:
            self._new_plans.update(plan_ids)
        else:
            self._full_scan = True
        self._wake.set()

    def busy(self) -> bool:
        """Operations queued or running here (dispatched chains)."""
        return bool(self._in_flight)

    def spawn(self, work: Awaitable[None]) -> None:
        """Run a hook's follow-up work (the SLA read-back) beside the workers, not in them:
        `run_until_idle` waits for it, and a stop grants it what is left of the grace."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())
        self._wake.set()

    def recover(self) -> int:
        n = self.outbox.recover(self.clock())
        if n:
            log.info("re-queued operations left running by an earlier process", extra={"count": n})
        return n

    def _start_workers(self) -> None:
        for name, lane in self._lanes.items():
            if not lane.workers:
                lane.spawn = functools.partial(self._spawn_worker, name, lane)
                for _ in range(lane.concurrency):
                    self._spawn_worker(name, lane)

    def _spawn_worker(self, name: str, lane: Lane) -> None:
        if not self._stopping:
            lane.workers.append(asyncio.create_task(self._worker(name, lane)))

    async def _stop_workers(self, grace: float) -> None:
        self._stopping = True
        tasks = [t for lane in self._lanes.values() for t in lane.workers]
        # Let in-flight chains finish their current operation within the grace period.
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)
        # Workers forget their claims as they unwind: note them first, so operations cut
        # off mid-flight go back to pending rather than staying `running`.
        claimed = set(self._claimed) | self._running
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.results.flush_all()
        claimed |= self._claimed  # results written behind leave their chains' claims here
        if self._background:
            # Follow-ups of finished operations (read-backs): what is cut off, tick() redoes.
            _, late = await asyncio.wait(set(self._background), timeout=max(0.0, deadline - time.monotonic()))
            for f in late:
                f.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.outbox.release(sorted(claimed | self._claimed), self.clock())
        self._claimed.clear()
        self._running.clear()
        self._in_flight.clear()
        self._deferred.clear()
        self._full_scan = True  # whatever was skipped is read again on the next start
        for lane in self._lanes.values():
            lane.workers = []
            lane.busy = lane.parked = 0
            while not lane.queue.empty():
                lane.queue.get_nowait()

    async def run_until_idle(self, *, plan_id: str | None = None, timeout: float | None = None) -> None:
        """Work until nothing is pending or running (for `plan_id`, if given)."""
        self._stopping = False
        self._start_workers()
        start = time.monotonic()
        try:
            while True:
                if self.results.error is not None:
                    raise self.results.error
                self.dispatch()
                if not self._in_flight and not self._background and self.outbox.open_count(plan_id) == 0:
                    break
                if not self._in_flight and self._only_paused_left(plan_id):
                    break
                if timeout is not None and time.monotonic() - start > timeout:
                    break
                await self._tick()
        finally:
            await self._stop_workers(grace=0)
            self.outbox.finish_plans(self.clock())
            self.refresh_gauges()

    async def run_forever(self, stop: asyncio.Event, *, grace: float = 20.0) -> None:
        self._stopping = False
        self._start_workers()
        last_gauges = 0.0
        relay = asyncio.create_task(self._wake_on(stop))  # stopping wakes the loop as work does
        try:
            while not stop.is_set():
                self.dispatch()
                if time.monotonic() - last_gauges > 5:
                    self.outbox.finish_plans(self.clock())
                    self.refresh_gauges()
                    last_gauges = time.monotonic()
                await self._tick(stop)
        finally:
            relay.cancel()
            await self._stop_workers(grace)
            self.outbox.finish_plans(self.clock())

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _tick(self, stop: asyncio.Event | None = None) -> None:
        # Woken by new work, a finished chain or `stop` (through _wake_on), else after
        # poll_interval. (One wait on one event: a tick comes with every finished chain, and two
        # tasks and asyncio.wait per tick were measurable in a leaver wave.)
        self._wake.clear()
        if stop is not None and stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_interval):
                await self._wake.wait()

    def _only_paused_left(self, plan_id: str | None) -> bool:
        if not self.paused:
            return False
        counts = self.outbox.counts()
        return all(c in self.paused for (c, s), n in counts.items() if s in ("pending", "running") and n)

    # ---- dispatch ------------------------------------------------------------------
    def dispatch(self) -> None:
        """Read pending work from the outbox and queue each person's chain once.

        Between full scans (every few seconds, and whenever `wake()` is called from outside:
        an approval or a retry re-opens old operations) only operations newer than the last
        one seen are read, so a busy outbox is not re-read and re-decoded on every step; and
        those only when a plan was announced (`wake(plan_id)`) or `poll_interval` has passed
        (work another process wrote): a finished chain alone needs no read."""
        if self._stopping:
            return
        now = time.monotonic()
        full = self._full_scan or now >= self._next_full_scan
        plans, self._new_plans = self._new_plans, set()
        if not full and not plans and now - self._last_read < self.poll_interval:
            return
        self._last_read = now
        if full:
            self._full_scan = False
            self._next_full_scan = now + self.full_scan_interval
            # `jml pause`/`resume` from another process take effect within one full scan.
            self.paused = set(self.store.get_setting("paused_connectors", []) or [])
        # Claimed operations are at or below the watermark: only a full scan must leave them out.
        fresh = [q for q in self.outbox.pending(limit=20000, exclude=self._claimed if full else (),
                                                paused=self.paused, after_id=None if full else self._watermark)
                 if q.id not in self._claimed]
        if plans and not full and self.store.engine.dialect.name != "sqlite":
            # Normally newer than the watermark and read above; but on PostgreSQL a plan whose
            # transaction committed after a later one's has lower ids: read it by name. (SQLite
            # has one writer at a time: a later commit's ids are always higher.)
            seen = {q.id for q in fresh}
            fresh += [q for q in self.outbox.pending(limit=20000, exclude=self._claimed, paused=self.paused,
                                                     plan_ids=plans) if q.id not in seen]
        chains: dict[tuple[str, str], list[QueuedOp]] = {}
        for q in fresh:
            self._watermark = max(self._watermark, q.id)
            key = _chain_key(q.op)
            if key in self._in_flight and key not in chains:
                # The person's earlier steps are running: these follow them (see _worker).
                self._deferred.setdefault(key, []).append(q)
                self._claimed.add(q.id)
                continue
            chains.setdefault(key, []).append(q)
        for key, ops in chains.items():
            if key[0] not in self._lanes:
                continue
            self._in_flight.add(key)
            self._enqueue(key, ops)

    def _enqueue(self, key: tuple[str, str], ops: list[QueuedOp]) -> None:
        # Ids follow plan order (Operation.key), so id order is the person's step order.
        ops.sort(key=lambda q: q.id)
        self._claimed.update(q.id for q in ops)
        # Group creation comes before the memberships that need it.
        first = 0 if not key[1] or key[1].startswith("#group:") else 1
        prio = min(int(q.op.priority) for q in ops)
        lane = self._lanes[key[0]]
        lane.queue.put_nowait((prio, first, ops[0].id, ops))
        if lane.workers and len(lane.workers) == lane.busy < lane.seats:
            lane.spawn()  # every worker holds a chain, some of them parked: a seat is free

    # ---- workers -------------------------------------------------------------------
    async def _worker(self, name: str, lane: Lane) -> None:
        worker_pool.serve(LanePool(lane))
        while True:
            if self._stopping:
                # Stopping cancels every worker, but Python 3.11's wait_for can swallow a
                # cancellation that meets the inner call's completion (gh-86296): a worker that
                # went on would wait on the empty queue forever, and stopping with it.
                return
            me = asyncio.current_task()
            if len(lane.workers) > lane.seats and me in lane.workers:
                lane.workers.remove(me)  # started for a chain that was parked and has gone on since
                return
            _prio, _first, _id, chain = await lane.queue.get()
            key = _chain_key(chain[0].op)
            behind: Done | None = None
            lane.busy += 1
            try:
                failed: QueuedOp | None = None
                record: AccountRecord | _Unset | None = _UNSET  # the person's account, read once per chain
                for i, q in enumerate(chain):
                    if self._stopping:
                        break
                    if failed is not None and q.op.priority != Priority.LEAVER:
                        # A joiner's grants cannot land on an account that failed to be created.
                        self._dead(q, f"blocked: operation {failed.id} ({failed.op.action.value}) failed")
                        continue
                    ok, record, behind = await self._execute(lane, q, record, last=i == len(chain) - 1)
                    # Only a failed create (or invitation) leaves nothing for the next steps to
                    # act on; a failed update or membership change blocks none of them.
                    if not ok and failed is None and q.op.action in (Action.CREATE, Action.INVITE):
                        failed = q
            finally:
                lane.busy -= 1
                if behind is None:
                    self._chain_done(key, chain)
                else:
                    # The chain's last result is being written behind the worker, which moves on
                    # to the next chain: the chain stays in flight (the person's later steps wait
                    # for the record) until it is written.
                    behind.written.add_done_callback(functools.partial(self._written_behind, key, chain))

    def _chain_done(self, key: tuple[str, str], chain: list[QueuedOp]) -> None:
        for q in chain:
            self._claimed.discard(q.id)
        later = self._deferred.pop(key, None)
        if later and not self._stopping:
            self._enqueue(key, later)  # the person's next steps, queued while these ran
        else:
            for q in later or ():
                self._claimed.discard(q.id)
            self._in_flight.discard(key)
        self._wake.set()

    def _written_behind(self, key: tuple[str, str], chain: list[QueuedOp], written: asyncio.Future[None]) -> None:
        if written.cancelled() or written.exception() is not None:
            # Not recorded: the operations stay claimed, and stopping puts them back to pending
            # (pushing them again is harmless: operations make the remote match a state).
            self._in_flight.discard(key)
            self._wake.set()
            return
        self._chain_done(key, chain)

    async def _execute(self, lane: Lane, q: QueuedOp, known: AccountRecord | _Unset | None = _UNSET, *,
                       last: bool = False) -> tuple[bool, AccountRecord | _Unset | None, Done | None]:
        """Run one operation; returns (succeeded, the account record the chain's next step may
        reuse, or _UNSET when it must be read again, and — for the chain's `last` step — its
        result still being written, or None once it is)."""
        op = q.op
        now = self.clock()
        if not self.outbox.mark_running([q.id], now):
            # Cancelled (or finished elsewhere) since it was queued: e.g. an offboard dropped
            # this person's pending grants, or an undo dropped their pending deprovision.
            return True, known, None
        self._running.add(q.id)
        if known is not _UNSET and op.action in _KEEPS_ACCOUNT:
            record = known  # the step before changed neither the id nor the name connectors address
        else:
            record = self.store.load_accounts([op.employee_id]).get((op.connector, op.employee_id)) \
                if op.employee_id else None
        started = time.monotonic()

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            reason = getattr(exc, "reason", "error")
            metrics.retries.labels(op.connector, reason).inc()
            metrics.operations.labels(op.connector, op.action.value, "retry").inc()
            log.info("retrying operation", extra={"operation_id": q.id, "connector": op.connector,
                                                   "employee_id": op.employee_id, "reason": reason,
                                                   "error": redact(str(exc))})

        attempts = Attempts()
        try:
            first: RetryableError | None = None
            try:
                result = await self._apply_once(lane, op, record)
            except RetryableError as e:
                first = e
            if first is not None:  # (retried outside the handler: later errors do not chain to it)
                result = await retry_after_first(lane.retry, first, started,
                                                 functools.partial(self._apply_once, lane, op, record),
                                                 attempts=attempts, before_sleep=before_sleep)
        except asyncio.CancelledError:
            raise
        except ConnectorError as e:
            self._running.discard(q.id)
            self._finish_failed(q, str(e), attempts.count, started)
            return False, _UNSET, None
        except Exception as e:  # a bug or an unexpected library error: dead-letter, never crash the daemon
            log.exception("unexpected error applying operation", extra={"operation_id": q.id})
            self._running.discard(q.id)
            self._finish_failed(q, f"{op.connector}: unexpected {type(e).__name__}: {redact(str(e))}", attempts.count,
                                started)
            return False, _UNSET, None
        self._running.discard(q.id)
        done_at = self.clock()
        elapsed = time.monotonic() - started
        push = {"operation_id": q.id, "plan_id": q.plan_id, "connector": op.connector, "action": op.action.value,
                "detail": _audit_detail(op), "result": "success", "adopted": result.adopted,
                "attempts": attempts.count, "note": result.note}
        done = Done(q, result.remote_id, push, done_at)
        if last:
            # Nothing in this chain needs the record: write it with others' (one transaction),
            # while this worker already pushes the next chain.
            self.results.record_behind(done)
        else:
            await self.results.record(done)
        counted = self._success_metrics.get((op.connector, op.action))
        if counted is None:  # (prometheus_client's labels() per operation was 1.4% of a leaver wave)
            counted = self._success_metrics[(op.connector, op.action)] = (
                metrics.operations.labels(op.connector, op.action.value, "success"),
                metrics.operation_duration.labels(op.connector, op.action.value))
        counted[0].inc()
        counted[1].observe(elapsed)
        log.info("operation done", extra={"operation_id": q.id, "plan_id": q.plan_id, "connector": op.connector,
                                          "employee_id": op.employee_id, "action": op.action.value,
                                          "adopted": result.adopted})
        if last:
            if self.after_success:
                done.written.add_done_callback(functools.partial(self._after_written, q, result))
            return True, _UNSET, done
        await self._after_success(q, result)
        same_id = result.remote_id is None or (record is not None and result.remote_id == record.remote_id)
        return True, record if op.action in _KEEPS_ACCOUNT and same_id else _UNSET, None

    def _after_written(self, q: QueuedOp, result: ApplyResult, written: asyncio.Future[None]) -> None:
        """A chain's last result is recorded: its hooks run in one drain task shared by every
        chain that finishes meanwhile (a task per chain was measurable in a leaver wave)."""
        if written.cancelled() or written.exception() is not None:
            return
        self._hooks_due.append((q, result))
        if not self._hooks_draining:
            self._hooks_draining = True
            self.spawn(self._drain_hooks())

    async def _drain_hooks(self) -> None:
        try:
            while self._hooks_due:
                due, self._hooks_due = self._hooks_due, []
                for q, result in due:
                    await self._after_success(q, result)
        finally:
            self._hooks_draining = False

    async def _after_success(self, q: QueuedOp, result: ApplyResult) -> None:
        for hook in self.after_success:
            try:
                await hook(q, result)
            except Exception:
                log.exception("after-success hook failed", extra={"operation_id": q.id})

    async def _apply_once(self, lane: Lane, op: Operation, record: object) -> ApplyResult:
        # The connector's `timeout` bounds each request; one operation makes several (find,
        # create, read back) and may wait for the rate limiter, so the guard against a hung
        # connector allows OPERATION_TIMEOUT_FACTOR times that for the whole attempt.
        limit = lane.timeout * OPERATION_TIMEOUT_FACTOR
        try:
            # (asyncio.timeout, not wait_for: in 3.11 wait_for runs the call as a task of its own,
            # one more task per operation.)
            async with asyncio.timeout(limit):
                return await lane.connector.apply(op, record)  # type: ignore[arg-type]
        except TimeoutError:
            raise RetryableError(op.connector, f"{op.action.value} timed out after {limit:g}s",
                                 reason="timeout") from None

    def _finish_failed(self, q: QueuedOp, error: str, attempts: int, started: float) -> None:
        self._dead(q, error, attempts)
        metrics.operation_duration.labels(q.op.connector, q.op.action.value).observe(time.monotonic() - started)

    def _dead(self, q: QueuedOp, error: str, attempts: int = 0) -> None:
        now = self.clock()
        self.outbox.mark_failed(q.id, error, dead=True, attempts=attempts, now=now)
        metrics.operations.labels(q.op.connector, q.op.action.value, "dead").inc()
        self.audit.append("push", {"operation_id": q.id, "plan_id": q.plan_id, "connector": q.op.connector,
                                   "action": q.op.action.value, "detail": _audit_detail(q.op), "result": "dead",
                                   "error": error, "attempts": attempts}, now=now, subject=q.op.employee_id or None)
        log.warning("operation dead-lettered", extra={"operation_id": q.id, "plan_id": q.plan_id,
                                                      "connector": q.op.connector, "employee_id": q.op.employee_id,
                                                      "action": q.op.action.value, "error": error})

    def refresh_gauges(self) -> None:
        counts = self.outbox.counts()
        for name in self._lanes:
            metrics.outbox_depth.labels(name).set(counts.get((name, "pending"), 0) + counts.get((name, "running"), 0))
            metrics.dead_letters.labels(name).set(counts.get((name, "dead"), 0))
            metrics.connector_paused.labels(name).set(1 if name in self.paused else 0)


def _chain_key(op: Operation) -> tuple[str, str]:
    """Operations of one chain run in order: a person's in one connector, or one group's."""
    return op.connector, op.employee_id or f"#group:{op.detail.get('group', '')}"


def _audit_detail(op: Operation) -> dict[str, object]:
    d = dict(op.detail)
    d.pop("all_attributes", None)
    return d
