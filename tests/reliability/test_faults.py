"""Fault injection: a ~2,000-operation sync through a proxy that fails 30% of requests at
random (500, 429 + Retry-After, connection resets before and after forwarding, 2 s stalls
against a 1 s connector timeout) converges to exactly the desired state: the users, their
active flags and their memberships, with no duplicates, counted on scim2-server directly.

The numbers (operations, faults, retries, wall time) are printed (`pytest -s`) and attached
to the test report as user properties.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.peers import ScimPeer
from tests.reliability.conftest import (
    RandomFaultProxy,
    compare,
    csv_bytes,
    desired_state,
    generate,
    read_target,
    run_jml,
    scim_env,
    write_config,
    write_export,
)

PEOPLE = 500  # x (create + 3 memberships) + ~50 groups = ~2,000 operations
FAULT_RATE = 0.30
# Bounded retries: every attempt of a create makes 3 requests (find by externalId, by
# userName, POST), so at 30% per request an attempt succeeds ~1/3 of the time. 20 attempts
# within 120 s per operation, backing off from 0.2 s up to 2 s (`retry_backoff`,
# `retry_backoff_max`): the fault-free part of the run is not what takes the time; if an
# operation still runs out of attempts, `jml retry --all` (faults still on) finishes it.
CONNECTOR = {"timeout": "1s", "concurrency": 64, "max_attempts": 20, "retry_budget": "120s",
             "retry_backoff": "0.2s", "retry_backoff_max": "2s"}
# Of the faulty requests: 500s, 429s (Retry-After: 1, which also pauses the connector's
# writes), resets before and after forwarding, and 2 s stalls that the 1 s timeout cuts off.
FAULT_MIX = {"500": 0.35, "429": 0.05, "reset": 0.2, "reset_after": 0.1, "stall": 0.3}
SYNC_TIMEOUT = 420.0


def _db(workdir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{workdir / 'jml.db'}?mode=ro", uri=True, timeout=10)


def _op_numbers(workdir: Path, since_seq: int = 0) -> dict[str, Any]:
    with _db(workdir) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM operation GROUP BY state").fetchall())
        pushes = [json.loads(d) if isinstance(d, str) else d for (d,) in conn.execute(
            "SELECT data FROM audit WHERE kind = 'push' AND seq > ?", (since_seq,))]
        head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0]
    attempts = [int(p.get("attempts") or 0) for p in pushes if p.get("result") == "success"]
    return {"operation_states": states, "pushed": len(attempts), "attempts": sum(attempts),
            "retries": sum(a - 1 for a in attempts if a > 1), "max_attempts_used": max(attempts, default=0),
            "dead_letter_events": sum(1 for p in pushes if p.get("result") == "dead"), "audit_head": head}


def _check(peer: ScimPeer, wanted: Any) -> Callable[[], list[str]]:
    def check() -> list[str]:
        return compare(read_target(peer), wanted, allow_empty_duplicate_groups=True)
    return check


def _empty_twins(peer: ScimPeer, wanted: Any) -> list[str]:
    state = read_target(peer)
    compare(state, wanted, allow_empty_duplicate_groups=True)
    return state.problems


def _sync_until_converged(cfg: Path, env: dict[str, str], check: Callable[[], list[str]],
                          retry_rounds: int = 3) -> dict[str, Any]:
    started = time.monotonic()
    r = run_jml(cfg, "sync", env=env, timeout=SYNC_TIMEOUT)
    out: dict[str, Any] = {"sync_exit": r.returncode, "sync_seconds": round(time.monotonic() - started, 1),
                           "retry_rounds": 0}
    assert r.returncode in (0, 1), f"sync exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    out["sync_stdout"] = r.stdout.strip().splitlines()[-1:]
    code = r.returncode
    while code == 1 and out["retry_rounds"] < retry_rounds:
        # Dead letters: `jml retry --all` must converge (faults still on).
        out["retry_rounds"] += 1
        r = run_jml(cfg, "retry", "--all", env=env, timeout=SYNC_TIMEOUT)
        assert r.returncode in (0, 1), r.stderr[-3000:]
        code = r.returncode
    out["total_seconds"] = round(time.monotonic() - started, 1)
    out["problems"] = check()
    return out


@pytest.mark.slow
def test_two_thousand_operations_converge_through_30_percent_faults(
        peer: ScimPeer, workdir: Path, record_property: Callable[[str, object], None]) -> None:
    rows0 = generate(PEOPLE, seed=61)
    write_export(workdir / "exports", "day0.csv", csv_bytes(rows0))
    proxy = RandomFaultProxy(peer.url.removesuffix("/v2/"), rate=FAULT_RATE, seed=6, stall=2.0, retry_after="1",
                             weights=FAULT_MIX)
    with proxy:
        cfg = write_config(workdir, scim_url=proxy.url + "v2/", connector=CONNECTOR)
        env = scim_env(peer)

        wanted0 = desired_state(rows0)
        day0 = _sync_until_converged(cfg, env, _check(peer, wanted0))
        day0.update(_op_numbers(workdir), proxy=proxy.summary(), empty_duplicate_groups=_empty_twins(peer, wanted0))
        print("\nday 0:", json.dumps(day0, default=str))
        record_property("day0", day0)
        ops0 = sum(day0["operation_states"].values())
        assert ops0 >= 1900, day0
        assert day0["proxy"]["faults"] >= 0.25 * day0["proxy"]["requests"], "the faults did not happen"
        assert {"500", "429", "reset", "reset_after", "stall"} <= set(proxy.injected), proxy.injected
        assert day0["problems"] == [], day0["problems"][:30]
        assert day0["retries"] > 0

        assert any(not w.active for w in wanted0.values()), "pre-hires in the window: inactive accounts"
