"""One export, four connectors at once (scim, aws_identity_center, github, slack) on loopback
peers; then a day of churn; every target ends exactly as the rules say.

The expectation is computed here from the CSV and the rules below, not by jml's policy code;
each target is read on the peer's side (scim2-server, moto, the GitHub fake), never through
a connector. Peers: scim2-server (scim); scim2-server behind the AWS limits wrapper + moto
(aws); scim2-server behind the Slack limits wrapper (slack); the loopback GitHub, every
request validated against GitHub's REST description (github).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jml.cli import main
from tests.integration.contract.target_aws import ACCOUNT, AwsStack, aws_stack
from tests.integration.test_sync_scim import GEN_HRIS
from tests.peers import ScimPeer, scim2_server
from tests.vendor_peers.github import GithubFake
from tests.vendor_peers.openapi_validator import description
from tests.vendor_peers.slack_scim import SlackScimProxy

ENGINEERING = {"Engineering", "Data Science", "Security", "IT"}
SALES = {"Sales", "Customer Success"}
DEV = f"Developer@{ACCOUNT}"
RULES = [
    {"name": "everyone", "when": {"status": ["Active", "Leave"]},
     "grant": {"scim": ["All Staff"], "slack": ["group:all-staff"]}},
    {"name": "engineering", "when": {"department": sorted(ENGINEERING)},
     "grant": {"scim": ["Engineering"], "aws": [DEV], "github": ["team:engineering"]}},
    {"name": "sales", "when": {"department": sorted(SALES)}, "grant": {"slack": ["group:sales"]}},
]


def _get(url: str, headers: dict[str, str]) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as r:
        return json.load(r)


def scim_state(peer: ScimPeer) -> dict[str, tuple[bool, frozenset[str]]]:
    """externalId -> (active, groups), read from scim2-server itself."""
    users = _get(peer.url + "Users?count=1000", peer.headers)["Resources"]
    groups = _get(peer.url + "Groups?count=1000", peer.headers)["Resources"]
    by_id = {u["id"]: u for u in users}
    member: dict[str, set[str]] = {u["id"]: set() for u in users}
    for g in groups:
        for m in g.get("members") or []:
            member.setdefault(m["value"], set()).add(g["displayName"])
    out: dict[str, tuple[bool, frozenset[str]]] = {}
    for uid, u in by_id.items():
        assert u.get("externalId") not in out, f"two accounts for {u.get('externalId')}"
        out[u.get("externalId")] = (u.get("active", True), frozenset(member[uid]))
    return out


def expected(rows: list[dict[str, str]], had: dict[str, set[str]] | None = None,
             ) -> dict[str, dict[str, tuple[bool, frozenset[str]]]]:
    """connector -> employee_id -> (active, grants) for everyone who has (or had) an account:
    `had` lists who held one before; someone no rule names there any more keeps an
    inactive account without grants (a mover out of engineering loses AWS and GitHub)."""
    out: dict[str, dict[str, tuple[bool, frozenset[str]]]] = {"scim": {}, "slack": {}, "aws": {}, "github": {}}
    for r in rows:
        eid, dept, staying = r["employee_id"], r["department"], r["status"] in ("Active", "Leave")
        eng, sales = dept in ENGINEERING, dept in SALES
        grants = {
            "scim": {"All Staff", *(["Engineering"] if eng else [])},
            "slack": {"all-staff", *(["sales"] if sales else [])},
            "aws": {DEV} if eng else set(),
            "github": {"engineering"} if eng and r["github_username"] else set(),
        }
        for connector in out:
            if connector in ("aws", "github") and not eng:
                continue  # no rule names these connectors for this person
            if connector == "github" and not r["github_username"]:
                continue
            out[connector][eid] = (staying, frozenset(grants[connector]) if staying else frozenset())
    for connector, eids in (had or {}).items():
        for eid in eids - set(out[connector]):
            out[connector][eid] = (False, frozenset())
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def connectors(scim: ScimPeer, aws: AwsStack, slack_proxy: SlackScimProxy, github: GithubFake, *,
               github_limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """The four connectors' config on these peers; tokens from $T_SCIM, $T_AWS, $T_SLACK, $T_GITHUB."""
    return {
        "scim": {"type": "scim", "url": scim.url, "token_env": "T_SCIM"},
        "aws": {"type": "aws_identity_center", "scim_url": aws.proxy.scim_url, "token_env": "T_AWS",
                "instance_arn": aws.instance_arn, "region": "us-east-1", "endpoint_url": aws.moto_url},
        "slack": {"type": "slack", "scim_url": slack_proxy.url, "token_env": "T_SLACK"},
        "github": {"type": "github", "mode": "org", "org": github.org, "api_url": github.url,
                   "token_env": "T_GITHUB", **(github_limits or {})},
    }


@contextlib.contextmanager
def peers() -> Iterator[tuple[ScimPeer, AwsStack, ScimPeer, SlackScimProxy, GithubFake]]:
    with scim2_server() as scim, aws_stack() as aws, scim2_server(token="slack-tok") as slack, \
            GithubFake() as github:
        github.auto_accept = True
        proxy = SlackScimProxy(slack.url, "slack-tok")
        proxy.start()
        try:
            yield scim, aws, slack, proxy, github
        finally:
            proxy.stop()


def test_one_export_four_connectors_then_a_day_of_churn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    description()  # GitHub's REST description (npm); DescriptionMissing fails, never skips
    today = dt.datetime.now(dt.UTC).date()
    day0, day1 = tmp_path / "day0.csv", tmp_path / "day1.csv"
    subprocess.run([sys.executable, str(GEN_HRIS), "--people", "60", "--seed", "5", "--today", today.isoformat(),
                    "--out", str(day0)], check=True)
    rows0 = _rows(day0)
    for r in rows0:  # keep the expectation simple: everyone employed today, nobody pre-hired
        r["status"], r["hire_date"] = ("Active", "2024-01-01") if r["status"] == "Pre-hire" else (
            r["status"], r["hire_date"])
    with day0.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows0[0]))
        w.writeheader()
        w.writerows(rows0)
    subprocess.run([sys.executable, str(GEN_HRIS), "--from", str(day0), "--joiners", "0.1", "--movers", "0.15",
                    "--leavers", "0.05", "--seed", "6", "--today", today.isoformat(), "--out", str(day1)], check=True)

    with peers() as (scim, aws, slack, slack_proxy, github):
        for key, value in {"T_SCIM": scim.token, "T_AWS": aws.peer.token, "T_SLACK": "slack-tok",
                           "T_GITHUB": github.token}.items():
            monkeypatch.setenv(key, value)
        exports = tmp_path / "exports"
        exports.mkdir()
        cfg = tmp_path / "jml.yaml"
        cfg.write_text(yaml.safe_dump({
            "state": {"url": "sqlite:///jml.db"},
            "sources": {"hris": {"location": "./exports/", "timezone": "UTC"}},
            "guard": {"max_deprovision_percent": 50, "max_deprovision_count": 100},
            "policy": {"username": "{work_email}", "rules": RULES},
            "connectors": connectors(scim, aws, slack_proxy, github, github_limits={"rate_limit": 100, "burst": 100}),
        }))
        had: dict[str, set[str]] = {}
        for day, path in (("day0", day0), ("day1", day1)):
            (exports / f"{day}.csv").write_bytes(path.read_bytes())
            assert main(["--config", str(cfg), "sync"]) == 0, day
            want = expected(_rows(path), had)
            had = {c: set(accounts) for c, accounts in want.items()}

            assert scim_state(scim) == want["scim"], f"scim after {day}"

            slack_now = scim_state(slack)
            assert slack_now == want["slack"], f"slack after {day}"
            assert not slack_proxy.rate_limited, "Slack's documented rate limit was exceeded"

            aws_users = scim_state(aws.peer)
            assert {e: a for e, (a, _g) in aws_users.items()} == {e: a for e, (a, _g) in want["aws"].items()}, day
            ids = {u["externalId"]: u["id"] for u in _get(aws.peer.url + "Users?count=1000",
                                                          aws.peer.headers)["Resources"]}
            for eid, (_active, grants) in want["aws"].items():
                assert frozenset(aws.assignments(ids[eid], [DEV])) == grants, f"aws assignments of {eid} {day}"

            logins = {r["github_username"]: r["employee_id"] for r in _rows(path) if r["github_username"]}
            members = {logins[m.login]: m.state == "active" for m in github.members.values() if m.login in logins}
            team = github.teams.get("engineering")
            in_team = {logins[login] for login in (team.members if team else ()) if login in logins}
            want_gh = {e: a for e, (a, _g) in want["github"].items()}
            # An org leaver is removed from the org (no inactive membership exists on GitHub).
            assert members == {e: True for e, a in want_gh.items() if a}, f"github org after {day}"
            assert in_team == {e for e, (_a, g) in want["github"].items() if g}, f"github team after {day}"
        # Nothing left undone, and a re-run finds nothing to do.
        assert main(["--config", str(cfg), "sync"]) == 0
