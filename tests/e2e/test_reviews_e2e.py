"""An access review as people run it: `jml serve` against scim2-server, the campaign started
with `jml review start`, a revocation decided on the API, pushed by the daemon's workers and read
back by the daemon, the progress gauge on /metrics, the evidence from `jml review export` and the
trail from `jml audit export` passing `jml audit verify`."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.helpers import jml_bin, person, start_serve, wait_until, write_config, write_export
from tests.peers import ScimPeer

ADMIN = "e2e-admin-" + "token-0123456789abcdef"


def _groups(scim: ScimPeer) -> dict[str, set[str]]:
    def get(path: str) -> Any:
        req = urllib.request.Request(scim.url + path, headers=scim.headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    ids = {u["id"]: u["userName"] for u in get("Users?count=500").get("Resources", [])}
    return {g["displayName"]: {ids.get(m["value"], m["value"]) for m in g.get("members") or []}
            for g in get("Groups?count=500").get("Resources", [])}


def test_review_revocation_through_the_daemon(scim: ScimPeer, tmp_path: Path) -> None:
    rows = [person(i, manager_id="E0000001" if i > 1 else "") for i in range(1, 6)]
    write_export(tmp_path / "exports", "hr.csv", rows)
    cfg = write_config(tmp_path, scim_url=scim.url, extra={"reviews": {"default_reviewer": "sec@example.com"}})
    env = {**os.environ, "SCIM_TOKEN": scim.token, "JML_ADMIN_TOKEN": ADMIN}

    def jml(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([jml_bin(), "--config", str(cfg), *args], capture_output=True, text=True, env=env,
                              timeout=60)

    with start_serve(cfg, env=env) as served:
        served.wait_ready()
        wait_until(lambda: len(_groups(scim).get("All Staff", ())) == 5, 30, what="everyone in All Staff")

        r = jml("review", "start", "--by", "manager", "--name", "e2e")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("campaign 1 started: e2e, 10 item(s), 0 unexplained")
        bearer = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        status, doc = served.get_json("/api/v1/reviews/1", bearer)
        assert status == 200
        item = next(i for i in doc["items"] if i["employee_id"] == "E0000003" and i["entitlement"] ==
                    "group:All Staff")
        assert item["reviewer"] == "user1@example.com" and item["why"] == "rule"

        status, body = served.post("/api/v1/reviews/1/decisions", json.dumps(
            {"items": [item["item"]], "decision": "revoke", "reason": "e2e"}).encode(), bearer)
        assert status == 202, body

        def revoked() -> bool:
            got = served.get_json("/api/v1/reviews/1", bearer)[1]
            return any(i["item"] == item["item"] and i["state"] == "revoked" for i in got["items"])
        wait_until(revoked, 30, what="the daemon to push and read back the revocation")
        assert "user3@example.com" not in _groups(scim)["All Staff"]
        metrics = served.get("/metrics")[1].decode()
        assert 'jml_review_items{campaign="1",state="revoked"} 1.0' in metrics

        r = jml("review", "export", "1", "--format", "json")
        assert r.returncode == 0, r.stderr
        row = next(i for i in json.loads(r.stdout)["items"] if i["item"] == item["item"])
        assert row["decision"] == "revoke" and row["verified_at"] and row["audit_hash"]
        trail = jml("audit", "export")
        assert trail.returncode == 0
        (tmp_path / "trail.jsonl").write_text(trail.stdout, encoding="utf-8")
        r = jml("audit", "verify", str(tmp_path / "trail.jsonl"))
        assert r.returncode == 0 and "audit trail intact" in r.stdout, r.stderr
        chain = {rec["seq"]: rec for rec in map(json.loads, trail.stdout.splitlines()) if "seq" in rec}
        assert chain[row["audit_seq"]]["hash"] == row["audit_hash"]
        assert served.stop() == 0
