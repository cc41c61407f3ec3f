"""`jml serve` as a process with all four connectors configured (scim, aws_identity_center,
slack, github): one Okta deactivate event takes the person's access away in every app, each
read on the peer's own side (scim2-server, moto, the GitHub fake), never through a connector;
the others keep theirs; every connector's SLA clock stops on a verified read-back.

Peers and rules are the four-connector sync test's (test_four_connectors.py).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tests.e2e.helpers import db_scalar, person, start_serve, wait_until, write_config, write_export
from tests.e2e.test_four_connectors import DEV, RULES, _get, connectors, peers, scim_state
from tests.integration.contract.target_aws import AwsStack
from tests.peers import ScimPeer
from tests.vendor_peers.github import GithubFake
from tests.vendor_peers.openapi_validator import description

OKTA = "e2e-okta-secret"


def access(eid: str, login: str, scim: ScimPeer, aws: AwsStack, slack: ScimPeer,
           github: GithubFake) -> dict[str, tuple[bool, frozenset[str]]]:
    """connector -> (active, what the person holds there), read from each peer."""
    out = {"scim": scim_state(scim).get(eid, (False, frozenset())),
           "slack": scim_state(slack).get(eid, (False, frozenset()))}
    users = {u["externalId"]: u for u in _get(aws.peer.url + "Users?count=1000", aws.peer.headers)["Resources"]}
    user = users.get(eid)
    out["aws"] = (bool(user and user.get("active", True)),
                  frozenset(aws.assignments(user["id"], [DEV])) if user else frozenset())
    member = next((m for m in github.members.values() if m.login == login), None)
    team = github.teams.get("engineering")
    out["github"] = (member is not None and member.state == "active",
                     frozenset({"engineering"}) if team and login in team.members else frozenset())
    return out


def test_okta_deactivate_reaches_every_connector(tmp_path: Path) -> None:
    description()  # GitHub's REST description (npm); DescriptionMissing fails, never skips
    with peers() as (scim, aws, slack, slack_proxy, github):
        write_export(tmp_path / "exports", "hr.csv",
                     [person(i, github_username=f"gh-user{i}") for i in range(1, 4)])
        cfg = write_config(tmp_path, extra={
            "sources": {"hris": {"location": "./exports/", "format": "csv", "profile": "generic",
                                 "poll_interval": "1s"},
                        "okta": {"secret_env": "OKTA_SECRET"}},
            "policy": {"username": "{work_email}", "rules": RULES},
            "connectors": connectors(scim, aws, slack_proxy, github)})
        env = {"T_SCIM": scim.token, "T_AWS": aws.peer.token, "T_SLACK": "slack-tok", "T_GITHUB": github.token,
               "OKTA_SECRET": OKTA, "JML_ADMIN_TOKEN": "e2e-admin"}
        granted = {"scim": (True, frozenset({"All Staff", "Engineering"})), "slack": (True, frozenset({"all-staff"})),
                   "aws": (True, frozenset({DEV})), "github": (True, frozenset({"engineering"}))}
        revoked = dict.fromkeys(granted, (False, frozenset()))
        with start_serve(cfg, env) as served:
            served.wait_ready(60)
            for i in (1, 2):
                wait_until(lambda i=i: access(f"E000000{i}", f"gh-user{i}", scim, aws, slack, github) == granted,
                           90, 0.5, f"E000000{i} provisioned in all four apps")

            delivery = json.dumps({"eventType": "com.okta.event_hook", "data": {"events": [
                {"uuid": "e2e-four-1", "published": dt.datetime.now(dt.UTC).isoformat(),
                 "eventType": "user.lifecycle.deactivate",
                 "target": [{"type": "User", "alternateId": "user1@example.com"}]}]}}).encode()
            status, _ = served.post("/webhooks/okta", delivery,
                                    {"Content-Type": "application/json", "Authorization": OKTA})
            assert status == 200
            wait_until(lambda: access("E0000001", "gh-user1", scim, aws, slack, github) == revoked,
                       60, 0.2, "E0000001's access gone from all four apps")
            assert access("E0000002", "gh-user2", scim, aws, slack, github) == granted  # nobody else touched
            assert not slack_proxy.rate_limited, "Slack's documented rate limit was exceeded"
            db = tmp_path / "jml.db"
            wait_until(lambda: db_scalar(db, "SELECT count(*) FROM sla_clock WHERE employee_id = ? "
                                             "AND verified_at IS NOT NULL", "E0000001") == 4,
                       60, 0.2, "an SLA clock verified in each of the four connectors")
            assert served.stop() == 0
