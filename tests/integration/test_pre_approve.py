"""A known bulk departure, pre-approved, is not held by the guard; anyone else still is."""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from jml.cli import main
from tests.peers import ScimPeer

FIELDS = ["employee_id", "first_name", "last_name", "work_email", "department", "status", "hire_date",
          "termination_date"]


def _export(path: Path, terminated: set[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for i in range(1, 21):
            eid = f"E{i:03d}"
            w.writerow({"employee_id": eid, "first_name": "P", "last_name": f"N{i}", "work_email": f"p{i}@acme.example",
                        "department": "Sales", "status": "Terminated" if eid in terminated else "Active",
                        "hire_date": "2020-01-01", "termination_date": "2026-11-20" if eid in terminated else ""})


def _active(peer: ScimPeer) -> dict[str, bool]:
    req = urllib.request.Request(peer.url + "Users?count=100", headers=peer.headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return {u["externalId"]: u.get("active", True) for u in json.load(r)["Resources"]}


def _pending_pre_approval(cfg: Path) -> str:
    from jml import config as config_mod
    from jml.store.identity import IdentityStore
    from jml.store.repo import Store

    store = Store(config_mod.load(cfg).state.url)
    try:
        reqs = IdentityStore(store.engine).requests("pre_approval")
    finally:
        store.close()
    assert len(reqs) == 1
    return reqs[0].id


def test_pre_approval_waits_for_another_approver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "jml.yaml"
    cfg.write_text(yaml.safe_dump({"state": {"url": "sqlite:///jml.db"}, "guard": {"approvals_required": 2}}))
    monkeypatch.setattr("getpass.getuser", lambda: "hr-alice")
    assert main(["--config", str(cfg), "pre-approve", "E001", "E002"]) == 0
    rid = _pending_pre_approval(cfg)
    assert main(["--config", str(cfg), "approve", rid]) == 2  # the requester
    monkeypatch.setattr("getpass.getuser", lambda: "sec-bob")
    assert main(["--config", str(cfg), "approve", rid]) == 3  # one of two: still waiting
    assert main(["--config", str(cfg), "approve", rid]) == 2  # bob again does not count twice
    from jml import config as config_mod
    from jml.runtime import Runtime

    rt = Runtime(config_mod.load(cfg))
    assert not rt.store.get_setting("pre_approved_leavers", [])
    monkeypatch.setattr("getpass.getuser", lambda: "sec-carol")
    assert main(["--config", str(cfg), "approve", rid]) == 0
    assert rt.store.get_setting("pre_approved_leavers", []) == ["E001", "E002"]
    kinds = [(r["kind"], r["actor"]) for r in rt.audit.records()]
    assert ("pre_approval_request", "cli user=hr-alice") in kinds
    assert ("approval_vote", "cli user=sec-bob") in kinds
    assert ("pre_approval", "cli user=sec-carol") in kinds
    rt.store.close()


def test_pre_approved_layoff_passes_the_guard(tmp_path: Path, scim_peer: ScimPeer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", scim_peer.token)
    (tmp_path / "exports").mkdir()
    cfg = tmp_path / "jml.yaml"
    cfg.write_text(yaml.safe_dump({
        "state": {"url": "sqlite:///jml.db"},
        "sources": {"hris": {"location": "./exports/", "timezone": "UTC"}},
        "policy": {"rules": [{"name": "all", "when": {"status": "Active"}, "grant": {"app": ["Staff"]}}]},
        "connectors": {"app": {"type": "scim", "url": scim_peer.url, "token_env": "T_TOKEN"}},
    }))
    _export(tmp_path / "exports" / "a.csv", set())
    assert main(["--config", str(cfg), "sync"]) == 0
    layoff = {"E001", "E002", "E003", "E004"}  # 20% of 20 accounts: far past max_deprovision_percent 5
    monkeypatch.setattr("getpass.getuser", lambda: "hr-alice")
    assert main(["--config", str(cfg), "pre-approve", *sorted(layoff)]) == 0
    rid = _pending_pre_approval(cfg)
    # Four eyes: whoever asked cannot approve it; another person can.
    assert main(["--config", str(cfg), "approve", rid]) == 2
    monkeypatch.setattr("getpass.getuser", lambda: "sec-bob")
    assert main(["--config", str(cfg), "approve", rid]) == 0
    _export(tmp_path / "exports" / "b.csv", layoff)
    assert main(["--config", str(cfg), "sync"]) == 0
    active = _active(scim_peer)
    assert {e for e, a in active.items() if not a} == layoff
    # The next two leaving are not on the list: 2 of 20 managed accounts (10%) is held again.
    _export(tmp_path / "exports" / "c.csv", layoff | {"E005", "E006"})
    assert main(["--config", str(cfg), "sync"]) == 3
    assert _active(scim_peer)["E005"] is True
