"""Goal 4's floor: the same leavers handled by a bare script, and jml's CPU per leaver against it.

    .venv/bin/python -m bench.bench_leavers_bare [--runs 3] [--connectors scim,aws,github]
                                                 [--people 400] [--leavers 200] [--over 10]
    .venv/bin/python -m bench.bench_leavers_bare --side bare|jml ...   (one run of one side, JSON)

Without `--side` the two sides alternate, `--runs` times each (the first side swaps every run),
each run a fresh process with fresh peers (bench/bench_leavers.py's: every peer in its own
process, 400 people provisioned by jml, which is set-up and not measured), and the summary
gives each side's CPU per leaver, the medians, and jml's ratio to the bare script (the goal:
at most 2x), with the host's load before and after every run.

Both sides measure their own process's CPU (utime + stime) from the first webhook sent to the
last SLA clock stopped by a read-back, divided by the leavers: the same window, the same Okta
webhooks from the same sender (its CPU is in both figures), the same peers and requests.

* `jml` is bench_leavers' run as it is (`cpu_ms_per_leaver_with_proofs`).
* `bare` is what a script with no framework does for the same leavers: an aiohttp route takes
  the Okta webhook (secret checked, JSON parsed, the person looked up by e-mail), and for each
  leaver and connector sends, with aiohttp, exactly the requests jml sends (counted on jml's
  side, bench_leavers `requests_per_leaver` and a capture of its HTTP and sso-admin calls):

  - scim: PATCH Users/{id}?attributes=active (active false), then the removal from "All Staff"
    (one PATCH carries every removal queued meanwhile; a group written in the last second
    waits 0.1 s first, as jml's connector does), read-back GET Users/{id} and GET Groups
    ?filter=members.value eq "{id}"&excludedAttributes=members;
  - aws: PATCH Users/{id}?attributes=active, ListAccountAssignmentsForPrincipal (account
    filter) then DeleteAccountAssignment (DescribeAccountAssignmentDeletionStatus while
    IN_PROGRESS), read-back GET Users/{id}, GET Groups?filter=members.value eq "{id}" and
    ListAccountAssignmentsForPrincipal; the sso-admin calls are JSON POSTs signed with SigV4
    (hmac/hashlib: the least a real client must do);
  - github: DELETE /orgs/{org}/memberships/{login} (the team removal needs no request),
    read-back GET /users/{login} and GET /orgs/{org}/memberships/{login}.

  Durable writes, plain sqlite3 (WAL, synchronous=NORMAL, as jml's store), one transaction
  each: the webhook's leaver (event row, the leaver's operations as outbox rows, one SLA clock
  per connector, an audit row) before the 200; every operation done (outbox row's state and
  result, an audit row); every clock stopped by its read-back (clock, audit row).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_leavers import (
    ACCOUNT,
    ALL,
    HEADER,
    OKTA,
    PROBE_INTERVAL,
    TOKENS,
    Peers,
    config,
    cpu_now,
    host_speed,
    pct,
    probe_targets,
    runqueue_wait,
    start_peers,
)
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.sync import plan_cycle
from tests.peers import free_port

CONCURRENCY = 16  # per connector, as bench_leavers configures jml
GROUP = "All Staff"
BUSY_WINDOW, GROUP_LINGER = 1.0, 0.1  # connectors/scim/membership.py
SCIM_JSON = {"Accept": "application/scim+json", "Content-Type": "application/scim+json"}
GH = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "bare"}
INACTIVE = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "active", "value": False}]})
SCHEMA = """
create table event (id text primary key, received_at text, body text);
create table outbox (id integer primary key, employee_id text, connector text, action text,
                     detail text, state text, created_at text, done_at text, result text);
create table sla_clock (id integer primary key, employee_id text, connector text, started_at text,
                        deadline text, verified_at text, last_check text);
create table audit (id integer primary key, at text, kind text, subject text, data text);
"""
# The operations jml plans for a leaver in each connector (bench_leavers' policy).
OPERATIONS = {"scim": [("deactivate", {}), ("remove_member", {"group": GROUP})],
              "aws": [("deactivate", {}), ("unassign", {"grant": f"Developer@{ACCOUNT}"})],
              "github": [("deactivate", {}), ("remove_member", {"group": "team:staff"})]}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# ---- SigV4 for sso-admin (JSON protocol) ------------------------------------------------------
def sigv4(url: str, target: str, body: bytes, region: str = "us-east-1", service: str = "sso") -> dict[str, str]:
    host = urllib.parse.urlsplit(url).netloc
    amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {"content-type": "application/x-amz-json-1.1", "host": host, "x-amz-date": amz,
               "x-amz-target": f"SWBExternalService.{target}"}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
                           hashlib.sha256(body).hexdigest()])
    scope = f"{amz[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
    for part in (amz[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items() if k != "host"}
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={os.environ['AWS_ACCESS_KEY_ID']}/{scope}, "
                            f"SignedHeaders={signed}, Signature={sig}")
    return out


class Bare:
    """The bare leaver script: one process, one sqlite3 connection, aiohttp sessions."""

    def __init__(self, db: Path, info: dict[str, Any], connectors: tuple[str, ...], people: dict[str, dict[str, str]],
                 leavers: int) -> None:
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.info, self.connectors, self.people = info, connectors, people
        self.by_email = {p["email"]: eid for eid, p in people.items()}
        self.gates = {c: asyncio.Semaphore(CONCURRENCY) for c in connectors}
        self.requests: Counter[str] = Counter()
        self.unverified: list[str] = []
        self.open_clocks = leavers * len(connectors)
        self.all_verified = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.group_id = ""
        self.ps_arn = ""
        self._queued: list[tuple[str, asyncio.Future[None]]] = []
        self._group_lock = asyncio.Lock()
        self._last_write = -BUSY_WINDOW
        self.verified_at: dict[str, float] = {}

    # ---- durable writes: one transaction each ----
    def tx(self, *statements: tuple[str, tuple[Any, ...]]) -> list[int]:
        ids = []
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                ids.append(self.db.execute(sql, params).lastrowid or 0)
        return ids

    def enqueue(self, event_id: str, body: str, eid: str) -> tuple[dict[str, list[int]], dict[str, int]]:
        at = now()
        deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).isoformat()
        ops: dict[str, list[int]] = {}
        clocks: dict[str, int] = {}
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("insert into event values (?, ?, ?)", (event_id, at, body))
            for c in self.connectors:
                ops[c] = [self.db.execute(
                    "insert into outbox (employee_id, connector, action, detail, state, created_at) "
                    "values (?, ?, ?, ?, 'pending', ?)", (eid, c, a, json.dumps(d), at)).lastrowid or 0
                    for a, d in OPERATIONS[c]]
                clocks[c] = self.db.execute(
                    "insert into sla_clock (employee_id, connector, started_at, deadline) values (?, ?, ?, ?)",
                    (eid, c, at, deadline)).lastrowid or 0
            self.db.execute("insert into audit (at, kind, subject, data) values (?, 'leaver', ?, ?)",
                            (at, eid, json.dumps({"event": event_id, "connectors": list(self.connectors)})))
        return ops, clocks

    def done(self, op_id: int, eid: str, connector: str, action: str, result: dict[str, Any]) -> None:
        at, data = now(), json.dumps(result)
        self.tx(("update outbox set state = 'done', done_at = ?, result = ? where id = ?", (at, data, op_id)),
                ("insert into audit (at, kind, subject, data) values (?, 'operation_done', ?, ?)",
                 (at, eid, json.dumps({"connector": connector, "action": action, "result": result}))))

    def verified(self, clock_id: int, eid: str, connector: str, ok: bool, why: str) -> None:
        at = now()
        check = json.dumps({"result": "verified" if ok else "not_verified", "at": at, "detail": why})
        self.tx(("update sla_clock set verified_at = ?, last_check = ? where id = ?",
                 (at if ok else None, check, clock_id)),
                ("insert into audit (at, kind, subject, data) values (?, ?, ?, ?)",
                 (at, "deprovision_verified" if ok else "deprovision_not_verified", eid,
                  json.dumps({"connector": connector, "verified_at": at, "check": why}))))
        if not ok:
            self.unverified.append(f"{connector}/{eid}: {why}")
        self.verified_at[eid] = time.monotonic()
        self.open_clocks -= 1
        if self.open_clocks == 0:
            self.all_verified.set()

    # ---- HTTP ----
    async def call(self, peer: str, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        async with self.sessions[peer].request(method, url, **kw) as r:
            body = await r.read()
            self.requests[f"{peer} {method}"] += 1
            if r.status >= 400 and r.status != 404:
                raise RuntimeError(f"{method} {url}: {r.status} {body[:200]!r}")
            return r.status, json.loads(body) if body else None

    async def sso(self, target: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = self.info["moto"]["url"] + "/"
        body = json.dumps(payload).encode()
        async with self.sessions["moto"].post(url, data=body, headers=sigv4(url, target, body)) as r:
            got = await r.read()
            self.requests[f"sso-admin {target}"] += 1
            if r.status == 400 and b"ResourceNotFoundException" in got:
                raise LookupError(f"{target}: not found")
            if r.status >= 400:
                raise RuntimeError(f"{target}: {r.status} {got[:200]!r}")
            return dict(json.loads(got))

    def scim_base(self, c: str) -> str:
        return str(self.info["scim"]["url"] if c == "scim" else self.info["aws"]["scim_url"])

    async def deactivate(self, c: str, uid: str) -> dict[str, Any]:
        _, user = await self.call(c, "PATCH", f"{self.scim_base(c)}Users/{uid}", params={"attributes": "active"},
                                  data=INACTIVE, headers=SCIM_JSON)
        if user is not None and user.get("active") is not False:
            raise RuntimeError(f"{c}: {uid} still active")
        return {"remote_id": uid}

    async def remove_from_group(self, uid: str) -> dict[str, Any]:
        """jml's connector: one PATCH carries every removal queued while the group is written."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((uid, mine))
        async with self._group_lock:
            while self._queued and not mine.done():
                if time.monotonic() - self._last_write < BUSY_WINDOW:
                    await asyncio.sleep(GROUP_LINGER)
                batch, self._queued = self._queued, []
                body = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
                    {"op": "remove", "path": f'members[value eq "{u}"]'} for u, _ in batch]})
                try:
                    await self.call("scim", "PATCH", f"{self.scim_base('scim')}Groups/{self.group_id}", data=body,
                                    headers=SCIM_JSON)
                except Exception as e:
                    for _, f in batch:
                        f.set_exception(e)
                else:
                    for _, f in batch:
                        f.set_result(None)
                finally:
                    self._last_write = time.monotonic()
        await mine
        return {"remote_id": uid}

    async def unassign(self, uid: str) -> dict[str, Any]:
        inst = self.info["moto"]["instance_arn"]
        held = await self.sso("ListAccountAssignmentsForPrincipal", {
            "InstanceArn": inst, "PrincipalId": uid, "PrincipalType": "USER", "MaxResults": 100,
            "Filter": {"AccountId": ACCOUNT}})
        if not any(a.get("PermissionSetArn") == self.ps_arn for a in held.get("AccountAssignments", [])):
            return {"note": "not assigned"}
        try:
            out = await self.sso("DeleteAccountAssignment", {
                "InstanceArn": inst, "TargetId": ACCOUNT, "TargetType": "AWS_ACCOUNT",
                "PermissionSetArn": self.ps_arn, "PrincipalType": "USER", "PrincipalId": uid})
        except LookupError:  # as jml's connector: gone meanwhile is done
            return {"note": "not assigned"}
        status = out["AccountAssignmentDeletionStatus"]
        delay = 0.1
        while status.get("Status") == "IN_PROGRESS":
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            status = (await self.sso("DescribeAccountAssignmentDeletionStatus", {
                "InstanceArn": inst, "AccountAssignmentDeletionRequestId": status["RequestId"]}))[
                "AccountAssignmentDeletionStatus"]
        if status.get("Status") == "FAILED":
            raise RuntimeError(f"unassign {uid}: {status}")
        return {"remote_id": uid, "note": "unassigned"}

    async def read_back(self, c: str, person: dict[str, str]) -> tuple[bool, str]:
        if c == "github":
            base, login = self.info["github"]["api_url"], person["github"]
            _, user = await self.call(c, "GET", f"{base}/users/{login}", headers=GH)
            if user is None:
                return True, "gone"
            org = self.info["github"]["org"]
            status, membership = await self.call(c, "GET", f"{base}/orgs/{org}/memberships/{login}", headers=GH)
            return status == 404, "not a member" if status == 404 else f"membership {membership}"
        uid = person[c]
        status, user = await self.call(c, "GET", f"{self.scim_base(c)}Users/{uid}", headers=SCIM_JSON)
        if status == 404:
            return True, "gone"
        flt = f'members.value eq "{uid}"'
        params = ({"filter": flt, "count": "100", "startIndex": "1", "excludedAttributes": "members"} if c == "scim"
                  else {"filter": flt, "count": "100", "cursor": ""})
        _, groups = await self.call(c, "GET", f"{self.scim_base(c)}Groups", params=params, headers=SCIM_JSON)
        held = [g.get("displayName") for g in (groups or {}).get("Resources", [])]
        if c == "aws":
            out = await self.sso("ListAccountAssignmentsForPrincipal", {
                "InstanceArn": self.info["moto"]["instance_arn"], "PrincipalId": uid, "PrincipalType": "USER",
                "MaxResults": 100})
            held += [a["PermissionSetArn"] for a in out.get("AccountAssignments", [])]
        ok = user.get("active") is False and not held
        return ok, "inactive, no groups, no assignments" if ok else f"active={user.get('active')} holds {held}"

    async def connector_chain(self, c: str, eid: str, ops: list[int], clock: int) -> None:
        try:
            await self._chain(c, eid, ops, clock)
        except Exception as e:  # counted (and the run ends) rather than a task dying unseen
            self.verified(clock, eid, c, False, f"{type(e).__name__}: {e}"[:300])

    async def _chain(self, c: str, eid: str, ops: list[int], clock: int) -> None:
        person = self.people[eid]
        async with self.gates[c]:
            for op_id, (action, _) in zip(ops, OPERATIONS[c], strict=True):
                if c == "github":
                    if action == "deactivate":
                        status, _ = await self.call(c, "DELETE", f"{self.info['github']['api_url']}/orgs/"
                                                                 f"{self.info['github']['org']}/memberships/"
                                                                 f"{person['github']}", headers=GH)
                        result: dict[str, Any] = {"status": status}
                    else:
                        result = {"note": "left the org: no team to leave"}
                elif action == "deactivate":
                    result = await self.deactivate(c, person[c])
                elif c == "scim":
                    result = await self.remove_from_group(person[c])
                else:
                    result = await self.unassign(person[c])
                self.done(op_id, eid, c, action, result)
            ok, why = await self.read_back(c, person)
        self.verified(clock, eid, c, ok, why)

    async def leaver(self, eid: str, ops: dict[str, list[int]], clocks: dict[str, int]) -> None:
        await asyncio.gather(*(self.connector_chain(c, eid, ops[c], clocks[c]) for c in self.connectors))

    async def webhook(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), OKTA):
            return web.Response(status=401)
        body = await request.text()
        for event in json.loads(body)["data"]["events"]:
            if event.get("eventType") != "user.lifecycle.deactivate":
                continue
            target: dict[str, Any] = next((t for t in event.get("target", []) if t.get("type") == "User"), {})
            eid = self.by_email.get(str(target.get("alternateId", "")).casefold())
            if eid is None:
                continue
            ops, clocks = self.enqueue(str(event["uuid"]), json.dumps(event), eid)
            task = asyncio.create_task(self.leaver(eid, ops, clocks))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.Response(text="{}", content_type="application/json")


def okta_body(batch: list[int]) -> str:
    """bench_leavers' webhook body for these people."""
    return json.dumps({"eventType": "com.okta.event_hook", "data": {"events": [
        {"uuid": f"bench-{i}", "published": dt.datetime.now(dt.UTC).isoformat(),
         "eventType": "user.lifecycle.deactivate",
         "target": [{"type": "User", "alternateId": f"user{i}@acme.example"}]} for i in batch]}})


async def provision(tmp: Path, info: dict[str, Any], connectors: tuple[str, ...],
                    people: int) -> dict[str, dict[str, str]]:
    """Set-up, not measured: jml provisions the people exactly as on the jml side; the bare
    script then knows each person's ids in each app (as a script reading its own state would)."""
    (tmp / "exports").mkdir()
    rows = [f"E{i:05d},First{i},Last{i},user{i}@acme.example,Eng,Active,2020-01-01,user{i}\n" for i in range(people)]
    (tmp / "exports" / "hr.csv").write_text(HEADER + "".join(rows))
    rt = Runtime(config(tmp, info, connectors, False))
    await rt.open_connectors()
    outcome = await plan_cycle(rt)
    await build_engine(rt, poll_interval=0.02).run_until_idle(plan_id=outcome.plan_id)
    records = rt.store.load_accounts(None)
    await rt.close()
    rt.store.close()
    out: dict[str, dict[str, str]] = {}
    for i in range(people):
        eid = f"E{i:05d}"
        person = {"email": f"user{i}@acme.example", "github": f"user{i}"}
        for c in ("scim", "aws"):
            if c in connectors:
                person[c] = records[(c, eid)].remote_id or ""
        out[eid] = person
    return out


async def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    connectors = tuple(c for c in ALL if c in args.connectors.split(","))
    assert "slack" not in connectors, "the bare script covers scim, aws and github"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        peers = Peers(tmp, max_seconds=args.timeout + 600)
        try:
            info = await asyncio.to_thread(start_peers, peers, connectors, False)
            people = await provision(tmp, info, connectors, args.people)
            return await measure_bare(args, tmp, info, connectors, people, peers)
        finally:
            await asyncio.to_thread(peers.close)


async def measure_bare(args: argparse.Namespace, tmp: Path, info: dict[str, Any], connectors: tuple[str, ...],
                       people: dict[str, dict[str, str]], peers: Peers) -> dict[str, Any]:
    bare = Bare(tmp / "bare.db", info, connectors, people, args.leavers)
    auth = {"scim": {"Authorization": f"Bearer {TOKENS['scim']}"},
            "aws": {"Authorization": f"Bearer {TOKENS['aws']}"},
            "github": {"Authorization": f"Bearer {info['github']['token']}"} if "github" in info else {},
            "moto": {}}
    for peer in (*connectors, *(["moto"] if "aws" in connectors else [])):
        bare.sessions[peer] = aiohttp.ClientSession(headers=auth[peer])
    # What a script looks up once at start (jml too: its caches, counted at 0.005 a leaver).
    if "scim" in connectors:
        _, found = await bare.call("scim", "GET", f"{bare.scim_base('scim')}Groups",
                                   params={"filter": f'displayName eq "{GROUP}"', "count": "10"}, headers=SCIM_JSON)
        bare.group_id = str(found["Resources"][0]["id"])
    if "aws" in connectors:
        inst = info["moto"]["instance_arn"]
        for arn in (await bare.sso("ListPermissionSets", {"InstanceArn": inst, "MaxResults": 100}))["PermissionSets"]:
            ps = await bare.sso("DescribePermissionSet", {"InstanceArn": inst, "PermissionSetArn": arn})
            if ps["PermissionSet"]["Name"] == "Developer":
                bare.ps_arn = arn
    bare.requests.clear()
    # The same latency probe as the jml side runs beside it (its own process, the same load).
    peers.start("probe", "probe", "--interval", str(PROBE_INTERVAL),
                "--targets", json.dumps(probe_targets(info, connectors, args.people - 1)))
    await asyncio.to_thread(peers.wait, "probe")
    app = web.Application(client_max_size=4_000_000)
    app.router.add_post("/webhooks/okta", bare.webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    accepted: dict[str, float] = {}

    async def send(session: aiohttp.ClientSession, batch: list[int]) -> None:
        async with session.post(f"http://127.0.0.1:{port}/webhooks/okta", data=okta_body(batch), headers={
                "Authorization": OKTA, "Content-Type": "application/json"}) as r:
            assert r.status == 200, r.status
        t = time.monotonic()
        for i in batch:
            accepted[f"E{i:05d}"] = t

    speed = host_speed()
    peer_cpu0, cpu0, load0, wait0 = peers.cpu_seconds(), cpu_now(), os.getloadavg()[0], runqueue_wait()
    start = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            gap = args.over / args.leavers
            senders = []
            for i in range(args.leavers):
                await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
                senders.append(asyncio.create_task(send(session, [i])))
            await asyncio.gather(*senders)
        await asyncio.wait_for(bare.all_verified.wait(), args.timeout)
    finally:
        total = time.monotonic() - start
        cpu = cpu_now() - cpu0
        peer_cpu1, waited = peers.cpu_seconds(), runqueue_wait() - wait0
        await runner.cleanup()
        for s in bare.sessions.values():
            await s.close()
        bare.db.close()
    lat = [bare.verified_at[e] - accepted[e] for e in accepted]
    cpu_ms = {"bench": round(1000 * cpu / args.leavers, 1), **{
        n: round(1000 * (peer_cpu1[n] - peer_cpu0[n]) / args.leavers, 1) for n in peer_cpu1 if n in peer_cpu0}}
    return {"side": "bare", "people": args.people, "leavers": args.leavers, "connectors": list(connectors),
            "total_s": round(total, 2), "verified_p50_s": round(statistics.median(lat), 3),
            "verified_p99_s": round(pct(lat, 0.99), 3), "unverified": bare.unverified[:5],
            "unverified_count": len(bare.unverified),
            "requests_per_leaver": {k: round(v / args.leavers, 2) for k, v in sorted(bare.requests.items())},
            "cpu_ms_per_leaver_with_proofs": cpu_ms,
            "runqueue_wait_percent_during_run": round(100 * waited / total, 1),
            "host": {"cpus": os.cpu_count(), "python_loop_s": speed, "loadavg_1m_before": round(load0, 2),
                     "loadavg_1m_after": round(os.getloadavg()[0], 2)}}


def one_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of one side in a fresh process (its JSON on stdout)."""
    common = ["--connectors", args.connectors, "--people", str(args.people), "--leavers", str(args.leavers),
              "--over", str(args.over), "--timeout", str(args.timeout)]
    cmd = ([sys.executable, "-m", "bench.bench_leavers", *common] if side == "jml"
           else [sys.executable, "-m", "bench.bench_leavers_bare", "--side", "bare", *common])
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                          check=False)
    if done.returncode:
        return {"side": side, "error": done.stderr[-2000:], "loadavg_1m_at_start": round(load, 2)}
    out: dict[str, Any] = json.loads(done.stdout)
    out["side"] = side
    return out


def compare(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        for side in (("jml", "bare") if i % 2 == 0 else ("bare", "jml")):
            r = one_side(side, args)
            cpu = r.get("cpu_ms_per_leaver_with_proofs", {}).get("bench")
            runs.append({"run": i + 1, "side": side, "cpu_ms_per_leaver": cpu,
                         "jml_cpu_ms_per_leaver_pushes_only": r.get("cpu_ms_per_leaver", {}).get("bench"),
                         "peers_cpu_ms_per_leaver": {k: v for k, v in r.get("cpu_ms_per_leaver_with_proofs", {}).items()
                                                     if k not in ("bench", "probe")},
                         "verified_p99_s": r.get("verified_p99_s"), "total_s": r.get("total_s"),
                         "requests_per_leaver": r.get("requests_per_leaver_with_proofs", r.get("requests_per_leaver")),
                         "host": r.get("host"), **({"error": r["error"]} if "error" in r else {}),
                         **({"unverified": r["unverified"]} if r.get("unverified") else {})})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    jml = [r["cpu_ms_per_leaver"] for r in runs if r["side"] == "jml" and r["cpu_ms_per_leaver"]]
    bare = [r["cpu_ms_per_leaver"] for r in runs if r["side"] == "bare" and r["cpu_ms_per_leaver"]]
    loads = [v for r in runs if r.get("host") for v in (r["host"]["loadavg_1m_before"], r["host"]["loadavg_1m_after"])]
    out: dict[str, Any] = {"connectors": args.connectors, "leavers": args.leavers, "over_s": args.over, "runs": runs}
    if jml and bare:
        out["summary"] = {
            "jml_cpu_ms_per_leaver_median": round(statistics.median(jml), 1), "jml_range": [min(jml), max(jml)],
            "bare_cpu_ms_per_leaver_median": round(statistics.median(bare), 1), "bare_range": [min(bare), max(bare)],
            "ratio_of_medians": round(statistics.median(jml) / statistics.median(bare), 2),
            "ratio_range": [round(min(jml) / max(bare), 2), round(max(jml) / min(bare), 2)],
            "target": "<= 2", "loadavg_1m_range": [min(loads), max(loads)] if loads else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["bare", "jml"], help="one run of one side (default: both, alternating)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each side when comparing")
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--leavers", type=int, default=200)
    ap.add_argument("--over", type=float, default=10.0)
    ap.add_argument("--connectors", default="scim,aws,github", help="comma-separated subset of scim,aws,github")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    if args.side == "bare":
        out = asyncio.run(run_bare(args))
    elif args.side == "jml":
        out = one_side("jml", args)
    else:
        out = compare(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
