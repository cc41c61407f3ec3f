"""One benchmark peer in its own process (so its Python never shares jml's GIL).

    .venv/bin/python -m bench.peers_server KIND --port N [options]

KIND is one of:

* `scim`   scim2-server (already its own binary), supervised from here: `--token`.
* `aws`    the AWS Identity Center SCIM wrapper (tests/vendor_peers/aws_scim.py) in front of
           `--upstream` (a scim2-server base URL ending in /v2).
* `moto`   moto's server (sso-admin) with the permission sets `--permission-set` created;
           the ready line carries the instance ARN.
* `slack`  the Slack SCIM wrapper (tests/vendor_peers/slack_scim.py) in front of `--upstream`,
           with Slack's own limits (`--vendor-limits`) or lifted ones.
* `github` the loopback GitHub (tests/vendor_peers/github.py), invited users auto-accept;
           with `--vendor-limits`, from the first reset on, a write sooner than a second after
           the previous write's answer is refused as GitHub's secondary limit (403).
* `probe`  no peer: GETs each of `--targets` (JSON list of {name, url, method, headers, body})
           every `--interval` seconds and keeps the latencies, so peer latency is measured from
           a process that is neither jml nor the peer. Its requests carry `X-Bench-Probe`,
           and the other kinds leave them out of their timings and counts.

Once serving it prints one line `PEER-READY {json}` on stdout (url, port, and what the bench
needs). Every kind but `scim` answers `GET /__peer/stats` (counters, and handling times in ms
since the last reset) and `POST /__peer/reset`. The process ends on SIGTERM/SIGINT, when its
stdin reaches EOF (the bench died), or after `--max-seconds`, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

READY = "PEER-READY "
STATS = "/__peer/stats"
RESET = "/__peer/reset"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
PROBE = "X-Bench-Probe"  # header on the probe's requests: left out of timings and counts


def ready(**info: Any) -> None:
    print(READY + json.dumps(info), flush=True)


def summary(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    s = sorted(ms)
    p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
    return {"n": len(s), "p50": round(statistics.median(s), 2), "p99": round(p99, 2), "max": round(s[-1], 2)}


def watch_parent(max_seconds: float, on_exit: Callable[[], None]) -> None:
    """End the process when stdin closes (the bench is gone) or the lifetime is over."""
    deadline = time.monotonic() + max_seconds

    def stdin_eof() -> None:
        try:
            while sys.stdin.buffer.read(1):
                pass
        except (OSError, ValueError):
            pass
        on_exit()

    def lifetime() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        on_exit()

    threading.Thread(target=stdin_eof, daemon=True).start()
    threading.Thread(target=lifetime, daemon=True).start()


class Timings:
    """Handling time of every request since the last reset, and counts by a key."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.counts: Counter[str] = Counter()

    def reset(self) -> None:
        self.ms.clear()
        self.counts.clear()


# ---- the aiohttp peers (wrappers, GitHub) ---------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_aiohttp(port: int, handle: Handler, stats: Callable[[], dict[str, Any]], timings: Timings,
                        count_key: Callable[[web.Request, web.StreamResponse], str | None], stop: asyncio.Event,
                        **info: Any) -> None:
    async def timed(request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        response = await handle(request)
        if PROBE in request.headers:  # the bench's latency probe: not the connector's traffic
            return response
        timings.ms.append((time.perf_counter() - t0) * 1000)
        key = count_key(request, response)
        if key:
            timings.counts[key] += 1
        return response

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response({"handle_ms": summary(timings.ms), "counts": dict(timings.counts), **stats()})

    async def reset(_request: web.Request) -> web.Response:
        timings.reset()
        return web.json_response({})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get(STATS, get_stats)
    app.router.add_post(RESET, reset)
    app.router.add_route("*", "/{tail:.*}", timed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ready(url=f"http://127.0.0.1:{port}/", port=port, pid=os.getpid(), **info)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def write_key(request: web.Request, response: web.StreamResponse) -> str | None:
    """'delete Users' for a write the vendor took (any answer but 429: a 404 still counts)."""
    if request.method not in WRITES or response.status == 429:
        return None
    parts = [p for p in request.path.split("/") if p]
    resource = next((p for p in parts if p in ("Users", "Groups")), parts[-2] if len(parts) > 1 else request.path)
    verb = "update" if request.method in ("PUT", "PATCH") else request.method.lower()
    return f"{verb} {resource}"


async def run_aws(args: argparse.Namespace, stop: asyncio.Event) -> None:
    import aiohttp

    from tests.vendor_peers.aws_scim import AwsScimProxy

    proxy = AwsScimProxy(args.upstream)
    proxy.url = f"http://127.0.0.1:{args.port}/"
    proxy._session = aiohttp.ClientSession()
    timings = Timings()
    try:
        await serve_aiohttp(args.port, proxy._handle, lambda: {"violations": len(proxy.violations)}, timings,
                            write_key, stop, scim_url=proxy.scim_url)
    finally:
        await proxy._session.close()


async def run_slack(args: argparse.Namespace, stop: asyncio.Event) -> None:
    import aiohttp

    from tests.vendor_peers.slack_scim import SlackScimProxy

    limits: dict[str, Any] = {} if args.vendor_limits else {
        "per_minute": 10**7, "burst": 10**6, "overall_per_minute": 10**7, "overall_burst": 10**6}
    proxy = SlackScimProxy(args.upstream, args.token, **limits)
    proxy.url = f"http://127.0.0.1:{args.port}/"
    proxy._session = aiohttp.ClientSession()
    timings = Timings()
    base = {"rate_limited": 0}

    def stats() -> dict[str, Any]:
        return {"rate_limited": proxy.rate_limited - base["rate_limited"], "rate_limited_total": proxy.rate_limited}

    def key(request: web.Request, response: web.StreamResponse) -> str | None:
        if response.status == 429:
            return "429"
        return write_key(request, response)

    real_reset = timings.reset

    def reset() -> None:
        base["rate_limited"] = proxy.rate_limited
        proxy.seen.clear()  # the wrapper keeps every request: keep memory flat between phases
        real_reset()

    timings.reset = reset  # type: ignore[method-assign]
    try:
        await serve_aiohttp(args.port, proxy._handle, stats, timings, key, stop,
                            vendor_limits=args.vendor_limits)
    finally:
        await proxy._session.close()


async def run_github(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from tests.vendor_peers.github import GithubFake
    from tests.vendor_peers.openapi_validator import description

    description()  # build the OpenAPI validator before serving
    gh = GithubFake()
    gh.auto_accept = True
    gh.url = f"http://127.0.0.1:{args.port}"
    timings = Timings()
    real_reset = timings.reset

    def reset() -> None:
        gh.seen.clear()
        gh.secondary_limited = 0
        if args.vendor_limits:  # from the measured phase on (the setup runs with limits lifted)
            gh.min_write_gap = 1.0  # GitHub: "wait at least one second between each" write
        real_reset()

    timings.reset = reset  # type: ignore[method-assign]

    def key(request: web.Request, response: web.StreamResponse) -> str | None:
        return "write" if request.method in WRITES and response.status != 429 else None

    await serve_aiohttp(args.port, gh._handle, lambda: {"invalid": len(gh.invalid), "remaining": gh.remaining,
                                                   "secondary_limited": gh.secondary_limited},
                        timings, key, stop, token=gh.token, org=gh.org, api_url=gh.url)


# ---- probe ----------------------------------------------------------------------------------

async def run_probe(args: argparse.Namespace, stop: asyncio.Event) -> None:
    import aiohttp

    targets: list[dict[str, Any]] = json.loads(args.targets)
    samples: dict[str, list[float]] = {t["name"]: [] for t in targets}
    errors: Counter[str] = Counter()

    async def loop(session: aiohttp.ClientSession, t: dict[str, Any]) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                async with session.request(t.get("method", "GET"), t["url"], headers=t.get("headers") or {},
                                           data=t.get("body")) as r:
                    await r.read()
                    ok = r.status < 500
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                samples[t["name"]].append((time.perf_counter() - t0) * 1000)
            else:
                errors[t["name"]] += 1
            with_rest = max(0.0, args.interval - (time.perf_counter() - t0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), with_rest)

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response({name: summary(ms) | {"errors": errors[name]} for name, ms in samples.items()})

    async def reset(_request: web.Request) -> web.Response:
        for ms in samples.values():
            ms.clear()
        errors.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_get(STATS, get_stats)
    app.router.add_post(RESET, reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        loops = [asyncio.create_task(loop(session, t)) for t in targets]
        ready(url=f"http://127.0.0.1:{args.port}/", port=args.port, pid=os.getpid())
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*loops, return_exceptions=True)
            await runner.cleanup()


# ---- moto (WSGI, threaded) ------------------------------------------------------------------

def run_moto(args: argparse.Namespace) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "testing"  # never real credentials, even towards loopback
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(key, None)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    timings = Timings()
    lock = threading.Lock()
    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in (STATS, RESET):
            if path == RESET:
                with lock:
                    timings.reset()
                body = b"{}"
            else:
                with lock:
                    body = json.dumps({"handle_ms": summary(list(timings.ms)), "counts": dict(timings.counts)}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        t0 = time.perf_counter()
        out = list(moto_app(environ, start_response))
        if "HTTP_X_BENCH_PROBE" in environ:
            return out  # moto answers whole bodies: time the full answer
        action = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2] or "other"
        with lock:
            timings.ms.append((time.perf_counter() - t0) * 1000)
            timings.counts[action] += 1
        return out

    class Quiet(MotoRequestHandler):
        def log_request(self, *a: Any, **k: Any) -> None:
            pass

    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=Quiet)
    url = f"http://127.0.0.1:{args.port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5).close()
    import boto3

    sso = boto3.client("sso-admin", region_name=args.region, endpoint_url=url)
    instance_arn = sso.list_instances()["Instances"][0]["InstanceArn"]
    for name in args.permission_set:
        sso.create_permission_set(Name=name, InstanceArn=instance_arn)
    with lock:
        timings.reset()
    done = threading.Event()
    watch_parent(args.max_seconds, done.set)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    ready(url=url, port=args.port, pid=os.getpid(), instance_arn=instance_arn)
    done.wait()
    server.shutdown()


# ---- scim2-server (supervised) -------------------------------------------------------------

SCIM2_SERVER_MAIN = ("import socketserver, sys; socketserver.TCPServer.request_queue_size = 1024; "
                     "sys.argv[0] = 'scim2-server'; from scim2_server.testserver.cli import main; main()")


def run_scim(args: argparse.Namespace) -> None:
    from tests.peers import wait_http

    # scim2-server's stdlib server speaks HTTP/1.0 (a connection per request) and listens with
    # socketserver's backlog of 5: under a leaver wave the kernel dropped SYNs (ListenOverflows),
    # and every drop cost a 1 s retransmit that no real SaaS endpoint would add. Same server,
    # a production-sized backlog.
    proc = subprocess.Popen(
        [sys.executable, "-c", SCIM2_SERVER_MAIN,
         "--hostname", "127.0.0.1", "--port", str(args.port), "--bearer-token", args.token],
        stdout=sys.stderr, stderr=sys.stderr)
    done = threading.Event()
    watch_parent(args.max_seconds, done.set)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        url = f"http://127.0.0.1:{args.port}/v2/"
        wait_http(url + "ServiceProviderConfig")
        ready(url=url, port=args.port, pid=os.getpid(), server_pid=proc.pid, token=args.token)
        while not done.wait(0.5):
            if proc.poll() is not None:
                raise SystemExit(f"scim2-server exited with {proc.returncode}")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["scim", "aws", "moto", "slack", "github", "probe"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", help="aws/slack: the scim2-server base URL (…/v2)")
    ap.add_argument("--token", default="test-scim-token", help="scim: bearer token; slack: the token it accepts")
    ap.add_argument("--vendor-limits", action="store_true",
                    help="slack: enforce Slack's own rate limits; github: GitHub's second between writes")
    ap.add_argument("--permission-set", action="append", default=[], help="moto: create this permission set")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--targets", default="[]", help="probe: JSON list of {name, url, method?, headers?, body?}")
    ap.add_argument("--interval", type=float, default=0.1, help="probe: seconds between requests to one target")
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long whatever happens")
    args = ap.parse_args()
    if args.kind == "moto":
        run_moto(args)
        return
    if args.kind == "scim":
        run_scim(args)
        return
    runner = {"aws": run_aws, "slack": run_slack, "github": run_github, "probe": run_probe}[args.kind]

    async def amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch_parent(args.max_seconds, lambda: loop.call_soon_threadsafe(stop.set))
        await runner(args, stop)

    asyncio.run(amain())


if __name__ == "__main__":
    main()
