"""The command line as a user runs it: `.venv/bin/jml --config X ...` in a subprocess,
against a real scim2-server. Exit codes, stdout/stderr shapes, per DESIGN's CLI contract."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.peers import ScimPeer, scim2_server

JML = str(Path(sys.executable).with_name("jml"))
TOKEN_ENV = "JML_E2E_SCIM_TOKEN"
ACTIONS = {"create", "update", "deactivate", "reactivate", "delete", "add_member", "remove_member", "create_group",
           "assign", "unassign", "invite", "cancel_invite"}
FIELDS = ["employee_id", "first_name", "last_name", "preferred_name", "work_email", "department", "cost_center",
          "job_title", "manager_id", "location", "country", "employment_type", "status", "hire_date",
          "termination_date", "github_username"]


def people(n: int) -> list[dict[str, str]]:
    return [{"employee_id": f"E{i:03d}", "first_name": "Person", "last_name": f"N{i:03d}", "preferred_name": "",
             "work_email": f"person.n{i:03d}@example.com", "department": "Engineering" if i % 3 else "Sales",
             "cost_center": "CC-1", "job_title": "Engineer", "manager_id": "", "location": "Berlin", "country": "DE",
             "employment_type": "Employee", "status": "Active", "hire_date": "2020-01-06", "termination_date": "",
             "github_username": ""} for i in range(n)]


@pytest.fixture(scope="module")
def peer() -> Iterator[ScimPeer]:
    with scim2_server(token="e2e-cli-token") as p:
        yield p


class Cli:
    def __init__(self, tmp: Path, peer: ScimPeer, **config: Any) -> None:
        self.tmp, self.peer = tmp, peer
        self.export = tmp / "hr.csv"
        doc: dict[str, Any] = {
            "state": {"url": f"sqlite:///{tmp / 'jml.db'}"},
            "sources": {"hris": {"location": "./hr.csv", "profile": "generic", "timezone": "Europe/Berlin"}},
            "guard": {"max_deprovision_percent": 5, "max_shrink_percent": 10},
            "policy": {"username": "{work_email}", "rules": [
                {"name": "everyone", "when": {"status": ["Active", "Leave"]}, "grant": {"demo": ["Staff"]}},
                {"name": "eng", "when": {"department": "Engineering"}, "grant": {"demo": ["Eng"]}}]},
            "connectors": {"demo": {"type": "scim", "url": peer.url, "token_env": TOKEN_ENV, "max_attempts": 1}},
        }
        doc.update(config)
        self.config = tmp / "jml.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.env = {**os.environ, TOKEN_ENV: peer.token}

    def write(self, rows: list[dict[str, str]], fields: list[str] = FIELDS) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        self.export.write_text(buf.getvalue(), encoding="utf-8")

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([JML, "--config", str(self.config), *args], capture_output=True, text=True,
                              env=env or self.env, cwd=self.tmp, timeout=120)

    def users(self) -> list[dict[str, Any]]:
        req = urllib.request.Request(self.peer.url + "Users?count=1000", headers=self.peer.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return list(json.loads(r.read()).get("Resources", []))


def _empty(peer: ScimPeer) -> None:
    for kind in ("Groups", "Users"):
        req = urllib.request.Request(f"{peer.url}{kind}?count=1000", headers=peer.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            ids = [x["id"] for x in json.loads(r.read()).get("Resources", [])]
        for i in ids:
            urllib.request.urlopen(urllib.request.Request(f"{peer.url}{kind}/{i}", method="DELETE",
                                                          headers=peer.headers), timeout=10).close()


@pytest.fixture
def cli(tmp_path: Path, peer: ScimPeer) -> Cli:
    _empty(peer)
    return Cli(tmp_path, peer)


def assert_one_clean_line(stderr: str, *needles: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_plan_json_sync_and_status_json(cli: Cli) -> None:
    cli.write(people(6))
    r = cli.run("plan", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert isinstance(doc, dict) and set(doc) == {"plan_id", "operations", "summary", "guard"}
    assert doc["plan_id"] is None or isinstance(doc["plan_id"], str)
    assert doc["guard"] == {"held": False, "reasons": []}
    ops = doc["operations"]
    assert ops and all(set(op) == {"connector", "action", "person", "detail"} for op in ops)
    assert all(op["action"] in ACTIONS and op["connector"] == "demo" and isinstance(op["detail"], dict)
               for op in ops)
    assert doc["summary"] == dict(Counter(op["action"] for op in ops))
    assert {op["person"] for op in ops if op["action"] == "create"} == {f"E{i:03d}" for i in range(6)}
    assert cli.users() == []  # plan applies nothing

    r = cli.run("sync")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(u["userName"] for u in cli.users()) == [f"person.n{i:03d}@example.com" for i in range(6)]

    r = cli.run("status", "--json")
    assert r.returncode == 0
    status = json.loads(r.stdout)
    assert status["held_plans"] == [] and status["dead_letters"] == []
    assert status["connectors"]["demo"]["pending"] == 0
    assert status["source"]["last_status"] == "accepted"

    r = cli.run("plan", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"plan_id": None, "operations": [], "summary": {},
                                    "guard": {"held": False, "reasons": []}}


def test_failed_operations_exit_1(cli: Cli) -> None:
    cli.write(people(2))
    r = cli.run("sync", env={**cli.env, TOKEN_ENV: "not-the-token"})  # the app answers 401
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "dead" in r.stdout + r.stderr
    status = json.loads(cli.run("status", "--json").stdout)
    assert status["dead_letters"] and all(d["connector"] == "demo" for d in status["dead_letters"])
    r = cli.run("retry", "--all")  # with the right token
    assert r.returncode == 0, r.stderr
    assert len(cli.users()) == 2


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(lambda d: d["connectors"]["demo"].update(colour="red"), "connectors.demo.colour",
                     id="unknown-key"),
        pytest.param(lambda d: d.update(lifecycle={"prehire_days": "three"}), "lifecycle.prehire_days",
                     id="wrong-type"),
        pytest.param(lambda d: d.update(surprise=1), "surprise", id="unknown-top-level-key"),
    ],
)
def test_bad_config_exits_2_with_one_line(cli: Cli, mutate: Any, needle: str) -> None:
    doc = yaml.safe_load(cli.config.read_text())
    mutate(doc)
    cli.config.write_text(yaml.safe_dump(doc))
    cli.write(people(1))
    r = cli.run("sync")
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert_one_clean_line(r.stderr, needle)


def test_missing_secret_env_var_exits_2_before_planning(cli: Cli) -> None:
    cli.write(people(2))
    env = {k: v for k, v in cli.env.items() if k != TOKEN_ENV}
    r = cli.run("sync", env=env)
    assert r.returncode == 2
    assert_one_clean_line(r.stderr, "connectors.demo.token_env", TOKEN_ENV)
    assert cli.users() == []
    status = json.loads(cli.run("status", "--json").stdout)
    assert status["connectors"]["demo"]["pending"] == 0  # nothing was planned that could not be pushed
    assert cli.run("sync").returncode == 0 and len(cli.users()) == 2


def test_config_file_not_found_exits_2(tmp_path: Path) -> None:
    r = subprocess.run([JML, "--config", str(tmp_path / "nope.yaml"), "status"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert_one_clean_line(r.stderr, "nope.yaml")


def test_rejected_export_exits_3_also_dry_run(cli: Cli) -> None:
    cli.write(people(3), fields=[f for f in FIELDS if f != "status"])  # a required column is gone
    for args in (["sync", "--dry-run"], ["sync"], ["sync"]):  # the same file stays rejected
        r = cli.run(*args)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "status" in r.stderr
    assert cli.users() == []


def test_held_plan_exits_3_also_dry_run(cli: Cli) -> None:
    team = people(20)
    cli.write(team)
    assert cli.run("sync").returncode == 0
    assert len(cli.users()) == 20
    cli.write(team[:10])
    r = cli.run("sync", "--dry-run")
    assert r.returncode == 3 and "HELD" in r.stdout
    r = cli.run("plan", "--json")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["guard"]["held"] is True and any("shrank" in x for x in doc["guard"]["reasons"])
    r = cli.run("sync")
    assert r.returncode == 3 and "HELD" in r.stdout
    status = json.loads(cli.run("status", "--json").stdout)
    assert len(status["held_plans"]) == 1
    assert all(u["active"] for u in cli.users()) and len(cli.users()) == 20
    r = cli.run("discard", status["held_plans"][0]["plan_id"])
    assert r.returncode == 0 and "discarded" in r.stdout
