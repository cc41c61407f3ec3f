"""Benchmark: HR exports from bench/gen_hris.py through read -> plan, beside a bare csv.DictReader.

    .venv/bin/python bench/bench_sync.py [--people 10000,100000,500000] [--runs 5]

Phases, each in a fresh process so peak RSS is that phase's own:
  baseline   a bare csv.DictReader pass over the day-0 file (the floor)
  plan_json  `jml plan --json` from an empty store (the CLI's own code, output to /dev/null;
             the interpreter's start and imports before it are not counted)
  first      the first `jml sync` up to its plan written to the outbox, on an empty SQLite
             state (people stored, plan and audit written; pushing excluded)
  noop       the same data re-read (a byte-different file, so the checksum shortcut does not
             apply): parse, hash, compare, plan -> zero operations
  churn      the next day's export (~1% of people join, move or leave)
Nothing is pushed: this measures jml's own work, not an app's API.

Runs are interleaved (every phase of every size once per run, the baseline first on even
runs and last on odd ones); each figure is the median of the runs, the host's load average
is printed beside them. Targets (issue 16): first import (plan_json, first) <= 10x the
baseline and peak RSS <= 400 MB at 100k, time linear in people, memory a fixed base plus
<= 2.5 KB per person; noop <= 2x the baseline at 100k and 500k.
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
import statistics
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
    from jml import cli
    from jml import config as config_mod
    from jml.runtime import Runtime
    from jml.sync import plan_cycle

    if name == "plan_json":
        # The command as an operator runs it, minus the interpreter's start and the empty
        # store's creation (migrations): `jml plan --json > file`.
        from jml import commands  # noqa: F401 - imported outside the timed part

        Runtime(config_mod.load(work / "plan.yaml")).store.close()
        real = sys.stdout
        with open("/dev/null", "w", encoding="utf-8") as sink:
            sys.stdout = sink
            try:
                t0 = time.perf_counter()
                code = cli.main(["--config", str(work / "plan.yaml"), "plan", "--json"])
                seconds = time.perf_counter() - t0
            finally:
                sys.stdout = real
        if code != 0:
            raise SystemExit(f"plan --json exited {code}")
        return {"phase": name, "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

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
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--work", str(work), "--csv", str(csv_path)],
                         check=True, capture_output=True, text=True, env={"BENCH_TOKEN": "x", "PATH": "/usr/bin"})
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": load}


def _stage(exports: Path, src: Path, name: str) -> Path:
    exports.mkdir(parents=True, exist_ok=True)
    for f in exports.glob("*"):
        f.unlink()
    dst = exports / name
    shutil.copy(src, dst)
    return dst


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = a + b*x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


TARGETS = {"plan_json": "<= 10x, <= 400 MB @100k", "first": "<= 10x, <= 400 MB @100k", "noop": "<= 2x"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", default="100000", help="comma-separated sizes, e.g. 10000,100000,500000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--phases", default="baseline,plan_json,first,noop,churn")
    ap.add_argument("--gen", default=str(GEN))
    ap.add_argument("--phase")
    ap.add_argument("--work")
    ap.add_argument("--csv")
    a = ap.parse_args()
    if a.phase:
        print(json.dumps(_phase(a.phase, Path(a.work), a.csv)))
        return 0
    sizes = [int(x) for x in a.people.split(",")]
    phases = a.phases.split(",")
    root = Path(tempfile.mkdtemp(prefix="jml-bench-"))
    files: dict[int, tuple[Path, Path, Path]] = {}
    for n in sizes:
        d = root / str(n)
        d.mkdir()
        day0, day1, noop = d / "day0.csv", d / "day1.csv", d / "day0-again.csv"
        subprocess.run([sys.executable, a.gen, "--people", str(n), "--seed", "1", "--out", str(day0)], check=True)
        subprocess.run([sys.executable, a.gen, "--from", str(day0), "--joiners", "0.0033", "--movers", "0.0034",
                        "--leavers", "0.0033", "--seed", "2", "--out", str(day1)], check=True)
        noop.write_bytes(day0.read_bytes() + b"\n")  # same data, different bytes: no checksum shortcut
        files[n] = (day0, day1, noop)
    results: dict[tuple[int, str], list[dict[str, object]]] = {}
    for run in range(a.runs):
        for n in sizes:
            day0, day1, noop = files[n]
            work = root / str(n) / f"run{run}"
            work.mkdir()
            (work / "jml.yaml").write_text(CONFIG.format(db=work / "state.db", exports=work / "exports"),
                                           encoding="utf-8")
            (work / "plan.yaml").write_text(CONFIG.format(db=work / "plan.db", exports=work / "plan-exports"),
                                            encoding="utf-8")
            _stage(work / "plan-exports", day0, "a-day0.csv")
            order = [p for p in phases if p != "baseline"]
            if "baseline" in phases:
                order = ["baseline", *order] if run % 2 == 0 else [*order, "baseline"]
            for phase in order:
                src = {"baseline": day0, "plan_json": day0, "first": day0, "noop": noop, "churn": day1}[phase]
                if phase in ("first", "noop", "churn"):
                    _stage(work / "exports", src, {"first": "a", "noop": "b", "churn": "c"}[phase] + "-" + src.name)
                r = _run_phase(phase, work, src)
                results.setdefault((n, phase), []).append(r)
                print(json.dumps({"people": n, "run": run, **r}), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    loads = [float(r["load"]) for v in results.values() for r in v]  # type: ignore[arg-type]
    print(f"\n{a.runs} interleaved runs, medians; host load {min(loads):.1f}-{max(loads):.1f} on 2 cores\n")
    print(f"{'people':>8} {'phase':10} {'seconds':>8} {'DictReader s':>12} {'ratio':>6} {'peak RSS MB':>11} "
          f"{'us/person':>9}  target")
    med: dict[tuple[int, str], tuple[float, float]] = {}
    for n in sizes:
        base = statistics.median(float(r["seconds"]) for r in results.get((n, "baseline"), [{"seconds": "nan"}]))  # type: ignore[arg-type]
        for phase in phases:
            rs = results[(n, phase)]
            secs = statistics.median(float(r["seconds"]) for r in rs)  # type: ignore[arg-type]
            rss = statistics.median(float(r["peak_rss_mb"]) for r in rs)  # type: ignore[arg-type]
            med[(n, phase)] = (secs, rss)
            print(f"{n:8} {phase:10} {secs:8.2f} {base:12.2f} {secs / base:6.2f} {rss:11.0f} "
                  f"{1e6 * secs / n:9.1f}  {TARGETS.get(phase, '')}")
    if len(sizes) > 1:
        print("\nlinear fit over the sizes (time = a + b*people, peak RSS = a + b*people):")
        for phase in phases:
            ta, tb = _fit([(n, med[(n, phase)][0]) for n in sizes])
            ma, mb = _fit([(n, med[(n, phase)][1]) for n in sizes])
            print(f"  {phase:10} time {ta:6.2f} s + {1e6 * tb:6.1f} us/person   "
                  f"RSS {ma:6.0f} MB + {mb * 1024:5.2f} KB/person")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
