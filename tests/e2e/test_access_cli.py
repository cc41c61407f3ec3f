"""`jml access …` as a user runs it, in a subprocess against a real scim2-server: request -> a refused
self-approval -> two approvals (exit 3 while waiting) -> granted in the app -> revoke -> removal read
back; the catalogue; break-glass; bad input is one line, exit 2."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli import Cli, _empty, assert_one_clean_line, people
from tests.peers import ScimPeer, scim2_server

ACCESS = {"catalogue": {"demo": {"group:Prod Admins": {"owner": "bob@example.com", "risk": "high",
                                                       "max_duration": "7d"}}},
          "jit": {"max_duration": "8h", "roles": ["operator"]}}


@pytest.fixture(scope="module")
def peer() -> Iterator[ScimPeer]:
    with scim2_server(token="e2e-access-token") as p:
        yield p


@pytest.fixture
def cli(tmp_path: Path, peer: ScimPeer) -> Cli:
    _empty(peer)
    c = Cli(tmp_path, peer, access=ACCESS)
    rows = people(3)
    for row, (first, mgr) in zip(rows, [("ana", "E001"), ("mia", ""), ("bob", "")], strict=True):
        row.update(first_name=first.title(), work_email=f"{first}@example.com", manager_id=mgr,
                   department="Engineering")
    c.write(rows)
    assert c.run("sync").returncode == 0
    return c


def _groups_of(peer: ScimPeer, email: str) -> set[str]:
    def get(path: str) -> Any:
        with urllib.request.urlopen(urllib.request.Request(peer.url + path, headers=peer.headers), timeout=10) as r:
            return json.loads(r.read())
    uid = {u["userName"]: u["id"] for u in get("Users?count=100")["Resources"]}[email]
    return {g["displayName"] for g in get("Groups?count=100").get("Resources", [])
            if any(m["value"] == uid for m in g.get("members") or [])}


def test_request_two_approvals_granted_then_revoked(cli: Cli, peer: ScimPeer) -> None:
    r = cli.run("access", "request", "E000", "demo", "group:Prod Admins", "--reason", "incident 42", "--for", "8h",
                "--as", "ana@example.com")
    assert r.returncode == 0, r.stderr
    rid = re.search(r"access request (ar-[0-9a-f]+)", r.stdout).group(1)  # type: ignore[union-attr]
    assert "2 approval(s) needed" in r.stdout
    r = cli.run("access", "approve", rid, "--as", "ana@example.com")
    assert r.returncode == 2
    assert_one_clean_line(r.stderr, "you requested it")
    r = cli.run("access", "approve", rid, "--as", "mia@example.com")  # Ana's manager in HR
    assert r.returncode == 3 and "1 of 2" in r.stdout, r.stdout + r.stderr
    r = cli.run("access", "approve", rid, "--as", "bob@example.com")  # the owner
    assert r.returncode == 0, r.stdout + r.stderr
    assert "approved" in r.stdout and "result: done" in r.stdout
    assert "Prod Admins" in _groups_of(peer, "ana@example.com")
    r = cli.run("access", "list", "--json")
    listed = json.loads(r.stdout)["requests"]
    assert [(x["id"], x["state"]) for x in listed] == [(rid, "active")]
    assert [a["basis"] for a in listed[0]["approvers"]] == ["manager", "owner"]
    r = cli.run("access", "revoke", rid, "--as", "bob@example.com", "--reason", "incident closed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Prod Admins" not in _groups_of(peer, "ana@example.com")
    r = cli.run("access", "expire")
    assert r.returncode == 0 and "1 removal(s) verified" in r.stdout, r.stdout + r.stderr
    r = cli.run("access", "list", "--state", "revoked")
    assert rid in r.stdout and "revoked" in r.stdout


def test_catalogue_jit_and_bad_input(cli: Cli, peer: ScimPeer) -> None:
    r = cli.run("access", "catalogue", "--json")
    assert r.returncode == 0, r.stderr
    by = {e["grant"]: e for e in json.loads(r.stdout)["entitlements"]}
    assert by["group:Staff"]["birthright"] and by["group:Staff"]["in_app"]
    assert by["group:Prod Admins"]["risk"] == "high" and by["group:Prod Admins"]["owner"] == "bob@example.com"
    r = cli.run("access", "jit", "demo", "group:Ops", "--hours", "2", "--reason", "pager 7", "--as", "bob@example.com")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BREAK-GLASS" in r.stderr  # the loud log line
    assert "Ops" in _groups_of(peer, "bob@example.com")
    r = cli.run("access", "jit", "demo", "group:Ops", "--hours", "9", "--reason", "x", "--as", "bob@example.com")
    assert r.returncode == 2
    assert_one_clean_line(r.stderr, "hours")
    r = cli.run("access", "request", "E000", "nowhere", "group:X", "--reason", "r")
    assert r.returncode == 2
    assert_one_clean_line(r.stderr, "connector: unknown connector 'nowhere'")
    r = cli.run("access", "request", "E000", "demo", "group:X", "--reason", "r", "--for", "soon")
    assert r.returncode == 2
    assert_one_clean_line(r.stderr, "--for")
