"""Leaver fast path: webhook accepted -> every connector confirmed.

    .venv/bin/python -m bench.bench_leavers [--people 400] [--leavers 200] [--over 10] [--limits lifted|vendor]
                                            [--connectors scim,aws,slack,github]

Four loopback peers, each in its OWN PROCESS (bench/peers_server.py), so their Python never
shares this process's GIL: scim2-server (scim); scim2-server behind the AWS Identity Center
wrapper + moto's server (aws); scim2-server behind the Slack wrapper (slack); the loopback
GitHub (github, org mode). The daemon's parts run in this process exactly as `jml serve`
wires them: the webhook routes on a real TCP port, the event processor, the engine. The
peers are stopped at the end, always (and they exit by themselves when this process dies).

1. `--limits lifted` (default): `--people` provisioned, then `--leavers` Okta deactivate
   webhooks spread evenly over `--over` seconds; for each leaver, the time from the 200 to
   every operation of that person done on every connector (each confirmed by the app: the
   SCIM PATCH answers with the resource, Slack's DELETE is read back, AWS's assignment
   deletion is polled to SUCCEEDED, GitHub answers the DELETE 204); p50 / p99 / max. Then
   `verified_p50_s` / `verified_p99_s`: to the person's SLA clock stopped by a separate
   read-back (inactive, no groups, no assignments) in every connector.
2. `--limits vendor`: each connector at its vendor default (Slack 3 writes/s per endpoint,
   AWS 20 TPS, GitHub 5,000/h and a second between writes); the Slack wrapper enforces
   Slack's own limit and the GitHub peer its second between writes, so every 429 (Slack) and
   403 secondary limit (GitHub) they answer is counted. The leavers arrive at once; the run
   time is compared with the rate-limit floor computed from the writes the peers took during
   the run (`floor`).

Peer latency: a probe process (peers_server `probe`) GETs each peer every 0.25 s, for 5 s
with everything idle before the run (`peer_latency_ms.idle`) and throughout the run
(`peer_latency_ms.during_run`). (Measuring must not take what it measures: probing every
0.1 s cost the peers and the probe 0.23 of a core, every 0.25 s 0.09.) The wrappers also report
their own handling time (`peer_handle_ms`, upstream included). `cpu_percent_during_run` and
`cpu_ms_per_leaver` give this process's (jml and the webhook sender) and each peer's CPU during
the measured phase (`cpu_ms_per_leaver_with_proofs`: up to the last SLA clock stopped by its
read-back, the window bench/bench_leavers_bare.py compares with a bare script);
`cores_needed_at_offered_rate` what that work needs at `--leavers / --over`
per second: past the host's cores, queues grow whatever jml does. `host.python_loop_s` times a
fixed loop just before the run: a shared host's speed drifts, so compare runs of like speed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jml import events, heap, metrics
from jml.config import from_dict
from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.store.tables import OperationRow, SlaClockRow
from jml.sync import plan_cycle
from jml.webhooks import add_routes
from tests.peers import free_port

OKTA = "bench-okta-secret"
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
C = SlaClockRow.__table__  # type: ignore[attr-defined]
VERIFY_TIMEOUT = 300.0  # seconds the proofs may take after the pushes
HEADER = "employee_id,first_name,last_name,work_email,department,status,hire_date,github_username\n"
ALL = ("scim", "aws", "slack", "github")
ACCOUNT = "111111111111"
TOKENS = {"scim": "bench-scim-token", "aws": "bench-aws-token", "slack": "xoxp-bench"}
READY_TIMEOUT = 120.0
PROBE_INTERVAL = 0.25  # seconds between the probe's reads of one peer
CLK = os.sysconf("SC_CLK_TCK")


class Peers:
    """Peer processes (bench/peers_server.py): started, awaited, and always stopped."""

    def __init__(self, logdir: Path, max_seconds: float) -> None:
        self.logdir, self.max_seconds = logdir, max_seconds
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lines: dict[str, queue.Queue[bytes]] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, kind: str, *args: str) -> int:
        port = free_port()
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.peers_server", kind, "--port", str(port),
             "--max-seconds", str(self.max_seconds), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=Path(__file__).resolve().parent.parent)
        self.procs[name] = proc
        lines: queue.Queue[bytes] = queue.Queue()
        self.lines[name] = lines

        def read() -> None:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                lines.put(line)
            lines.put(b"")

        threading.Thread(target=read, daemon=True).start()
        return port

    def wait(self, *names: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for name in names:
            while name not in self.info:
                try:
                    line = self.lines[name].get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"peer {name} not ready after {READY_TIMEOUT:g} s") from None
                if not line:
                    log = (self.logdir / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"peer {name} exited before it was ready:\n{log}")
                if line.startswith(b"PEER-READY "):
                    self.info[name] = json.loads(line[len(b"PEER-READY "):])

    def cpu_seconds(self) -> dict[str, float]:
        """utime + stime of each peer's serving process (scim2-server itself for `scim`)."""
        out: dict[str, float] = {}
        for name, info in self.info.items():
            try:
                fields = Path(f"/proc/{info.get('server_pid', info['pid'])}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = (int(fields[11]) + int(fields[12])) / CLK
        return out

    def runqueue_wait(self) -> dict[str, float]:
        """Seconds each peer's threads spent runnable but waiting for a CPU (/proc/…/schedstat)."""
        return {name: runqueue_wait(info.get("server_pid", info["pid"])) for name, info in self.info.items()}

    def stats(self, name: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.info[name]['port']}/__peer/stats", timeout=10) as r:
            return dict(json.loads(r.read()))

    def reset(self, *names: str) -> None:
        for name in names:
            req = urllib.request.Request(f"http://127.0.0.1:{self.info[name]['port']}/__peer/reset", method="POST")
            urllib.request.urlopen(req, timeout=10).close()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        for log in self._logs:
            log.close()


def start_peers(peers: Peers, connectors: tuple[str, ...], vendor_limits: bool) -> dict[str, Any]:
    """Start the peers `connectors` need, in parallel, upstreams before the wrappers."""
    if "scim" in connectors:
        peers.start("scim", "scim", "--token", TOKENS["scim"])
    if "aws" in connectors:
        peers.start("aws-scim2", "scim", "--token", TOKENS["aws"])
        peers.start("moto", "moto", "--permission-set", "Developer")
    if "slack" in connectors:
        peers.start("slack-scim2", "scim", "--token", TOKENS["slack"])
    if "github" in connectors:
        peers.start("github", "github", *(["--vendor-limits"] if vendor_limits else []))
    if "aws" in connectors:
        peers.wait("aws-scim2")
        peers.start("aws", "aws", "--upstream", peers.info["aws-scim2"]["url"])
    if "slack" in connectors:
        peers.wait("slack-scim2")
        peers.start("slack", "slack", "--upstream", peers.info["slack-scim2"]["url"].removesuffix("/v2/"),
                    "--token", TOKENS["slack"], *(["--vendor-limits"] if vendor_limits else []))
    peers.wait(*peers.procs)
    return peers.info


def probe_targets(info: dict[str, Any], connectors: tuple[str, ...], who: int) -> list[dict[str, Any]]:
    """One cheap read per peer, of a person who stays (not a leaver)."""
    user = f"user{who}@acme.example"
    flt = "?filter=" + urllib.parse.quote(f'userName eq "{user}"')
    out: list[dict[str, Any]] = []
    if "scim" in connectors:
        out.append({"name": "scim", "url": info["scim"]["url"] + "Users" + flt,
                    "headers": {"Authorization": f"Bearer {TOKENS['scim']}"}})
    if "aws" in connectors:
        out.append({"name": "aws", "url": info["aws"]["scim_url"] + "Users" + flt,
                    "headers": {"Authorization": f"Bearer {TOKENS['aws']}"}})
        out.append({"name": "moto", "url": info["moto"]["url"] + "/", "method": "POST", "body": json.dumps({
            "InstanceArn": info["moto"]["instance_arn"], "PrincipalId": "nobody", "PrincipalType": "USER"}),
            "headers": {"X-Amz-Target": "SWBExternalService.ListAccountAssignmentsForPrincipal",
                        "Content-Type": "application/x-amz-json-1.1",
                        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sso/aws4_request, "
                                         "SignedHeaders=host, Signature=0"}})
    if "slack" in connectors:
        out.append({"name": "slack", "url": info["slack"]["url"] + "v2/Users" + flt,
                    "headers": {"Authorization": f"Bearer {TOKENS['slack']}"}})
    if "github" in connectors:
        out.append({"name": "github", "url": f"{info['github']['api_url']}/orgs/acme/memberships/user{who}",
                    "headers": {"Authorization": f"Bearer {info['github']['token']}", "User-Agent": "jml-bench",
                                "X-GitHub-Api-Version": "2022-11-28", "Accept": "application/vnd.github+json"}})
    for t in out:
        t["headers"]["X-Bench-Probe"] = "1"
    return out


def config(tmp: Path, info: dict[str, Any], connectors: tuple[str, ...], vendor_limits: bool,
           slack_enforces: bool = False) -> Any:
    """`slack_enforces`: the Slack peer enforces Slack's limits, so even the (unmeasured)
    setup keeps jml's Slack defaults rather than provoking 429s."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[key] = "testing"  # never real credentials, even towards loopback
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(key, None)
    os.environ.update(BENCH_SCIM=TOKENS["scim"], BENCH_SLACK=TOKENS["slack"], BENCH_AWS=TOKENS["aws"],
                      BENCH_OKTA=OKTA)
    if "github" in info:
        os.environ["BENCH_GH"] = info["github"]["token"]
    lifted: dict[str, Any] = {} if vendor_limits else {"rate_limit": 100000, "burst": 100000}
    every: dict[str, Any] = {}
    if "scim" in connectors:
        every["scim"] = {"type": "scim", "url": info["scim"]["url"], "token_env": "BENCH_SCIM", "concurrency": 16}
    if "slack" in connectors:
        every["slack"] = {"type": "slack", "scim_url": info["slack"]["url"] + "v2/", "token_env": "BENCH_SLACK",
                          "concurrency": 16, **({} if slack_enforces else lifted)}
    if "aws" in connectors:
        every["aws"] = {"type": "aws_identity_center", "scim_url": info["aws"]["scim_url"], "token_env": "BENCH_AWS",
                        "instance_arn": info["moto"]["instance_arn"], "region": "us-east-1",
                        "endpoint_url": info["moto"]["url"], "concurrency": 16, **lifted}
    if "github" in connectors:
        every["github"] = {"type": "github", "mode": "org", "org": info["github"]["org"],
                           "api_url": info["github"]["api_url"], "token_env": "BENCH_GH", "concurrency": 16, **lifted}
    grants = {"scim": ["All Staff"], "slack": ["all-staff"], "aws": [f"Developer@{ACCOUNT}"], "github": ["team:staff"]}
    return from_dict({
        "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
        "server": {"max_body_bytes": 4_000_000},
        "sources": {"hris": {"location": str(tmp / "exports"), "format": "csv"},
                    "okta": {"secret_env": "BENCH_OKTA"}},
        "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100000,
                  "max_event_leavers_per_hour": 100000},
        "policy": {"username": "{work_email}", "rules": [{"name": "everyone", "when": {"status": ["Active"]},
                                                          "grant": {c: grants[c] for c in connectors}}]},
        "connectors": every}, tmp)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def open_leavers(rt: Runtime) -> int:
    """Leaver operations not done yet (the measured phase ends when this reaches 0)."""
    with rt.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(O).where(
            O.c.priority == 0, O.c.state != "done")).scalar_one())


def finish_times(rt: Runtime, leavers: list[str]) -> dict[str, dt.datetime]:
    """When each leaver's last operation was recorded done (the engine's own `done_at`, the
    time the result was committed), for leavers with every leaver operation done (on every
    connector where they have an account)."""
    last: dict[str, dt.datetime] = {}
    open_: set[str] = set()
    with rt.store.engine.connect() as conn:
        for eid, state, done in conn.execute(select(O.c.employee_id, O.c.state, O.c.done_at).where(
                O.c.employee_id.in_(leavers), O.c.priority == 0)):
            if state != "done":
                open_.add(eid)
            else:
                last[eid] = max(last.get(eid, done), done)
    return {e: t for e, t in last.items() if e not in open_}


async def verified_times(rt: Runtime, leavers: list[str], timeout: float) -> dict[str, dt.datetime]:
    """When each leaver's last SLA clock was verified, once all of a leaver's clocks are
    (waiting up to `timeout` seconds for the rest)."""
    deadline = time.monotonic() + timeout
    while True:
        last: dict[str, dt.datetime] = {}
        open_: set[str] = set()
        with rt.store.engine.connect() as conn:
            for eid, at in conn.execute(select(C.c.employee_id, C.c.verified_at).where(
                    C.c.employee_id.in_(leavers))):
                if at is None:
                    open_.add(eid)
                else:
                    last[eid] = max(last.get(eid, at), at)
        if not open_ or time.monotonic() > deadline:
            return {e: t for e, t in last.items() if e not in open_}
        await asyncio.sleep(0.5)


def floors(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds the writes the peers took during the run need at least, per connector, under
    (a) the vendor's documented limit and (b) jml's default bucket for that connector."""
    out: dict[str, Any] = {}
    slack = stats.get("slack")
    if slack is not None:
        per = {k: n for k, n in slack["counts"].items() if k != "429"}
        total = sum(per.values())

        def slack_floor(rate: float, burst: int, overall: float, overall_burst: int) -> float:
            worst = max([max(0, n - burst) / rate for n in per.values()] or [0.0])
            return max(worst, max(0, total - overall_burst) / overall)

        out["slack"] = {"writes": per, "vendor_s": round(slack_floor(3, 20, 10, 180), 2),
                        "jml_default_s": round(slack_floor(3, 10, 10, 20), 2)}
    moto = stats.get("moto")
    if moto is not None:
        calls = sum(moto["counts"].values())
        scim_writes = sum(stats.get("aws", {}).get("counts", {}).values())
        out["aws"] = {"sso_admin_calls": moto["counts"], "scim_writes": scim_writes,
                      "vendor_s": round(calls / 20, 2), "jml_default_s": round(max(0, calls - 10) / 10, 2)}
    gh = stats.get("github")
    if gh is not None:
        writes = gh["counts"].get("write", 0)
        out["github"] = {"writes": writes, "vendor_s": round(max(0, writes - 1) / 1.0, 2),
                         "jml_default_s": round(max(0, writes - 1) / 1.0, 2)}  # one at a time, 1 s apart
    out["floor_vendor_s"] = max([v["vendor_s"] for v in out.values()] or [0.0])
    out["floor_jml_default_s"] = max([v["jml_default_s"] for k, v in out.items() if isinstance(v, dict)] or [0.0])
    return out


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)  # SQLite hands back naive UTC


def runqueue_wait(pid: int | str = "self") -> float:
    """Seconds the process's threads have waited on a run queue (CPU contention), 0 if unknown."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(task.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def request_counts() -> dict[str, float]:
    """Requests jml sent so far, by connector and method+endpoint (jml_connector_http_request_duration_seconds)."""
    out: dict[str, float] = {}
    for family in metrics.REGISTRY.collect():
        if family.name != "jml_connector_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                key = f"{sample.labels['connector']} {sample.labels['method']}"
                out[key] = out.get(key, 0.0) + sample.value
    return out


def host_speed() -> float:
    """Seconds a fixed pure-Python loop takes here now. (Seen on one 2-core VM within an hour:
    0.84 s and 1.69 s, so figures are comparable only between runs at a similar speed.)"""
    t0 = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return round(time.perf_counter() - t0, 3)


def cpu_now() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    vendor = args.limits == "vendor"
    connectors = tuple(c for c in ALL if c in args.connectors.split(","))
    assert connectors and set(args.connectors.split(",")) <= set(ALL), f"--connectors: choose among {ALL}"
    assert args.people > args.leavers, "--people must exceed --leavers (a stayer is probed)"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        peers = Peers(tmp, max_seconds=args.timeout + 600)
        try:
            return await measure(args, tmp, peers, connectors, vendor)
        finally:
            await asyncio.to_thread(peers.close)


async def measure(args: argparse.Namespace, tmp: Path, peers: Peers, connectors: tuple[str, ...],
                  vendor: bool) -> dict[str, Any]:
    t_peers = time.monotonic()
    info = await asyncio.to_thread(start_peers, peers, connectors, vendor)
    peers_up = time.monotonic() - t_peers
    (tmp / "exports").mkdir()
    rows = [f"E{i:05d},First{i},Last{i},user{i}@acme.example,Eng,Active,2020-01-01,user{i}\n"
            for i in range(args.people)]
    (tmp / "exports" / "hr.csv").write_text(HEADER + "".join(rows))
    # Provision with limits lifted (setup is not what is measured), then the real config.
    rt0 = Runtime(config(tmp, info, connectors, False, slack_enforces=vendor))
    await rt0.open_connectors()
    t0 = time.monotonic()
    outcome = await plan_cycle(rt0)
    await build_engine(rt0, poll_interval=0.02).run_until_idle(plan_id=outcome.plan_id)
    setup = time.monotonic() - t0
    dead = rt0.outbox.counts()
    await rt0.close()
    rt0.store.close()
    # Peer latency with everything idle, then the probe keeps going through the run.
    peers.start("probe", "probe", "--interval", str(PROBE_INTERVAL),
                "--targets", json.dumps(probe_targets(info, connectors, args.people - 1)))
    await asyncio.to_thread(peers.wait, "probe")
    await asyncio.sleep(5.0)
    idle = await asyncio.to_thread(peers.stats, "probe")
    served = [n for n in ("aws", "moto", "slack", "github") if n in info]
    await asyncio.to_thread(peers.reset, "probe", *served)

    rt = Runtime(config(tmp, info, connectors, vendor))
    await rt.open_connectors()
    engine = build_engine(rt)  # as `jml serve` builds it: woken by new plans, else every 0.5 s
    ctx = ServiceContext(rt, engine)
    app = web.Application(client_max_size=4_000_000)
    add_routes(app, ctx)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    heap.settle()  # as `jml serve` does once it is up (jml/heap.py)
    tasks = [asyncio.create_task(engine.run_forever(ctx.stopping, grace=1)),
             asyncio.create_task(events.run_event_processor(ctx))]
    leavers = [f"E{i:05d}" for i in range(args.leavers)]
    # Wall-clock (UTC) times, comparable with the outbox's done_at: read after the run, so the
    # measurement itself does not poll the database while jml works.
    accepted: dict[str, dt.datetime] = {}

    async def send(session: aiohttp.ClientSession, batch: list[int]) -> None:
        body = json.dumps({"eventType": "com.okta.event_hook", "data": {"events": [
            {"uuid": f"bench-{i}", "published": dt.datetime.now(dt.UTC).isoformat(),
             "eventType": "user.lifecycle.deactivate",
             "target": [{"type": "User", "alternateId": f"user{i}@acme.example"}]} for i in batch]}})
        async with session.post(f"http://127.0.0.1:{port}/webhooks/okta", data=body, headers={
                "Authorization": OKTA, "Content-Type": "application/json"}) as r:
            assert r.status == 200, r.status
        now = dt.datetime.now(dt.UTC)
        for i in batch:
            accepted[f"E{i:05d}"] = now

    async def watch() -> None:
        while len(accepted) < len(leavers) or open_leavers(rt) or \
                len(finish_times(rt, leavers)) < len(leavers):
            await asyncio.sleep(0.25)

    speed = host_speed()
    peer_cpu0, cpu0, load0 = peers.cpu_seconds(), cpu_now(), os.getloadavg()[0]
    wait0, peer_wait0 = runqueue_wait(), peers.runqueue_wait()
    requests0 = request_counts()
    watcher = asyncio.create_task(watch())
    pushed = False
    start = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            if vendor:
                await send(session, list(range(args.leavers)))
            else:
                gap = args.over / args.leavers
                senders = []
                for i in range(args.leavers):
                    await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
                    senders.append(asyncio.create_task(send(session, [i])))
                await asyncio.gather(*senders)
        await asyncio.wait_for(watcher, args.timeout)
        pushed = True
    finally:
        total = time.monotonic() - start
        cpu = cpu_now() - cpu0
        peer_cpu1 = peers.cpu_seconds()
        waited, peer_wait1 = runqueue_wait() - wait0, peers.runqueue_wait()
        requests = {k: int(v - requests0.get(k, 0)) for k, v in sorted(request_counts().items())
                    if v > requests0.get(k, 0)}
        watcher.cancel()
        # The proofs: every leaver's SLA clock in every connector stopped by a read-back
        # (they wait while pushes are queued, at most a tenth of the SLA: jml.sla.Verifier).
        proven = await verified_times(rt, leavers, VERIFY_TIMEOUT) if pushed else {}
        # The same window as bench_leavers_bare's floor: from the first webhook to the last proof.
        cpu_proofs = cpu_now() - cpu0
        peer_cpu2 = peers.cpu_seconds()
        requests_proofs = {k: int(v - requests0.get(k, 0)) for k, v in sorted(request_counts().items())
                           if v > requests0.get(k, 0)}
        ctx.stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
    during = await asyncio.to_thread(peers.stats, "probe")
    served_stats = {n: await asyncio.to_thread(peers.stats, n) for n in served}
    counts = rt.outbox.counts()
    per: dict[str, list[float]] = {}
    with rt.store.engine.connect() as conn:
        for c, a, created, done in conn.execute(select(O.c.connector, O.c.action, O.c.created_at, O.c.done_at)
                                                .where(O.c.priority == 0, O.c.done_at.is_not(None))):
            per.setdefault(f"{c}/{a}", []).append((done - created).total_seconds())
    await rt.close()
    rt.store.close()
    finished = finish_times(rt, leavers)
    lat = [(_aware(finished[e]) - accepted[e]).total_seconds() for e in leavers]
    proof = [(_aware(proven[e]) - accepted[e]).total_seconds() for e in leavers if e in proven]
    cpu_ms = {"bench": round(1000 * cpu / args.leavers, 1), **{
        n: round(1000 * (peer_cpu1[n] - peer_cpu0[n]) / args.leavers, 1) for n in peer_cpu1 if n in peer_cpu0}}
    offered = args.leavers / args.over if not vendor else 0.0
    out: dict[str, Any] = {
        "people": args.people, "leavers": args.leavers, "limits": args.limits, "connectors": list(connectors),
        "peers_up_s": round(peers_up, 1), "setup_s": round(setup, 1),
        "setup_outbox": {f"{c}/{s}": n for (c, s), n in dead.items()},
        "p50_s": round(statistics.median(lat), 3), "p99_s": round(pct(lat, 0.99), 3),
        "max_s": round(max(lat), 3), "total_s": round(total, 2),
        # webhook 200 -> the SLA clock stopped by a read-back in every connector (None: not all proven)
        "verified_p50_s": round(statistics.median(proof), 3) if len(proof) == len(leavers) else None,
        "verified_p99_s": round(pct(proof, 0.99), 3) if len(proof) == len(leavers) else None,
        "per_connector_p50_s": {c: round(statistics.median(v), 3) for c, v in sorted(per.items())},
        "per_connector_p99_s": {c: round(pct(v, 0.99), 3) for c, v in sorted(per.items())},
        "per_connector_max_s": {c: round(max(v), 3) for c, v in sorted(per.items())},
        "requests_per_leaver": {k: round(v / args.leavers, 2) for k, v in requests.items()},
        # From the first webhook to the last SLA clock stopped by its read-back (all proven):
        # what bench/bench_leavers_bare.py compares with its bare script.
        "requests_per_leaver_with_proofs": {k: round(v / args.leavers, 2) for k, v in requests_proofs.items()},
        "cpu_ms_per_leaver_with_proofs": {"bench": round(1000 * cpu_proofs / args.leavers, 1), **{
            n: round(1000 * (peer_cpu2[n] - peer_cpu0[n]) / args.leavers, 1) for n in peer_cpu2 if n in peer_cpu0}},
        "peer_latency_ms": {"idle": idle, "during_run": during},
        "peer_handle_ms": {n: s["handle_ms"] for n, s in served_stats.items()},
        "host": {"cpus": os.cpu_count(), "python_loop_s": speed, "loadavg_1m_before": round(load0, 2),
                 "loadavg_1m_after": round(os.getloadavg()[0], 2)},
        "cpu_percent_during_run": {"bench": round(100 * cpu / total, 1), **{
            n: round(100 * (peer_cpu1[n] - peer_cpu0[n]) / total, 1) for n in peer_cpu1 if n in peer_cpu0}},
        # CPU each process spent per leaver, and the cores that work needs at the offered rate
        # (leavers / --over): more than the host has, and queues must grow whatever jml does.
        "cpu_ms_per_leaver": cpu_ms, "cores_needed_at_offered_rate": {
            "jml": round(cpu_ms["bench"] * offered / 1000, 2),
            "peers": round(sum(v for k, v in cpu_ms.items() if k not in ("bench", "probe")) * offered / 1000, 2),
            "offered_leavers_per_s": round(offered, 2)},
        # Time runnable but not running (another process had the CPU), as % of the run's wall time.
        "runqueue_wait_percent_during_run": {"bench": round(100 * waited / total, 1), **{
            n: round(100 * (peer_wait1[n] - peer_wait0[n]) / total, 1) for n in peer_wait1 if n in peer_wait0}},
        "slack_429": served_stats["slack"]["rate_limited"] if "slack" in served_stats else None,
        "peer_violations": {"aws_400": served_stats["aws"]["violations"] if "aws" in served_stats else None,
                            "github_invalid": served_stats["github"]["invalid"] if "github" in served_stats else None,
                            "github_secondary_limited": (served_stats["github"]["secondary_limited"]
                                                         if "github" in served_stats else None)},
        "outbox_after": {f"{c}/{s}": n for (c, s), n in counts.items()}}
    if vendor:
        fl = floors(served_stats)
        out["floor"] = fl
        out["total_over_floor_vendor"] = round(total / fl["floor_vendor_s"], 3) if fl["floor_vendor_s"] else None
        out["total_over_floor_jml_default"] = (round(total / fl["floor_jml_default_s"], 3)
                                               if fl["floor_jml_default_s"] else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--leavers", type=int, default=200)
    ap.add_argument("--over", type=float, default=10.0)
    ap.add_argument("--limits", choices=["lifted", "vendor"], default="lifted")
    ap.add_argument("--connectors", default=",".join(ALL), help="comma-separated subset of scim,aws,slack,github")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds the measured phase may take at most")
    print(json.dumps(asyncio.run(run(ap.parse_args())), indent=2))


if __name__ == "__main__":
    main()
