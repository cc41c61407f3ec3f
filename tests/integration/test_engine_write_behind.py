"""A chain's last result is written behind its worker (group commit): every operation still
ends recorded, in fewer transactions than operations; a write that fails stops the run with
its error, and what was not recorded goes back to pending (pushing it again is harmless)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from jml import config as config_mod
from jml.errors import WriteConflict
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.sync import plan_cycle
from tests.peers import ScimPeer


def _setup(tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch, people: int) -> config_mod.Config:
    monkeypatch.setenv("W_TOKEN", scim_peer.token)
    export = tmp_path / "hr.csv"
    with export.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["employee_id", "first_name", "last_name", "work_email", "status", "hire_date"])
        for i in range(people):
            w.writerow([f"W{i:03d}", "P", f"N{i}", f"w{i}@acme.example", "Active", "2020-01-01"])
    cfg_path = tmp_path / "jml.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
        "sources": {"hris": {"location": str(export), "timezone": "UTC"}},
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"app": []}}]},
        "connectors": {"app": {"type": "scim", "url": scim_peer.url, "token_env": "W_TOKEN", "concurrency": 8}},
    }))
    return config_mod.load(cfg_path)


def test_results_are_group_committed_and_all_recorded(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _setup(tmp_path, scim_peer, monkeypatch, 40)

    async def run() -> tuple[int, dict[str, int]]:
        rt = Runtime(cfg)
        outcome = await plan_cycle(rt)
        assert outcome.plan_id is not None
        await rt.open_connectors()
        try:
            engine = build_engine(rt, poll_interval=0.05)
            batches = 0
            write = engine.results.write

            def counting(batch: list[Any]) -> None:
                nonlocal batches
                batches += 1
                write(batch)

            monkeypatch.setattr(engine.results, "write", counting)
            await engine.run_until_idle(timeout=120)
            return batches, rt.outbox.plan_state_counts(outcome.plan_id)
        finally:
            await rt.close()
            rt.store.close()

    batches, counts = asyncio.run(run())
    assert counts == {"done": 40}
    assert batches < 40


def test_a_failed_write_stops_the_run_and_leaves_the_work_pending(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _setup(tmp_path, scim_peer, monkeypatch, 5)

    async def run() -> dict[str, int]:
        rt = Runtime(cfg)
        outcome = await plan_cycle(rt)
        assert outcome.plan_id is not None
        await rt.open_connectors()
        try:
            engine = build_engine(rt, poll_interval=0.05)

            def failing(_batch: list[Any]) -> None:
                raise WriteConflict("recording finished operations: database is locked")

            monkeypatch.setattr(engine.results, "write", failing)
            with pytest.raises(WriteConflict):
                await engine.run_until_idle(timeout=60)
            return rt.outbox.plan_state_counts(outcome.plan_id)
        finally:
            await rt.close()
            rt.store.close()

    counts = asyncio.run(run())
    assert counts.get("done", 0) == 0 and counts.get("running", 0) == 0 and counts.get("pending") == 5
