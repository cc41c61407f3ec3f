"""Benchmark: apply throughput against scim2-server, jml's engine beside a bare aiohttp client.

    .venv/bin/python bench/bench_apply.py [--people 2000] [--runs 5] [--concurrency 8]

Each run starts a fresh scim2-server (the same server, HTTP/1.0 as it ships, a
production-sized listen backlog, as bench_leavers does) per side and pushes, in its own
process:

  jml    `jml sync` of the generator's export (creates: one account per person, no groups),
         then of the same export with every job title changed (updates). Timed: the push
         (engine, outbox, store, audit), not the planning before it.
  bare   an aiohttp client sending the requests jml sends, at the same concurrency: per
         create one search (`externalId eq … or userName eq …`) and one POST of the same
         body; per update one PATCH replacing the title. Nothing durable is written.

The two sides alternate (which goes first alternates too); the figure is the median of the
runs, with the host's load average at each. Two figures: sustained (operations per second
between the 10th and 90th percentile of completion times: the pace kept, without start-up,
discovery and tail) and end to end (all operations over the push's wall time). Target: jml's
sustained creates/s and updates/s >= 80% of the bare client's.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "bench" / "gen_hris.py"
TOKEN = "bench-apply-token"
SCIM2_SERVER_MAIN = ("import socketserver, sys; socketserver.TCPServer.request_queue_size = 1024; "
                     "sys.argv[0] = 'scim2-server'; from scim2_server.testserver.cli import main; main()")

CONFIG = """
state: {{url: "sqlite:///{db}"}}
sources:
  hris: {{location: "{export}", format: csv, profile: generic, timezone: Europe/Berlin}}
guard: {{max_deprovision_percent: 50, max_deprovision_count: 100000, max_shrink_percent: 50}}
policy:
  username: "{{work_email}}"
  rules:
    - name: everyone
      when: {{status: [Active, Leave]}}
      grant: {{app: []}}
connectors:
  app: {{type: scim, url: "{url}", token_env: BENCH_TOKEN, concurrency: {concurrency}}}
"""

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sustained(times: list[float]) -> float:
    """Operations per second between the 10th and the 90th percentile of completion times:
    the pace kept once started, without either side's start-up and tail."""
    ts = sorted(times)
    lo, hi = ts[len(ts) // 10], ts[(len(ts) * 9) // 10]
    n = (len(ts) * 9) // 10 - len(ts) // 10
    return n / (hi - lo) if hi > lo else float("nan")


# ---- jml -----------------------------------------------------------------------------------

def run_jml(url: str, work: Path, day0: Path, day1: Path, concurrency: int, progress: float) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from jml import config as config_mod
    from jml import progress as progress_mod
    from jml.commands import _open_by_connector
    from jml.commands import work as push
    from jml.runtime import Runtime
    from jml.sync import plan_cycle

    os.environ["BENCH_TOKEN"] = TOKEN
    export = work / "hr.csv"
    cfg_path = work / "jml.yaml"
    cfg_path.write_text(CONFIG.format(db=work / "jml.db", export=export, url=url, concurrency=concurrency),
                        encoding="utf-8")
    out: dict[str, Any] = {}
    for phase, src in (("create", day0), ("update", day1)):
        export.write_bytes(src.read_bytes())

        async def one(phase: str = phase) -> tuple[float, float, int, dict[str, int]]:
            rt = Runtime(config_mod.load(cfg_path))
            try:
                outcome = await plan_cycle(rt)
                if outcome.held:
                    raise SystemExit(f"plan held: {outcome.reasons}")
                summary = outcome.summary()
                # The connectors' modules imported (scim2-models: 0.6 s of CPU) before the clock
                # starts, as a daemon has them long before its next plan: per operation, not start-up.
                rt.connectors()
                t0, c0 = time.perf_counter(), _cpu()
                async with progress_mod.watch(lambda: _open_by_connector(rt), sys.stderr, interval=progress,
                                              tty=False):
                    await push(rt, outcome.plan_id, timeout=3600)
                seconds, cpu = time.perf_counter() - t0, _cpu() - c0
                counts = rt.outbox.plan_state_counts(outcome.plan_id) if outcome.plan_id else {}
                return seconds, cpu, summary.get(phase, 0), counts
            finally:
                await rt.close()
                rt.store.close()

        seconds, cpu, n, counts = asyncio.run(one())
        if counts.get("done", 0) != sum(counts.values()):
            raise SystemExit(f"jml {phase}: not all done: {counts}")
        db = sqlite3.connect(work / "jml.db")
        done = [dt.datetime.fromisoformat(r[0]).timestamp() for r in db.execute(
            "SELECT done_at FROM operation WHERE action = ? AND state = 'done'", (phase,))]
        db.close()
        out[phase] = {"seconds": seconds, "ops": n, "per_s": n / seconds, "sustained_per_s": _sustained(done),
                      "cpu_ms_per_op": 1000 * cpu / n}
    return out


# ---- bare aiohttp ----------------------------------------------------------------------------

def _body(r: dict[str, str]) -> dict[str, Any]:
    first = r["preferred_name"] or r["first_name"]
    return {
        "schemas": [USER, ENTERPRISE], "externalId": r["employee_id"], "userName": r["work_email"],
        "name": {"formatted": f"{first} {r['last_name']}", "familyName": r["last_name"], "givenName": first},
        "displayName": f"{first} {r['last_name']}", "title": r["job_title"],
        "userType": r["employment_type"], "active": True,
        "emails": [{"value": r["work_email"], "type": "work", "primary": True}],
        "addresses": [{"locality": r["location"], "country": r["country"], "type": "work", "primary": True}],
        ENTERPRISE: {"employeeNumber": r["employee_id"], "costCenter": r["cost_center"], "department": r["department"]},
    }


def run_bare(url: str, day0: Path, day1: Path, concurrency: int) -> dict[str, Any]:
    import aiohttp

    with day0.open(newline="", encoding="utf-8") as f:
        rows0 = list(csv.DictReader(f))
    with day1.open(newline="", encoding="utf-8") as f:
        titles = {r["employee_id"]: r["job_title"] for r in csv.DictReader(f)}
    rows0 = [r for r in rows0 if r["status"] in ("Active", "Leave")]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json",
               "Accept": "application/scim+json"}
    ids: dict[str, str] = {}
    finished: list[float] = []

    async def main() -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(url, headers=headers,
                                         connector=aiohttp.TCPConnector(limit=concurrency)) as s:
            async def create(r: dict[str, str]) -> None:
                async with sem:
                    flt = f'externalId eq "{r["employee_id"]}" or userName eq "{r["work_email"]}"'
                    async with s.get("Users", params={"filter": flt}) as resp:
                        resp.raise_for_status()
                        found = await resp.json(content_type=None)
                    if found.get("totalResults"):
                        raise SystemExit("bare: account already there")
                    async with s.post("Users", json=_body(r)) as resp:
                        resp.raise_for_status()
                        ids[r["employee_id"]] = (await resp.json(content_type=None))["id"]
                    finished.append(time.monotonic())

            async def update(eid: str) -> None:
                async with sem:
                    body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title",
                                                                 "value": titles[eid]}]}
                    async with s.patch(f"Users/{ids[eid]}", json=body) as resp:
                        resp.raise_for_status()
                        await resp.read()
                    finished.append(time.monotonic())

            out: dict[str, Any] = {}
            t0, c0 = time.perf_counter(), _cpu()
            await asyncio.gather(*(create(r) for r in rows0))
            seconds, cpu = time.perf_counter() - t0, _cpu() - c0
            out["create"] = {"seconds": seconds, "ops": len(rows0), "per_s": len(rows0) / seconds,
                             "sustained_per_s": _sustained(finished), "cpu_ms_per_op": 1000 * cpu / len(rows0)}
            finished.clear()
            t0, c0 = time.perf_counter(), _cpu()
            await asyncio.gather(*(update(eid) for eid in ids))
            seconds, cpu = time.perf_counter() - t0, _cpu() - c0
            out["update"] = {"seconds": seconds, "ops": len(ids), "per_s": len(ids) / seconds,
                             "sustained_per_s": _sustained(finished), "cpu_ms_per_op": 1000 * cpu / len(ids)}
            return out

    return asyncio.run(main())


# ---- driver ----------------------------------------------------------------------------------

def _server() -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(ROOT))
    from tests.peers import free_port, wait_http

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SCIM2_SERVER_MAIN, "--hostname", "127.0.0.1", "--port", str(port),
                             "--bearer-token", TOKEN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v2/"
    wait_http(url + "ServiceProviderConfig")
    return proc, url


def _proc_cpu(pid: int) -> float:
    """utime + stime of a child process still running (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _side(side: str, work: Path, day0: Path, day1: Path, concurrency: int, progress: float) -> dict[str, Any]:
    proc, url = _server()
    try:
        side_dir = work / side
        side_dir.mkdir(exist_ok=True)
        for f in side_dir.glob("*"):
            f.unlink()
        out = subprocess.run([sys.executable, __file__, "--side", side, "--url", url, "--work", str(side_dir),
                              "--day0", str(day0), "--day1", str(day1), "--concurrency", str(concurrency),
                              "--progress", str(progress)],
                             check=True, capture_output=True, text=True, cwd=ROOT)
        res = dict(json.loads(out.stdout.strip().splitlines()[-1]))
        # The server's CPU over both phases (and its start): what each side's requests cost it.
        res["server_cpu_s"] = _proc_cpu(proc.pid)
        return res
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--progress", type=float, default=0.0,
                    help="jml: a plain progress line every N seconds during the push (0: none)")
    ap.add_argument("--sides", default="jml,bare", help="what to compare, e.g. jml,bare or jml,jml-progress")
    ap.add_argument("--side")
    ap.add_argument("--url")
    ap.add_argument("--work")
    ap.add_argument("--day0")
    ap.add_argument("--day1")
    a = ap.parse_args()
    if a.side:
        day0, day1 = Path(a.day0), Path(a.day1)
        if a.side.startswith("jml"):
            res = run_jml(a.url, Path(a.work), day0, day1, a.concurrency, a.progress)
        else:
            res = run_bare(a.url, day0, day1, a.concurrency)
        print(json.dumps(res))
        return 0
    work = Path(tempfile.mkdtemp(prefix="jml-bench-apply-"))
    day0, day1 = work / "day0.csv", work / "day1.csv"
    subprocess.run([sys.executable, str(GEN), "--people", str(a.people), "--seed", "1", "--out", str(day0)], check=True)
    with day0.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    with day1.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "job_title": r["job_title"] + " II"})
    sides = a.sides.split(",")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    try:
        _runs(a, sides, results, work, day0, day1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(a, sides, results)
    return 0


def _runs(a: argparse.Namespace, sides: list[str], results: dict[str, list[dict[str, Any]]], work: Path,
          day0: Path, day1: Path) -> None:
    for i in range(a.runs):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for side in order:
            if side == "jml-progress":
                progress = a.progress or 1.0
            elif side == "jml" and "jml-progress" in sides:
                progress = 0.0
            else:
                progress = a.progress
            load = os.getloadavg()[0]
            r = _side(side, work, day0, day1, a.concurrency, progress)
            r["load"] = load
            results[side].append(r)
            print(json.dumps({"run": i, "side": side, **r}), flush=True)


def _report(a: argparse.Namespace, sides: list[str], results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n{a.people:,} people, concurrency {a.concurrency}, {a.runs} interleaved runs, median "
          f"(host load {min(r['load'] for v in results.values() for r in v):.1f}-"
          f"{max(r['load'] for v in results.values() for r in v):.1f}, 2 cores)\n")
    floor = sides[-1]
    print("sustained = operations/s between the 10th and 90th percentile of completions; "
          "end to end = all operations / the push's wall time (start-up and tail included)\n")
    print(f"{'':8} {'figure':12} " + " ".join(f"{s + ' /s':>14}" for s in sides) + f" {'ratio':>7} {'target':>7}"
          + "   CPU ms/op " + " ".join(sides))
    for phase in ("create", "update"):
        cpu = {s: statistics.median(r[phase]["cpu_ms_per_op"] for r in results[s]) for s in sides}
        for figure, key in (("sustained", "sustained_per_s"), ("end to end", "per_s")):
            med = {s: statistics.median(r[phase][key] for r in results[s]) for s in sides}
            ratio = med[sides[0]] / med[floor]
            print(f"{phase + 's':8} {figure:12} " + " ".join(f"{med[s]:14.0f}" for s in sides)
                  + f" {ratio:7.2f} {'>= 0.80' if figure == 'sustained' else '':>7}   "
                  + (" ".join(f"{cpu[s]:.2f}" for s in sides) if figure == "sustained" else ""))
    server = {s: statistics.median(r["server_cpu_s"] * 1000 / (r["create"]["ops"] + r["update"]["ops"])
                                   for r in results[s]) for s in sides}
    print("\nscim2-server's CPU per operation (both phases, its start included): "
          + ", ".join(f"{s} {server[s]:.2f} ms" for s in sides))


if __name__ == "__main__":
    sys.exit(main())
