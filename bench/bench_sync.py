"""Benchmark: 100,000 people from bench/gen_hris.py through read → plan.

    .venv/bin/python bench/bench_sync.py [--people 100000] [--gen PATH]

Phases, each in a fresh process so peak RSS is that phase's own:
  baseline   a bare csv.DictReader pass over the day-0 file
  first      first import + plan on an empty SQLite state (people stored, plan in the outbox)
  noop       the same data re-read (a byte-different file, so the checksum shortcut does not
             apply): parse, hash, compare, plan -> zero operations
  churn      the next day's export (~1% of people join, move or leave)
Nothing is pushed: this measures jml's own work, not an app's API.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "bench" / "gen_hris.py"

CONFIG = """
state: {{url: "sqlite:///{db}"}}
sources:
  hris: {{location: "{exports}", format: csv, profile: generic, timezone: Europe/Berlin}}
guard: {{max_deprovision_percent: 5, max_deprovision_count: 5000, max_shrink_percent: 10}}
policy:
  username: "{{work_email}}"
  rules:
    - name: everyone
      when: {{status: [Active, Leave]}}
      grant: {{app: ["All Staff"]}}
    - name: by-department
      when: {{department: [Engineering, Data Science, Security, IT]}}
      grant: {{app: ["Engineering"]}}
    - name: go-to-market
      when: {{department: [Sales, Customer Success, Marketing]}}
      grant: {{app: ["GTM"]}}
    - name: contractors
      when: {{employment_type: Contractor}}
      grant: {{app: ["Contractors"]}}
connectors:
  app: {{type: scim, url: "http://127.0.0.1:9/", token_env: BENCH_TOKEN}}
"""


def _phase(name: str, work: Path, csv_path: str) -> dict[str, object]:
    """Run one phase in this process and return its figures."""
    t0 = time.perf_counter()
    if name == "baseline":
        with open(csv_path, newline="", encoding="utf-8") as f:
            n = sum(1 for _ in csv.DictReader(f))
        return {"phase": name, "seconds": time.perf_counter() - t0, "rows": n,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    sys.path.insert(0, str(ROOT))
    from jml import config as config_mod
    from jml.runtime import Runtime
    from jml.sync import plan_cycle

    cfg = config_mod.load(work / "jml.yaml")
    now = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
    rt = Runtime(cfg, clock=lambda: now)
    rt.store  # noqa: B018 - open and migrate outside the timed part
    async def timed() -> tuple[float, dict[str, object]]:
        # Timed inside the loop and returning small values: asyncio.run's SIGINT-handler
        # restore reprs the finished main task, result included (CPython 3.11), which for a
        # 288k-operation plan object costs seconds that are not jml's.
        t0 = time.perf_counter()
        o = await plan_cycle(rt)
        return time.perf_counter() - t0, {"operations": len(o.operations), "held": o.held, "summary": o.summary()}

    seconds, figures = asyncio.run(timed())
    return {"phase": name, "seconds": seconds, **figures,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run_phase(name: str, work: Path, csv_path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--work", str(work), "--csv", str(csv_path)],
                         check=True, capture_output=True, text=True, env={"BENCH_TOKEN": "x", "PATH": "/usr/bin"})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _stage(work: Path, src: Path, name: str) -> Path:
    exports = work / "exports"
    for f in exports.glob("*"):
        f.unlink()
    dst = exports / name
    shutil.copy(src, dst)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--gen", default=str(GEN))
    ap.add_argument("--phase")
    ap.add_argument("--work")
    ap.add_argument("--csv")
    a = ap.parse_args()
    if a.phase:
        print(json.dumps(_phase(a.phase, Path(a.work), a.csv)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="jml-bench-"))
    (work / "exports").mkdir()
    day0, day1 = work / "day0.csv", work / "day1.csv"
    subprocess.run([sys.executable, a.gen, "--people", str(a.people), "--seed", "1", "--out", str(day0)], check=True)
    subprocess.run([sys.executable, a.gen, "--from", str(day0), "--joiners", "0.0033", "--movers", "0.0034",
                    "--leavers", "0.0033", "--seed", "2", "--out", str(day1)], check=True)
    noop = work / "day0-again.csv"
    noop.write_bytes(day0.read_bytes() + b"\n")  # same data, different bytes: no checksum shortcut
    (work / "jml.yaml").write_text(CONFIG.format(db=work / "state.db", exports=work / "exports"), encoding="utf-8")
    results = [_run_phase("baseline", work, day0)]
    _stage(work, day0, "a-day0.csv")
    results.append(_run_phase("first", work, day0))
    _stage(work, noop, "b-day0-again.csv")
    results.append(_run_phase("noop", work, noop))
    _stage(work, day1, "c-day1.csv")
    results.append(_run_phase("churn", work, day1))
    base = float(results[0]["seconds"])  # type: ignore[arg-type]
    print(f"\n{a.people:,} people ({day0.stat().st_size / 1e6:.1f} MB CSV), this machine: 2 cores\n")
    print(f"{'phase':10} {'seconds':>8} {'x DictReader':>12} {'peak RSS MB':>12}  operations")
    for r in results:
        secs = float(r["seconds"])  # type: ignore[arg-type]
        print(f"{r['phase']!s:10} {secs:8.2f} {secs / base:12.2f} {float(r['peak_rss_mb']):12.0f}  "  # type: ignore[arg-type]
              f"{r.get('operations', '')} {r.get('summary', '')}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
