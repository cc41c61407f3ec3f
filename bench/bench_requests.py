"""Benchmark: requests per changed person, per SCIM peer (issue 13's figure).

    .venv/bin/python bench/bench_requests.py [--people 10000] [--peers scim2-server,scimmy,...]

For each peer (tests/scim_peers): a first import of the generator's day-0 export (its
requests shown apart: on a filter-less server it includes the listing that serves as the
index), then the generator's default day (1% joiners, 2% movers, 1% leavers) as one
`jml sync`. Every request the peer receives during that sync is counted by a proxy in
front of it, SLA read-backs included, reads and writes apart, and divided by the people
the day changed. Targets on scim2-server: writes <= 1.2, all requests <= 2.0 per person.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jml import config as config_mod  # noqa: E402
from jml.commands import work  # noqa: E402
from jml.runtime import Runtime  # noqa: E402
from jml.sync import plan_cycle  # noqa: E402
from tests.scim_peers import ALL_PEERS  # noqa: E402
from tests.vendor_peers.proxy import VendorProxy  # noqa: E402

GEN = ROOT / "bench" / "gen_hris.py"
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
      grant: {{app: ["All Staff"]}}
    - name: engineering
      when: {{department: [Engineering, Data Science, Security, IT]}}
      grant: {{app: ["Engineering"]}}
    - name: go-to-market
      when: {{department: [Sales, Customer Success, Marketing]}}
      grant: {{app: ["GTM"]}}
connectors:
  app: {{type: scim, url: "{url}", token_env: BENCH_TOKEN, concurrency: {concurrency}}}
"""


def changed_people(day0: Path, day1: Path) -> int:
    def rows(p: Path) -> dict[str, dict[str, str]]:
        with p.open(newline="", encoding="utf-8") as f:
            return {r["employee_id"]: r for r in csv.DictReader(f)}
    a, b = rows(day0), rows(day1)
    return sum(1 for eid, r in b.items() if a.get(eid) != r)


def sync(cfg_path: Path) -> None:
    cfg = config_mod.load(cfg_path)

    async def run() -> None:
        rt = Runtime(cfg)
        try:
            outcome = await plan_cycle(rt)
            if outcome.held:
                raise SystemExit(f"plan held: {outcome.reasons}")
            await work(rt, outcome.plan_id, timeout=3600)
        finally:
            await rt.close()
            rt.store.close()
    asyncio.run(run())


def counts(proxy: VendorProxy) -> dict[str, object]:
    c = Counter("write" if s.method in ("POST", "PUT", "PATCH", "DELETE") else "read" for s in proxy.seen)
    kinds = Counter(f"{s.method} {_kind(s.path)}{'?filter' if 'filter=' in s.query else ''}" for s in proxy.seen)
    return {"reads": c["read"], "writes": c["write"], "all": c["read"] + c["write"], "by_kind": dict(kinds)}


def _kind(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        if part in ("Users", "Groups"):
            return part + ("/{id}" if i + 1 < len(parts) else "")
    return parts[-1] if parts else "/"


def measure(peer_name: str, people: int, work_dir: Path, concurrency: int) -> dict[str, object]:
    day0, day1 = work_dir / "day0.csv", work_dir / "day1.csv"
    export = work_dir / "hr.csv"
    with ALL_PEERS[peer_name]() as peer:
        scheme, _, host, path = peer.url.split("/", 3)  # the proxy forwards paths as they come
        proxy = VendorProxy(f"{scheme}//{host}")
        proxy.start()
        try:
            os.environ["BENCH_TOKEN"] = peer.token
            url = proxy.url + path
            cfg_path = work_dir / f"{peer_name}.yaml"
            cfg_path.write_text(CONFIG.format(db=work_dir / f"{peer_name}.db", export=export, url=url,
                                              concurrency=concurrency),
                                encoding="utf-8")
            export.write_bytes(day0.read_bytes())
            t0 = time.perf_counter()
            sync(cfg_path)
            first = {**counts(proxy), "seconds": round(time.perf_counter() - t0, 1)}
            proxy.seen.clear()
            export.write_bytes(day1.read_bytes())
            t0 = time.perf_counter()
            sync(cfg_path)
            day = {**counts(proxy), "seconds": round(time.perf_counter() - t0, 1)}
        finally:
            proxy.stop()
    n = changed_people(day0, day1)
    return {"peer": peer_name, "people": people, "concurrency": concurrency, "changed": n, "first_import": first,
            "day": day,
            "writes_per_person": round(int(day["writes"]) / n, 3),  # type: ignore[call-overload]
            "reads_per_person": round(int(day["reads"]) / n, 3),  # type: ignore[call-overload]
            "all_per_person": round(int(day["all"]) / n, 3)}  # type: ignore[call-overload]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--peers", default=",".join(sorted(ALL_PEERS)))
    # Group changes ride together while a PATCH to the group is in flight: at most one per
    # concurrent chain, so the chains in flight bound how many members one PATCH carries.
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="jml-bench-req-"))
    day0, day1 = work_dir / "day0.csv", work_dir / "day1.csv"
    subprocess.run([sys.executable, str(GEN), "--people", str(a.people), "--seed", "1", "--out", str(day0)], check=True)
    subprocess.run([sys.executable, str(GEN), "--from", str(day0), "--joiners", "0.01", "--movers", "0.02",
                    "--leavers", "0.01", "--seed", "2", "--out", str(day1)], check=True)
    results = []
    for name in a.peers.split(","):
        r = measure(name, a.people, work_dir, a.concurrency)
        results.append(r)
        print(json.dumps(r), flush=True)
    print(f"\n{a.people:,} people; the generator's default day; requests the peer received during `jml sync`"
          f" (concurrency {a.concurrency})\n")
    print(f"{'peer':14} {'changed':>7} {'writes/p':>9} {'reads/p':>8} {'all/p':>6}   first import (reads/writes, s)")
    for r in results:
        f = r["first_import"]
        print(f"{r['peer']:14} {r['changed']:>7} {r['writes_per_person']:>9} {r['reads_per_person']:>8} "
              f"{r['all_per_person']:>6}   {f['reads']}/{f['writes']}, {f['seconds']} s")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
