"""The daemon's clockwork: the workers' lease, source polls and the periodic jobs.

- **Workers' lease.** Only one process pushes to the apps at a time (SQLite has no SKIP
  LOCKED; on PostgreSQL it keeps per-person ordering simple). The holder renews it every
  2 s and releases it on shutdown, so a standby takes over within seconds; a process that
  dies without releasing it is replaced once the lease (LEASE_TTL) expires. A `jml sync`
  meanwhile only plans and waits (jml.push.work).
- **Polls.** One at a time (max_instances=1, coalesced). An unchanged export costs a
  checksum/ETag compare (jml.sync.read_export); a failed read is recorded as the source's
  error and retried at the next tick; the source then turns stale, it never reads as
  "everyone left".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from jml import access, metrics, reconcile, retention, sla
from jml.context import ServiceContext
from jml.errors import ExportRejected, JMLError
from jml.sync import SOURCE, PlanOutcome, plan_cycle

log = logging.getLogger("jml.service")

LEASE_TTL = dt.timedelta(seconds=30)
SLA_INTERVAL = 15.0
START_RETRY = 30.0  # seconds between attempts to start workers that failed to start


class Workers:
    """Holds (or waits for) the workers' lease and runs the engine while it holds it."""

    def __init__(self, ctx: ServiceContext, *, grace: float, ttl: dt.timedelta = LEASE_TTL) -> None:
        self.ctx = ctx
        self.grace = grace
        self.ttl = ttl
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._opened = False
        self._lock = asyncio.Lock()
        self.started = False  # the first lease attempt has finished
        self._retry_at = 0.0  # after a failed start, the loop time to try again

    @property
    def leader(self) -> bool:
        return self._task is not None and not self._task.done()

    async def tick(self) -> None:
        """Take or renew the lease; start or halt the engine to match."""
        async with self._lock:
            if self.ctx.stopping.is_set():
                return
            rt = self.ctx.rt
            loop = asyncio.get_running_loop()
            if not self.leader and loop.time() < self._retry_at:
                self.started = True
                return
            held = rt.outbox.acquire_lease(rt.holder, rt.clock(), self.ttl)
            if held and not self.leader:
                try:
                    await self._start()
                except Exception as e:  # e.g. an app unreachable at boot: try again in a while
                    log.error("cannot start the workers: will retry", extra={
                        "error": f"{type(e).__name__}: {e}", "retry_in_s": START_RETRY})
                    rt.outbox.release_lease(rt.holder)
                    self._retry_at = loop.time() + START_RETRY
            elif not held and self.leader:
                # Our lease expired and another process took it (a stall longer than the
                # TTL): stop pushing at once, it now owns the outbox.
                log.error("lost the workers' lease to another process: workers stopped")
                await self._halt(grace=0)
            self.started = True
            self._refresh()

    async def _start(self) -> None:
        rt, engine = self.ctx.rt, self.ctx.engine
        if not self._opened:
            await rt.open_connectors()
            self._opened = True
        # Whatever an earlier process left `running` is ours to finish now.
        resumed = engine.recover()
        pending = rt.outbox.open_count()
        log.info("took the workers' lease: resuming the outbox", extra={"pending": pending, "recovered": resumed})
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(engine.run_forever(self._stop, grace=self.grace), name="jml-engine")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # e.g. the database went away; the next tick starts the engine again.
            log.error("workers stopped on an error", exc_info=task.exception())

    async def _halt(self, grace: float) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        self.ctx.engine.wake()
        try:
            # run_forever lets running operations finish for `grace`, then cancels and
            # releases the rest back to pending; the extra seconds cover that cleanup.
            await asyncio.wait_for(asyncio.shield(task), grace + 5)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:  # noqa: S110 - _ended logged it
            pass

    async def stop(self) -> None:
        """Graceful shutdown: in-flight operations get `grace`, the rest stays pending."""
        async with self._lock:
            was_leader = self._task is not None
            await self._halt(self.grace)
            if was_leader:
                rt = self.ctx.rt
                pending = rt.outbox.open_count()
                rt.outbox.release_lease(rt.holder)
                log.info("workers stopped; released the lease", extra={"pending": pending})

    def _refresh(self) -> None:
        """Pick up `jml pause/resume` and keep the gauges current on every process."""
        rt, engine = self.ctx.rt, self.ctx.engine
        engine.paused = set(rt.store.get_setting("paused_connectors", []) or [])
        engine.refresh_gauges()
        metrics.plans_held.set(len(rt.outbox.plans(["held"], limit=1000)))


def _plan_in_thread(ctx: ServiceContext) -> PlanOutcome:
    return asyncio.run(_plan_and_tell(ctx))


async def _plan_and_tell(ctx: ServiceContext) -> PlanOutcome:
    outcome = await plan_cycle(ctx.rt)
    # What planning queued on this thread's short-lived loop (the "plan held" notice to the
    # approvers) is sent before the loop ends: asyncio.run would cancel it unsent.
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        await asyncio.gather(*others, return_exceptions=True)
    return outcome


async def poll_sources(ctx: ServiceContext, workers: Workers) -> None:
    """One read of the HR source, planned and queued; the engine is woken for the plan."""
    if ctx.stopping.is_set() or not workers.leader:
        return
    try:
        # Planning a large export is CPU work: do it on a thread with its own loop, so the
        # HTTP side (webhooks must be answered within Okta's 3 s) stays responsive.
        outcome = await asyncio.to_thread(_plan_in_thread, ctx)
    except asyncio.CancelledError:
        raise
    except ExportRejected as e:
        _source_failed(ctx, f"export rejected: {e}")
        return
    except JMLError as e:  # SourceError and anything else jml names: a failed read
        _source_failed(ctx, str(e))
        return
    except Exception as e:  # a bug must not stop the polling either
        log.exception("source poll failed unexpectedly")
        _source_failed(ctx, f"unexpected {type(e).__name__}")
        return
    now = ctx.now
    ctx.source_ok_at[SOURCE] = now
    ctx.source_error.pop(SOURCE, None)
    # A read that found the export unchanged is still a successful read (plan_cycle records
    # it for `jml status`; Prometheus learns it here).
    metrics.source_last_success.labels(SOURCE).set(now.timestamp())
    if outcome.held:
        log.warning("plan held by the guard", extra={"plan_id": outcome.plan_id, "reasons": outcome.reasons})
    elif outcome.plan_id is not None:
        log.info("planned from the HR source", extra={"plan_id": outcome.plan_id, "summary": outcome.summary(),
                                                        "unchanged": outcome.unchanged})
        ctx.wake(outcome.plan_id)


def _source_failed(ctx: ServiceContext, error: str) -> None:
    ctx.source_error[SOURCE] = error
    log.warning("HR source read failed: will retry at the next poll", extra={"source": SOURCE, "error": error})


def build_scheduler(ctx: ServiceContext, workers: Workers) -> AsyncIOScheduler:
    """All periodic jobs; one instance of each at a time, missed runs coalesced."""
    cfg = ctx.rt.config
    sched = AsyncIOScheduler(timezone=dt.UTC, job_defaults={"max_instances": 1, "coalesce": True,
                                                            "misfire_grace_time": None})
    now = dt.datetime.now(dt.UTC)
    # Renewing often is cheap (one UPDATE) and lets a standby take over within seconds.
    lease_every = max(1.0, min(2.0, workers.ttl.total_seconds() / 6))
    sched.add_job(workers.tick, "interval", seconds=lease_every, id="lease")
    if cfg.sources.hris is not None:
        sched.add_job(poll_sources, "interval", args=[ctx, workers], id="poll-hris",
                      seconds=max(0.2, cfg.sources.hris.poll_interval.total_seconds()),
                      next_run_time=now + dt.timedelta(milliseconds=200))
    _add_leader_job(sched, "sla", sla.tick, ctx, workers, SLA_INTERVAL)
    _add_leader_job(sched, "reconcile", reconcile.job, ctx, workers, cfg.reconcile.schedule.total_seconds())
    _add_leader_job(sched, "access-expiry", access.job, ctx, workers, cfg.access.check_interval.total_seconds())
    if retention.enabled(cfg):
        # First soon after start (a daemon restarted daily must still purge), then every `schedule`.
        every = cfg.retention.schedule.total_seconds()
        _add_leader_job(sched, "retention", retention.job, ctx, workers, every, first_in=min(30.0, every))
    return sched


def _add_leader_job(sched: AsyncIOScheduler, job_id: str, fn: Callable[[ServiceContext], Awaitable[None]],
                    ctx: ServiceContext, workers: Workers, every: float, first_in: float | None = None) -> None:
    """Schedule `fn(ctx)` every `every` seconds (the first after `first_in`, default `every`), run only
    by the lease holder."""

    async def run() -> None:
        if ctx.stopping.is_set() or not workers.leader:
            return
        try:
            await fn(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduled job failed", extra={"job": job_id})

    first = {} if first_in is None else {"next_run_time": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=first_in)}
    sched.add_job(run, "interval", seconds=max(1.0, every), id=job_id, **first)
