"""`jml serve` as a process: an Okta deactivate and an HR termination webhook reach the
app; a forged or replayed request changes nothing; `jml offboard` while the daemon holds
the workers' lease leaves the pushing to the daemon."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

from jml.webhooks import sign
from tests.e2e.helpers import (
    db_scalar,
    jml_bin,
    person,
    scim_users,
    start_serve,
    wait_until,
    write_config,
    write_export,
)
from tests.peers import ScimPeer

OKTA = "e2e-okta-secret"
HR = "e2e-hr-secret"


def _active(scim: ScimPeer, eid: str) -> bool | None:
    for u in scim_users(scim.url, scim.token):
        if u.get("externalId") == eid:
            return bool(u.get("active", True))
    return None


def test_webhooks_and_offboard_against_serve(tmp_path: Path, scim: ScimPeer) -> None:
    write_export(tmp_path / "exports", "hr.csv", [person(i) for i in range(1, 6)])
    cfg = write_config(tmp_path, scim_url=scim.url, extra={
        "sources": {"hris": {"location": "./exports/", "format": "csv", "poll_interval": "1s"},
                    "okta": {"secret_env": "OKTA_SECRET"}, "webhook": {"secret_env": "HR_SECRET"}}})
    env = {"SCIM_TOKEN": scim.token, "OKTA_SECRET": OKTA, "HR_SECRET": HR, "JML_ADMIN_TOKEN": "e2e-admin"}
    db = tmp_path / "jml.db"
    with start_serve(cfg, env) as served:
        served.wait_up()
        wait_until(lambda: _active(scim, "E0000005") is True, 30, what="the export provisioned")
        status, body = served.get("/webhooks/okta", {"x-okta-verification-challenge": "c1", "Authorization": OKTA})
        assert status == 200 and json.loads(body) == {"verification": "c1"}

        published = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)).isoformat()
        delivery = json.dumps({"eventType": "com.okta.event_hook", "data": {"events": [
            {"uuid": "e2e-1", "published": published, "eventType": "user.lifecycle.deactivate",
             "target": [{"type": "User", "alternateId": "USER1@example.com"}]}]}}).encode()
        json_type = {"Content-Type": "application/json"}
        assert served.post("/webhooks/okta", delivery, {**json_type, "Authorization": "wrong"})[0] == 401
        started = time.monotonic()
        assert served.post("/webhooks/okta", delivery, {**json_type, "Authorization": OKTA})[0] == 200
        wait_until(lambda: _active(scim, "E0000001") is False, 20, 0.05, "the Okta leaver deactivated")
        okta_latency = time.monotonic() - started
        assert served.post("/webhooks/okta", delivery, {**json_type, "Authorization": OKTA})[0] == 200  # duplicate
        assert db_scalar(db, "SELECT count(*) FROM webhook_event") == 1

        doc = {"id": "hr-e2e-1", "type": "termination", "occurred_at": published,
               "person": {"employee_id": "E0000002"}}
        raw = json.dumps(doc).encode()
        stale = int(time.time()) - 600
        assert served.post("/webhooks/hr", raw, {**json_type,
                                                 "X-JML-Signature": f"t={stale},v1={sign(HR, stale, raw)}"})[0] == 401
        t = int(time.time())
        assert served.post("/webhooks/hr", raw, {**json_type, "X-JML-Signature": f"t={t},v1={sign(HR, t, raw)}"})[0] \
            == 200
        wait_until(lambda: _active(scim, "E0000002") is False, 20, 0.05, "the HR termination deactivated")
        assert _active(scim, "E0000003") is True

        # The daemon holds the lease: the CLI records the offboard and the daemon pushes it.
        out = subprocess.run([jml_bin(), "--config", str(cfg), "offboard", "E0000003", "--reason", "e2e"],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: _active(scim, "E0000003") is False, 20, 0.05, "the offboarded leaver deactivated")
        out = subprocess.run([jml_bin(), "--config", str(cfg), "offboard", "E9999999", "--reason", "e2e"],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "unknown employee" in out.stderr
        assert served.stop() == 0
    assert okta_latency < 5, okta_latency
