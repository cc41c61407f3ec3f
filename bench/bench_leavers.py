"""Leaver fast path: webhook accepted -> every connector confirmed.

    .venv/bin/python -m bench.bench_leavers [--people 400] [--leavers 200] [--over 10] [--limits lifted|vendor]

Four loopback peers: scim2-server (scim); scim2-server behind the AWS Identity Center
wrapper + moto (aws); scim2-server behind the Slack wrapper (slack); the loopback GitHub
(github, org mode). The daemon's parts run in this process exactly as `jml serve` wires
them: the webhook routes on a real TCP port, the event processor, the engine.

1. `--limits lifted` (default): `--people` provisioned, then `--leavers` Okta deactivate
   webhooks spread evenly over `--over` seconds; for each leaver, the time from the 200 to
   every operation of that person done on every connector; p50 / p99 / max.
2. `--limits vendor`: each connector at its vendor default (Slack 3 writes/s per endpoint,
   AWS 20 TPS, GitHub 5,000/h); the Slack wrapper enforces Slack's own limit, so every 429
   it answers is counted. The leavers arrive at once; the run time is compared with the
   rate-limit floor (writes per leaver / allowed writes per second, slowest connector).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jml import events
from jml.config import from_dict
from jml.context import ServiceContext
from jml.runtime import Runtime
from jml.store.tables import OperationRow
from jml.sync import plan_cycle
from jml.webhooks import add_routes
from tests.integration.contract.target_aws import aws_stack
from tests.peers import free_port, scim2_server
from tests.vendor_peers.github import GithubFake
from tests.vendor_peers.slack_scim import SlackScimProxy

OKTA = "bench-okta-secret"
O = OperationRow.__table__  # type: ignore[attr-defined]  # noqa: E741
HEADER = "employee_id,first_name,last_name,work_email,department,status,hire_date,github_username\n"


@contextlib.contextmanager
def peers(vendor_limits: bool) -> Iterator[dict[str, Any]]:
    with scim2_server() as scim, scim2_server(token="xoxp-bench") as slack_peer, aws_stack(("Developer",)) as aws, \
            GithubFake() as gh:
        gh.auto_accept = True
        slack = SlackScimProxy(slack_peer.url.removesuffix("/v2/"), "xoxp-bench",
                               **({} if vendor_limits else {"per_minute": 10**7, "burst": 10**6,
                                                            "overall_per_minute": 10**7, "overall_burst": 10**6}))
        slack.start()
        try:
            yield {"scim": scim, "slack": slack, "aws": aws, "github": gh}
        finally:
            slack.stop()


def config(tmp: Path, p: dict[str, Any], vendor_limits: bool) -> Any:
    os.environ.update(BENCH_SCIM=p["scim"].token, BENCH_SLACK="xoxp-bench", BENCH_AWS=p["aws"].peer.token,
                      BENCH_GH=p["github"].token, BENCH_OKTA=OKTA)
    lifted: dict[str, Any] = {} if vendor_limits else {"rate_limit": 100000, "burst": 100000}
    return from_dict({
        "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
        "server": {"max_body_bytes": 4_000_000},
        "sources": {"hris": {"location": str(tmp / "exports"), "format": "csv"},
                    "okta": {"secret_env": "BENCH_OKTA"}},
        "guard": {"max_deprovision_percent": 100, "max_deprovision_count": 100000,
                  "max_event_leavers_per_hour": 100000},
        "policy": {"username": "{work_email}", "rules": [{"name": "everyone", "when": {"status": ["Active"]}, "grant": {
            "scim": ["All Staff"], "slack": ["all-staff"], "aws": ["Developer@111111111111"],
            "github": ["team:staff"]}}]},
        "connectors": {
            "scim": {"type": "scim", "url": p["scim"].url, "token_env": "BENCH_SCIM", "concurrency": 16},
            "slack": {"type": "slack", "scim_url": p["slack"].url + "v2/", "token_env": "BENCH_SLACK",
                      "concurrency": 16, **lifted},
            "aws": {"type": "aws_identity_center", "scim_url": p["aws"].proxy.scim_url, "token_env": "BENCH_AWS",
                    "instance_arn": p["aws"].instance_arn, "region": "us-east-1", "endpoint_url": p["aws"].moto_url,
                    "concurrency": 16, **lifted},
            "github": {"type": "github", "mode": "org", "org": p["github"].org, "api_url": p["github"].url,
                       "token_env": "BENCH_GH", "concurrency": 16, **lifted},
        }}, tmp)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def done_people(rt: Runtime, pending: set[str]) -> set[str]:
    """People among `pending` whose leaver operations are all done on every connector."""
    with rt.store.engine.connect() as conn:
        rows = conn.execute(select(O.c.employee_id, O.c.connector, O.c.state).where(
            O.c.employee_id.in_(sorted(pending)), O.c.priority == 0)).all()
    seen: dict[str, set[str]] = {}
    open_: set[str] = set()
    for eid, connector, state in rows:
        seen.setdefault(eid, set()).add(connector)
        if state != "done":
            open_.add(eid)
    return {e for e, cs in seen.items() if e not in open_ and len(cs) == 4}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    vendor = args.limits == "vendor"
    with tempfile.TemporaryDirectory() as d, peers(vendor) as p:
        tmp = Path(d)
        (tmp / "exports").mkdir()
        rows = [f"E{i:05d},First{i},Last{i},user{i}@acme.example,Eng,Active,2020-01-01,user{i}\n"
                for i in range(args.people)]
        (tmp / "exports" / "hr.csv").write_text(HEADER + "".join(rows))
        # Provision with limits lifted (setup is not what is measured), then the real config.
        rt0 = Runtime(config(tmp, p, False))
        await rt0.open_connectors()
        t0 = time.monotonic()
        outcome = await plan_cycle(rt0)
        await rt0.engine(poll_interval=0.02).run_until_idle(plan_id=outcome.plan_id)
        setup = time.monotonic() - t0
        dead = rt0.outbox.counts()
        await rt0.close()
        rt0.store.close()
        rt = Runtime(config(tmp, p, vendor))
        await rt.open_connectors()
        engine = rt.engine(poll_interval=0.02)
        ctx = ServiceContext(rt, engine)
        app = web.Application(client_max_size=4_000_000)
        add_routes(app, ctx)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        tasks = [asyncio.create_task(engine.run_forever(ctx.stopping, grace=1)),
                 asyncio.create_task(events.run_event_processor(ctx))]
        leavers = [f"E{i:05d}" for i in range(args.leavers)]
        accepted: dict[str, float] = {}
        finished: dict[str, float] = {}
        slack_429_before = p["slack"].rate_limited

        async def send(session: aiohttp.ClientSession, batch: list[int]) -> None:
            body = json.dumps({"eventType": "com.okta.event_hook", "data": {"events": [
                {"uuid": f"bench-{i}", "published": dt.datetime.now(dt.UTC).isoformat(),
                 "eventType": "user.lifecycle.deactivate",
                 "target": [{"type": "User", "alternateId": f"user{i}@acme.example"}]} for i in batch]}})
            async with session.post(f"http://127.0.0.1:{port}/webhooks/okta", data=body, headers={
                    "Authorization": OKTA, "Content-Type": "application/json"}) as r:
                assert r.status == 200, r.status
            now = time.monotonic()
            for i in batch:
                accepted[f"E{i:05d}"] = now

        async def watch() -> None:
            while len(finished) < len(leavers):
                pending = {e for e in accepted if e not in finished}
                if pending:
                    now = time.monotonic()
                    for e in done_people(rt, pending):
                        finished[e] = now
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        start = time.monotonic()
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
        total = time.monotonic() - start
        ctx.stopping.set()
        await asyncio.gather(*tasks)
        await runner.cleanup()
        counts = rt.outbox.counts()
        per: dict[str, list[float]] = {}
        with rt.store.engine.connect() as conn:
            for c, a, created, done in conn.execute(select(O.c.connector, O.c.action, O.c.created_at, O.c.done_at)
                                                    .where(O.c.priority == 0, O.c.done_at.is_not(None))):
                per.setdefault(f"{c}/{a}", []).append((done - created).total_seconds())
        await rt.close()
        rt.store.close()
        lat = [finished[e] - accepted[e] for e in leavers]
        return {"people": args.people, "leavers": args.leavers, "limits": args.limits, "setup_s": round(setup, 1),
                "setup_outbox": {f"{c}/{s}": n for (c, s), n in dead.items()},
                "p50_s": round(statistics.median(lat), 3), "p99_s": round(pct(lat, 0.99), 3),
                "max_s": round(max(lat), 3), "total_s": round(total, 2),
                "per_connector_p50_s": {c: round(statistics.median(v), 3) for c, v in sorted(per.items())},
                "per_connector_max_s": {c: round(max(v), 3) for c, v in sorted(per.items())},
                "slack_429": p["slack"].rate_limited - slack_429_before,
                "outbox_after": {f"{c}/{s}": n for (c, s), n in counts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--leavers", type=int, default=200)
    ap.add_argument("--over", type=float, default=10.0)
    ap.add_argument("--limits", choices=["lifted", "vendor"], default="lifted")
    ap.add_argument("--timeout", type=float, default=1800.0)
    print(json.dumps(asyncio.run(run(ap.parse_args())), indent=2))


if __name__ == "__main__":
    main()
