#!/usr/bin/env python3
"""How fast jml reads a large HR export. Prints figures; asserts nothing.

    python bench/bench_parse.py [--people 100000] [--runs 5] [--file day0.csv]

Generates the export with bench/gen_hris.py (or $GEN_HRIS) unless --file is
given, then times (best of --runs, so noise from other processes counts least):
  * a bare csv.DictReader pass over the same bytes (the baseline),
  * a full parse_export (every row validated and turned into a Person),
  * a parse with every row hash known (the steady state between two identical exports).
Targets (2-core machine, 100k rows): full <= 1.5 s, all-known <= 2x the baseline.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jml.sources.hris import parse_export

GEN = Path(os.environ.get("GEN_HRIS") or Path(__file__).resolve().parent / "gen_hris.py")


def best(runs: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--file", type=Path)
    a = ap.parse_args()
    path = a.file
    if path is None:
        path = Path(tempfile.gettempdir()) / f"jml-bench-{a.people}.csv"
        if not path.exists():
            subprocess.run(
                [sys.executable, str(GEN), "--people", str(a.people), "--seed", "1", "--out", str(path)], check=True
            )
    data = path.read_bytes()

    def dictreader() -> None:
        for _ in csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")):
            pass

    first = parse_export(data, name=path.name, format=None)
    known = first.row_hashes
    base = best(a.runs, dictreader)
    full = best(a.runs, lambda: parse_export(data, name=path.name, format=None))
    skip = best(a.runs, lambda: parse_export(data, name=path.name, format=None, known_hashes=known))
    print(f"file: {path} ({len(data) / 1e6:.1f} MB, {first.row_count} rows, {len(first.quarantined)} quarantined)")
    print(f"csv.DictReader baseline : {base:.3f} s")
    print(f"full parse              : {full:.3f} s  ({first.row_count / full:,.0f} rows/s; target <= 1.5 s)")
    print(f"all hashes known        : {skip:.3f} s  ({skip / base:.2f}x baseline; target <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
