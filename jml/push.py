"""Push a plan from a one-shot command (`jml sync`, `jml offboard`, `jml demo`): run the
outbox in this process when no daemon holds the workers' lease, else wait for the daemon;
then say what happened."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any

from jml.exit_codes import EXIT_FAILED, EXIT_OK
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.store.outbox import process_holder
from jml.sync import PlanOutcome

__all__ = ["print_outcome", "report_plan", "work"]


async def work(rt: Runtime, plan_id: str | None, timeout: float | None = None) -> None:
    """Run the outbox if no daemon holds the workers' lease; else wait for it to finish our plan."""
    ttl = dt.timedelta(minutes=2)
    # Name the lease after this process, so that the next process can tell when the holder
    # died without releasing it (SIGKILL, OOM) instead of waiting for the TTL.
    rt.holder = process_holder()
    loop = asyncio.get_running_loop()
    start = loop.time()
    told = False
    while True:
        if rt.outbox.acquire_lease(rt.holder, rt.clock(), ttl):
            left = None if timeout is None else max(0.0, timeout - (loop.time() - start))
            try:
                await rt.open_connectors()
                engine = build_engine(rt)
                engine.recover()
                renew = asyncio.create_task(_renew(rt, ttl))
                try:
                    await engine.run_until_idle(timeout=left)
                finally:
                    renew.cancel()
            finally:
                rt.outbox.release_lease(rt.holder)
                await rt.close()
            return
        if not told:
            print("a running jml daemon holds the workers' lease: waiting for it to apply the plan", file=sys.stderr)
            told = True
        # Keep asking: if the holder stops or dies, this process takes the work over.
        if not rt.outbox.open_count(plan_id) or (timeout is not None and loop.time() - start >= timeout):
            return
        await asyncio.sleep(0.5)


async def _renew(rt: Runtime, ttl: Any) -> None:
    while True:
        await asyncio.sleep(ttl.total_seconds() / 3)
        rt.outbox.acquire_lease(rt.holder, rt.clock(), ttl)


def print_outcome(o: PlanOutcome) -> None:
    if o.unchanged:
        print("export unchanged since the last read")
    if o.rows:
        print(f"export: {o.rows} rows, {len(o.quarantined)} quarantined (set aside for HR to fix), "
              f"{len(o.missing)} missing")
    for q in o.quarantined[:20]:
        print(f"  quarantined (set aside; the rest went on; HR fixes it): {q}", file=sys.stderr)
    if len(o.quarantined) > 20:
        print(f"  … and {len(o.quarantined) - 20} more quarantined rows (`jml status --json`: set_aside)",
              file=sys.stderr)
    if o.missing:
        shown = ", ".join(o.missing[:10]) + (" …" if len(o.missing) > 10 else "")
        print(f"  missing from this export (not leavers yet): {shown}", file=sys.stderr)
    for s in o.skipped:
        print(f"  skipped: {s}", file=sys.stderr)
    summary = ", ".join(f"{k} {v}" for k, v in o.summary().items()) or "nothing to do"
    print(f"plan {o.plan_id or '-'}: {summary}")
    if o.held:
        print(f"plan {o.plan_id} HELD by the guard:")
        for r in o.reasons:
            print(f"  - {r}")
        print(f"review it, then `jml approve {o.plan_id}` or `jml discard {o.plan_id}`")



def report_plan(rt: Runtime, plan_id: str | None) -> int:
    if plan_id is None:
        dead = rt.outbox.ops(["dead"], limit=1)
        return EXIT_FAILED if dead else EXIT_OK
    counts = rt.outbox.plan_state_counts(plan_id)
    print("result: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if counts.get("dead"):
        for q in rt.outbox.ops(["dead"], plan_id=plan_id, limit=20):
            print(f"  dead #{q.id} {q.op.connector} {q.op.action.value} {q.op.employee_id}: {q.last_error}",
                  file=sys.stderr)
        return EXIT_FAILED
    if counts.get("pending") or counts.get("running"):
        return EXIT_FAILED
    return EXIT_OK
