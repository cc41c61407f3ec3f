"""The open operational endpoints of `jml serve`: /healthz, /readyz and /metrics.

/healthz answers while the event loop runs (a liveness probe, nothing else: restarting a
process because its database is down does not bring the database back). /readyz says
whether this process can do its job: the database answers and the config was valid. The HR
source's freshness is reported in the body (`checks.source`, `required: false`), on the
page and as `jml_source_stale{source}`, but never fails readiness: a 503 would take the
webhooks offline behind a load balancer exactly when HR's export is late (issue 17).
A failed read shows as stale, never as an empty export. The webhook inbox must drain: an
event unprocessed for longer than `server.inbox_stall_after` makes /readyz fail (issue 14:
a stalled inbox held every later termination). /metrics is the Prometheus text of
jml.metrics, with the inbox gauges read from the store at each scrape (a stalled
processor cannot be the one to report its stall).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from jml import metrics
from jml.context import ServiceContext
from jml.store.db import DatabaseError
from jml.store.inbox import Inbox

SOURCE = "hris"


class LeaseState(Protocol):
    @property
    def started(self) -> bool: ...  # the first lease attempt has finished

    @property
    def leader(self) -> bool: ...  # this process holds the workers' lease
DB_PING_TIMEOUT = 3.0


def stale_after(ctx: ServiceContext) -> dt.timedelta | None:
    src = ctx.rt.config.sources.hris
    if src is None:
        return None
    return src.stale_after or src.poll_interval * 3


def source_check(ctx: ServiceContext, *, leader: bool) -> dict[str, Any]:
    """Whether the HR source was read within its staleness bound (a read that found the
    export unchanged counts as a read)."""
    doc = _source_freshness(ctx, leader=leader)
    doc["required"] = False  # a warning: it never makes /readyz 503
    stale = bool(doc.get("stale") or (not doc["ok"] and doc.get("error")))
    metrics.source_stale.labels(SOURCE).set(1 if stale else 0)
    if not doc["ok"]:
        doc.setdefault("warning", "the HR source is stale: people changes wait until it is read again")
    return doc


def _source_freshness(ctx: ServiceContext, *, leader: bool) -> dict[str, Any]:
    limit = stale_after(ctx)
    if limit is None:
        return {"ok": True, "detail": "no HR source configured"}
    ok_at = ctx.source_ok_at.get(SOURCE)
    error = ctx.source_error.get(SOURCE)
    doc: dict[str, Any] = {"last_success": ok_at.isoformat() if ok_at else None, "stale_after": limit.total_seconds()}
    if error:
        doc["error"] = error
    if not leader and ok_at is None:
        # Only the workers' lease holder polls; a standby is ready to take webhooks.
        doc.update(ok=True, detail="polled by the process holding the workers' lease")
        return doc
    if ok_at is None:
        doc.update(ok=False, detail="not read yet" if not error else "never read successfully")
        return doc
    stale = ctx.now - ok_at > limit
    doc.update(ok=not stale, stale=stale)
    return doc


def inbox_check(ctx: ServiceContext) -> dict[str, Any]:
    """The webhook inbox drains: no event has waited longer than `server.inbox_stall_after`
    (quarantined events do not wait: they are shown, not counted)."""
    limit = ctx.rt.config.server.inbox_stall_after
    h = Inbox(ctx.rt.store).health(ctx.now)
    stalled = h.oldest_pending_seconds > limit.total_seconds()
    return {"ok": not stalled, "pending": h.pending, "oldest_pending_seconds": round(h.oldest_pending_seconds, 3),
            "stall_after": limit.total_seconds(), "quarantined": h.quarantined,
            **({"detail": "the webhook inbox is not draining"} if stalled else {})}


async def _inbox(ctx: ServiceContext) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(asyncio.to_thread(inbox_check, ctx), DB_PING_TIMEOUT)
    except (TimeoutError, DatabaseError) as e:
        return {"ok": False, "detail": f"cannot read the inbox: {type(e).__name__}"}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readyz_handler(ctx: ServiceContext, lease: LeaseState) -> Callable[[web.Request], Any]:
    async def readyz(request: web.Request) -> web.Response:
        try:
            db_ok = await asyncio.wait_for(asyncio.to_thread(ctx.rt.store.ping), DB_PING_TIMEOUT)
        except TimeoutError:
            db_ok = False
        is_leader = lease.leader
        checks: dict[str, Any] = {
            "database": {"ok": db_ok},
            "config": {"ok": True},
            "workers": {"ok": lease.started, **({} if lease.started else {"detail": "starting"})},
            "source": source_check(ctx, leader=is_leader),
            "inbox": await _inbox(ctx) if db_ok else {"ok": False, "detail": "database unreachable"},
        }
        ready = all(c["ok"] for c in checks.values() if c.get("required", True)) and not ctx.stopping.is_set()
        body = {"status": "ready" if ready else "not ready", "checks": checks,
                "workers": "leader" if is_leader else "standby", "stopping": ctx.stopping.is_set()}
        return web.json_response(body, status=200 if ready else 503)

    return readyz


def metrics_handler(ctx: ServiceContext | None = None) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        if ctx is not None:
            await _inbox(ctx)  # sets the jml_events_* gauges
            source_check(ctx, leader=True)  # sets jml_source_stale
        # prometheus_client's text format 0.0.4; aiohttp wants the charset apart from the type.
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    return handler


def add_routes(app: web.Application, ctx: ServiceContext, lease: LeaseState) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz_handler(ctx, lease))
    app.router.add_get("/metrics", metrics_handler(ctx))
