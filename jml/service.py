"""`jml serve`: one aiohttp application and one AsyncIOScheduler in one event loop.

    HTTP  /healthz /readyz /metrics (here) · /webhooks/* (jml.webhooks) · / and /api/v1/* (jml.web)
    jobs  workers' lease · HR source polls · SLA tick · reconciliation   (jml.scheduler)
    tasks the engine (while this process holds the lease) · the webhook event processor

SIGTERM/SIGINT: stop intake (no new polls, the listener closes), let in-flight operations
finish within `server.shutdown_grace`, put the rest back to pending, release the lease,
exit 0. On start the lease holder first re-queues whatever an earlier process left
running, then works through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import os
import shlex
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from jml import health, heap, metrics, webhooks
from jml import web as web_ui
from jml.config import Config
from jml.context import ServiceContext
from jml.errors import ConfigError
from jml.events import run_event_processor
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.scheduler import Workers, build_scheduler

log = logging.getLogger("jml.service")
access = logging.getLogger("jml.http")

CTX: web.AppKey[ServiceContext] = web.AppKey("jml_ctx", ServiceContext)
SERVER_HEADER = "jml"  # never the aiohttp/Python versions
MAX_SIGNED_IN_BODY = 65_536  # the pages' forms and the API's JSON are small; only webhooks carry batches
# Each webhook's credential header: without it the body is not read at all.
_WEBHOOK_CREDENTIAL = {"/webhooks/hr": ("hr", "X-JML-Signature"), "/webhooks/okta": ("okta", "Authorization")}
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: debug level
HTTP_DRAIN = 5.0  # seconds in-flight HTTP requests get at shutdown


def parse_listen(value: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port' (all interfaces)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"not host:port: {value!r}", "server.listen")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ':port' asks for every interface
    return host, int(port)


class AccessLogger(AbstractAccessLogger):
    """Requests through jml.logs: method, path (never the query string), status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in _QUIET_PATHS and response.status < 400 else logging.INFO
        access.log(level, "http request", extra={
            "method": request.method, "path": request.path, "status": response.status,
            "duration_ms": round(time * 1000, 1), "remote": request.remote})


@web.middleware
async def _no_5xx_for_bad_input(request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Malformed input is the client's problem (400), and no handler error leaks details."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ValueError:  # JSON, encoding, ISO dates, pydantic: input that does not parse
        return web.json_response({"error": "malformed request"}, status=400)
    except Exception:
        log.exception("request failed", extra={"method": request.method, "path": request.path})
        return web.json_response({"error": "internal error"}, status=500)


@web.middleware
async def _limits(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Refuse what can be refused from the headers alone, before a byte of the body is read: a
    declared body over the limit (413), a webhook POST without its credential header (401). Then
    give the body `server.body_timeout` to arrive, or close the connection."""
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        cfg = request.app[CTX].rt.config.server
        hook = _WEBHOOK_CREDENTIAL.get(request.path)
        limit = cfg.max_body_bytes if hook else min(cfg.max_body_bytes, MAX_SIGNED_IN_BODY)
        length = request.content_length
        if length is not None and length > limit:
            return web.json_response({"error": f"the body is larger than {limit} bytes"}, status=413,
                                     headers={"Connection": "close"})
        if hook is not None and request.method == "POST" and not request.headers.get(hook[1], "").strip():
            metrics.webhook_requests.labels(hook[0], "unauthorized").inc()
            return web.json_response({"error": f"missing {hook[1]} header"}, status=401,
                                     headers={"Connection": "close"})
        if request.body_exists and not request.content.is_eof():
            transport = request.transport
            watchdog = asyncio.get_running_loop().call_later(
                cfg.body_timeout.total_seconds(), _body_overdue, request, transport)
            try:
                return await handler(request)
            finally:
                watchdog.cancel()
    return await handler(request)


def _body_overdue(request: web.Request, transport: asyncio.BaseTransport | None) -> None:
    if transport is not None and not request.content.is_eof():
        log.warning("request body too slow: connection closed", extra={"path": request.path,
                                                                       "remote": request.remote})
        transport.close()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


class _Refuse(asyncio.Protocol):
    """Over the connection cap: a short 503 and close, without parsing anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nServer: jml\r\nConnection: close\r\n"
                        b"Retry-After: 1\r\nContent-Length: 0\r\n\r\n")
        transport.close()


class CappedSite(web.TCPSite):
    """A TCP site that holds at most `max_connections` open client connections."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, max_connections: int,
                 **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.max_connections = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        cap = self.max_connections

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= cap:
                return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def runner_for(app: web.Application, cfg: Config, **kw: Any) -> web.AppRunner:
    """The runner with the HTTP limits: headers (and an idle keep-alive) within `header_timeout`."""
    return web.AppRunner(app, keepalive_timeout=cfg.server.header_timeout.total_seconds(),
                         max_line_size=8190, max_field_size=8190, **kw)


def build_app(ctx: ServiceContext, lease: health.LeaseState) -> web.Application:
    app = web.Application(client_max_size=ctx.rt.config.server.max_body_bytes,
                          middlewares=[_limits, _no_5xx_for_bad_input])
    app[CTX] = ctx
    app.on_response_prepare.append(_server_header)
    health.add_routes(app, ctx, lease)
    webhooks.add_routes(app, ctx)
    web_ui.add_routes(app, ctx)
    return app


async def _finish(task: asyncio.Task[Any] | None, grace: float) -> None:
    if task is None:
        return
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, grace)


def _log_level_from_env() -> None:
    # The container sets JML_LOG_LEVEL=INFO: a daemon's log is its record of work.
    level = os.environ.get("JML_LOG_LEVEL")
    if level:
        logging.getLogger().setLevel(level.upper())


async def serve(cfg: Config, *, on_ready: Callable[[str], None] | None = None) -> int:
    _log_level_from_env()
    host, port = parse_listen(cfg.server.listen)
    grace = cfg.server.shutdown_grace.total_seconds()
    rt = Runtime(cfg)
    ctx = ServiceContext(rt=rt, engine=build_engine(rt), started_at=rt.clock())
    workers = Workers(ctx, grace=grace)
    ctx.extra["workers"] = workers
    runner = runner_for(build_app(ctx, workers), cfg, access_log_class=AccessLogger,
                        handle_signals=False, shutdown_timeout=min(grace, HTTP_DRAIN))
    await runner.setup()
    try:
        await CappedSite(runner, host, port, max_connections=cfg.server.max_connections).start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {cfg.server.listen}: {e.strerror or e}", "server.listen") from None
    bound = runner.addresses[0]
    url = f"http://{bound[0] if ':' not in bound[0] else f'[{bound[0]}]'}:{bound[1]}/"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    scheduler = build_scheduler(ctx, workers)
    events: asyncio.Task[Any] | None = None
    try:
        await workers.tick()  # take the lease and resume the outbox before anything new arrives
        frozen = heap.settle()  # start-up's objects, out of the collector's way (jml/heap.py)
        scheduler.start()
        ctx.extra["scheduler"] = scheduler
        events = asyncio.create_task(run_event_processor(ctx), name="jml-events")
        metrics.build_info.labels(_version()).set(1)
        log.info("jml serving", extra={"url": url, "leader": workers.leader, "grace_s": grace,
                                       "frozen_objects": frozen})
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
    finally:
        log.info("shutting down: intake stopped, in-flight operations get the grace period",
                 extra={"grace_s": grace})
        ctx.stopping.set()
        ctx.event_wakeup.set()
        if scheduler.running:
            scheduler.shutdown(wait=False)  # cancels a poll at its next await: nothing half-written
        try:
            # Everything stops together; the bound covers a stop stuck behind a slow lease tick.
            await asyncio.wait_for(asyncio.gather(runner.cleanup(), workers.stop(), _finish(events, grace)),
                                   grace + HTTP_DRAIN + 5)
        except TimeoutError:
            log.warning("shutdown overran its bound: operations still running are re-queued at the next start")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await rt.close()
        rt.store.close()
        log.info("jml stopped")
    return 0


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.warning("already shutting down", extra={"signal": sig.name})
    stop.set()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jml")
    except PackageNotFoundError:
        return "dev"


# ---- the demo's daemon ----------------------------------------------------------------------
def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _sample_leaver(workdir: Path) -> dict[str, str] | None:
    """An active person from the demo export, as HR's termination would describe them."""
    try:
        with (workdir / "exports" / "export.csv").open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("status") == "Active" and not any("'" in v for v in row.values()):
                    return {**row, "status": "Terminated", "termination_date": dt.date.today().isoformat()}
    except OSError:
        return None
    return None


def _banner(url: str, workdir: Path) -> str:
    token = os.environ.get("JML_ADMIN_TOKEN", "(set JML_ADMIN_TOKEN)")
    jml = shlex.quote(sys.argv[0]) if Path(sys.argv[0]).name == "jml" else "jml"
    cfg_path = shlex.quote(str(workdir / "jml.yaml"))
    lines = [
        "",
        f"jml is running: status page {url}",
        f"  sign in with the admin token: {token}",
        f"  health {url}healthz · readiness {url}readyz · metrics {url}metrics",
        "",
    ]
    person = _sample_leaver(workdir)
    if person is not None:
        eid = person["employee_id"]
        env = f"DEMO_SCIM_TOKEN={shlex.quote(os.environ.get('DEMO_SCIM_TOKEN', ''))}"
        lines += [
            f"try an offboard (another terminal, this directory: {Path.cwd()}):",
            f"  {env} {jml} --config {cfg_path} offboard {eid} --reason 'demo leaver'",
        ]
        secret = os.environ.get("JML_WEBHOOK_SECRET")
        if secret:
            body = json.dumps({"id": f"demo-{eid}", "type": "termination",
                               "occurred_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                               "person": person}, separators=(",", ":"))
            lines += [
                "or as HR's signed webhook:",
                f"  body={shlex.quote(body)}",
                f"  t=$(date +%s); sig=$(printf '%s' \"$t.$body\" | openssl dgst -sha256 -hmac {shlex.quote(secret)}"
                " | sed 's/^.* //')",
                f"  curl -s -H \"X-JML-Signature: t=$t,v1=$sig\" -H 'Content-Type: application/json' "
                f"--data \"$body\" {url}webhooks/hr",
            ]
        lines.append("then watch the status page: the leaver is deprovisioned in the stand-in app.")
    lines += ["", "Ctrl-C stops jml (and the stand-in)."]
    return "\n".join(lines)


def serve_demo(cfg: Config, port: int, workdir: Path, story: bool = True, approvers: tuple[str, ...] = ()) -> int:
    """`jml demo`'s daemon on 127.0.0.1:`port` (a free port if that one is taken), until Ctrl-C;
    with `story`, HR's side plays a short scenario by itself (jml/demo_story.py; `approvers`: API
    tokens with the approver role, for its access request)."""
    host = "127.0.0.1"
    if not _port_free(host, port):
        print(f"port {port} is taken: using a free one", file=sys.stderr)
        port = 0
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"listen": f"{host}:{port}"})})

    def ready(url: str) -> None:
        print(_banner(url, workdir), flush=True)
        if story:
            import threading

            from jml.demo_story import play

            threading.Thread(target=play, args=(url, workdir, os.environ.get("JML_ADMIN_TOKEN", "")),
                             kwargs={"say": lambda line: print(line, flush=True), "approvers": approvers}, daemon=True,
                             name="demo-story").start()

    try:
        return asyncio.run(serve(cfg, on_ready=ready))
    except KeyboardInterrupt:
        return 0
