"""One person's steps in one connector run as a chain: the account record is read once for
the steps that cannot change it (a leaver's deactivate and removals), and the chain still
ends exactly where the plan says."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from jml import config as config_mod
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.sync import plan_cycle
from tests.integration.contract.target_scim import PeerReader
from tests.peers import ScimPeer

TODAY = dt.datetime.now(dt.UTC).date().isoformat()  # a leaver today: deactivated, not yet deleted


def _export(path: Path, statuses: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["employee_id", "first_name", "last_name", "work_email", "department", "status", "hire_date",
                    "termination_date"])
        for i, status in enumerate(statuses):
            w.writerow([f"E{i}", "P", f"N{i}", f"p{i}@acme.example", "Eng", status, "2020-01-01",
                        TODAY if status == "Terminated" else ""])


def _config(tmp_path: Path, export: Path, url: str, groups: list[str], *, guard: dict[str, Any] | None = None,
            **connector: Any) -> config_mod.Config:
    """One SCIM connector "app" at `url`, everyone Active in `groups`, state in tmp_path."""
    path = tmp_path / "jml.yaml"
    path.write_text(yaml.safe_dump({
        "state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
        "sources": {"hris": {"location": str(export), "timezone": "UTC"}},
        **({"guard": guard} if guard else {}),
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"app": groups}}]},
        "connectors": {"app": {"type": "scim", "url": url, "token_env": "C_TOKEN", **connector}},
    }))
    return config_mod.load(path)


def test_leaver_chain_reads_the_account_once_and_ends_deprovisioned(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C_TOKEN", scim_peer.token)
    export = tmp_path / "hr.csv"
    cfg = _config(tmp_path, export, scim_peer.url, ["Staff", "Eng"], guard={"max_deprovision_percent": 100})

    async def sync() -> int:
        rt = Runtime(cfg)
        reads = 0
        load = rt.store.load_accounts

        def counting(*a: Any, **k: Any) -> Any:
            nonlocal reads
            reads += 1
            return load(*a, **k)

        monkeypatch.setattr(rt.store, "load_accounts", counting)
        outcome = await plan_cycle(rt)
        assert not outcome.held
        await rt.open_connectors()
        try:
            engine = build_engine(rt, poll_interval=0.05)
            engine.after_success.clear()  # the engine's own reads only (no SLA read-back)
            before = reads
            await engine.run_until_idle(timeout=60)
            return reads - before
        finally:
            await rt.close()
            rt.store.close()

    _export(export, ["Active"] * 3)
    asyncio.run(sync())
    _export(export, ["Terminated"] * 3)
    assert asyncio.run(sync()) == 3  # 3 chains of deactivate + 2 removals: one read each, not nine
    reader = PeerReader(scim_peer)

    async def check() -> None:
        for i in range(3):
            user = await reader.find(f"E{i}", "")
            assert user is not None and user["active"] is False
            assert await reader.groups(str(user["id"])) == {}

    asyncio.run(check())


def test_grants_nobody_waits_on_share_one_patch_per_group(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 joiners through 4 workers, two groups each: a grant waiting for its group's PATCH
    gives its worker's seat to the next person (connectors/pool.py), and the PATCH waits until
    every worker waits. One PATCH per group carries all 60, where one per round of four
    workers made 30; and every member is in both groups."""
    from tests.vendor_peers.proxy import VendorProxy

    scheme, _, host, path = scim_peer.url.split("/", 3)
    proxy = VendorProxy(f"{scheme}//{host}")
    proxy.start()
    monkeypatch.setenv("C_TOKEN", scim_peer.token)
    export = tmp_path / "hr.csv"
    cfg = _config(tmp_path, export, proxy.url + path, ["Staff", "Eng"], concurrency=4)
    _export(export, ["Active"] * 60)

    async def sync() -> None:
        rt = Runtime(cfg)
        try:
            outcome = await plan_cycle(rt)
            assert not outcome.held
            await rt.open_connectors()
            engine = build_engine(rt, poll_interval=0.05)
            await engine.run_until_idle(timeout=120)
            assert engine.outbox.ops(["dead"]) == []
        finally:
            await rt.close()
            rt.store.close()

    try:
        asyncio.run(sync())
    finally:
        proxy.stop()
    group_patches = [s for s in proxy.seen if s.method == "PATCH" and "/Groups/" in s.path]
    assert 2 <= len(group_patches) <= 4, len(group_patches)
    assert len([s for s in proxy.seen if s.method == "POST" and s.path.endswith("/Users")]) == 60
    reader = PeerReader(scim_peer)

    async def check() -> None:
        for i in range(60):
            user = await reader.find(f"E{i}", "")
            assert user is not None
            assert await reader.groups(str(user["id"])) == {"Staff": 1, "Eng": 1}, i

    asyncio.run(check())


def test_an_apply_that_never_answers_is_cut_off_and_tried_again(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connector call that hangs is stopped at `timeout` x OPERATION_TIMEOUT_FACTOR, cancelled
    (not left running), counted as a `timeout` retry, and the next attempt does the work."""
    from jml import metrics
    from jml.engine import OPERATION_TIMEOUT_FACTOR

    monkeypatch.setenv("C_TOKEN", scim_peer.token)
    export = tmp_path / "hr.csv"
    cfg = _config(tmp_path, export, scim_peer.url, ["Staff"], timeout="0.1s", retry_backoff="0.05s")
    _export(export, ["Active"])
    retries = metrics.retries.labels("app", "timeout")
    before = retries._value.get()
    hung: list[str] = []

    async def sync() -> float:
        rt = Runtime(cfg)
        try:
            outcome = await plan_cycle(rt)
            assert "create" in [o.action.value for o in outcome.operations]
            await rt.open_connectors()
            connector = rt.connector("app")
            real = connector.apply

            async def first_hangs(op: Any, record: Any) -> Any:
                if not hung and op.action.value == "create":
                    hung.append("started")
                    try:
                        await asyncio.sleep(3600)
                    finally:
                        hung.append("cancelled")
                return await real(op, record)

            monkeypatch.setattr(connector, "apply", first_hangs)
            engine = build_engine(rt, poll_interval=0.05)
            engine.after_success.clear()
            t0 = asyncio.get_running_loop().time()
            await engine.run_until_idle(timeout=60)
            assert engine.outbox.ops(["dead"]) == []
            return asyncio.get_running_loop().time() - t0
        finally:
            await rt.close()
            rt.store.close()

    took = asyncio.run(sync())
    assert hung == ["started", "cancelled"]
    assert retries._value.get() == before + 1
    assert took >= 0.1 * OPERATION_TIMEOUT_FACTOR
    reader = PeerReader(scim_peer)
    assert asyncio.run(reader.find("E0", "")) is not None


@pytest.mark.parametrize(("failures", "state", "attempts", "retries"), [
    (0, "done", 1, 0),    # the usual case: one attempt, tenacity never started
    (2, "done", 3, 2),    # the failed first attempt is tenacity's attempt 1: two retries, then done
    (9, "dead", 3, 2),    # max_attempts counts the first attempt: dead after the third
])
def test_retries_count_the_first_attempt(tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch,
                                         failures: int, state: str, attempts: int, retries: int) -> None:
    """A retryable failure is retried with backoff until max_attempts, the first attempt
    included (it runs before tenacity is set up); the push record and the dead letter carry
    the attempts made."""
    from jml import metrics
    from jml.errors import RetryableError

    monkeypatch.setenv("C_TOKEN", scim_peer.token)
    export = tmp_path / "hr.csv"
    cfg = _config(tmp_path, export, scim_peer.url, [], max_attempts=3, retry_backoff="0.01s",
                  retry_budget="30s")
    _export(export, ["Active"])
    counter = metrics.retries.labels("app", "flaky")
    before = counter._value.get()
    calls: list[str] = []

    async def sync() -> tuple[list[Any], list[dict[str, Any]]]:
        rt = Runtime(cfg)
        try:
            await plan_cycle(rt)
            await rt.open_connectors()
            connector = rt.connector("app")
            real = connector.apply

            async def flaky(op: Any, record: Any) -> Any:
                calls.append(op.action.value)
                if len(calls) <= failures:
                    raise RetryableError("app", "503 from the app", reason="flaky")
                return await real(op, record)

            monkeypatch.setattr(connector, "apply", flaky)
            engine = build_engine(rt, poll_interval=0.05)
            await engine.run_until_idle(timeout=60)
            return engine.outbox.ops([state]), [r["data"] for r in rt.audit.records() if r["kind"] == "push"]
        finally:
            await rt.close()
            rt.store.close()

    ops, pushes = asyncio.run(sync())
    assert len(calls) == attempts
    assert counter._value.get() == before + retries
    assert [q.op.action.value for q in ops] == ["create"]
    assert [(p["result"], p["attempts"]) for p in pushes] == [("success" if state == "done" else "dead", attempts)]
    if state == "dead":
        assert ops[0].attempts == attempts and "503 from the app" in (ops[0].last_error or "")
