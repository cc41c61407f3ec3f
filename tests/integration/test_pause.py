"""The kill switch: a paused connector's work waits in the outbox (visibly) and resumes intact."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
import yaml

from jml import config as config_mod
from jml.cli import main
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.status import snapshot
from jml.sync import plan_cycle
from tests.peers import ScimPeer


def _export(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["employee_id", "first_name", "last_name", "work_email", "status", "hire_date"])
        for i in range(n):
            w.writerow([f"E{i:03d}", "P", f"N{i}", f"p{i}@acme.example", "Active", "2020-01-01"])


def test_pause_made_while_the_engine_runs_holds_the_work_then_resume_finishes_it(
        tmp_path: Path, scim_peer: ScimPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P_TOKEN", scim_peer.token)
    (tmp_path / "exports").mkdir()
    _export(tmp_path / "exports" / "a.csv", 30)
    cfg_path = tmp_path / "jml.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "state": {"url": "sqlite:///jml.db"},
        "sources": {"hris": {"location": "./exports/", "timezone": "UTC"}},
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"app": ["Staff"]}}]},
        "connectors": {"app": {"type": "scim", "url": scim_peer.url, "token_env": "P_TOKEN"}},
    }))
    cfg = config_mod.load(cfg_path)

    async def run() -> dict[str, int]:
        rt = Runtime(cfg)
        engine = build_engine(rt, poll_interval=0.05)  # built before the pause: it must notice it by itself
        rt.store.set_setting("paused_connectors", ["app"])  # what `jml pause app` in another process writes
        await plan_cycle(rt)
        await rt.open_connectors()
        engine.full_scan_interval = 0.1
        try:
            await engine.run_until_idle(timeout=3)
        finally:
            await rt.close()
        return snapshot(rt)["connectors"]["app"]

    waiting = asyncio.run(run())
    assert waiting["pending"] == 61 and waiting["running"] == 0  # the group, 30 creates, 30 memberships wait
    assert snapshot(Runtime(cfg))["paused"] == ["app"]
    assert main(["--config", str(cfg_path), "resume", "app"]) == 0
    assert main(["--config", str(cfg_path), "retry", "--all"]) == 0  # nothing dead; runs the outbox
    assert asyncio.run(_drain(cfg)) == {"pending": 0, "running": 0, "dead": 0, "held": 0}


async def _drain(cfg: config_mod.Config) -> dict[str, int]:
    from jml.commands import work

    rt = Runtime(cfg)
    await work(rt, None)
    return {k: v for k, v in snapshot(rt)["connectors"]["app"].items() if k != "dialect_warnings"}
