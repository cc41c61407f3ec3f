"""Issue 18's first "Done when", end to end against `jml serve` as a process and a real SCIM app
(scim2-server on loopback), read directly:

* in headless Chromium, signed in through a real OpenID provider: Ana asks for a high-risk group for
  herself on /access; she has no Approve button and the form refuses her approval; her manager
  (from HR) and the group's owner sign in one after the other and approve it; the daemon grants it
  in the app; 20 seconds later it expires, the daemon removes it and reads the app back (the
  removal's clock stops, verified); `jml audit export` names Ana, each approver and the expiry;
* on the API with scoped tokens (`jml token create`): an HR token asks, cannot approve its own
  request, two approver tokens approve (one of them twice: refused), granted, expired, verified.

Screenshots land in test-artifacts/browser/issue18-*.png."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    http,
    jml_bin,
    person,
    scim_users,
    start_serve,
    wait_until,
    write_config,
    write_export,
)
from tests.e2e.test_browser import ADMIN_TOKEN, CHROMIUM, Browser, chromium
from tests.peers import ScimPeer, free_port

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (run tests/e2e/ensure_chromium.sh)")

USERS = {
    "u-ana": {"email": "ana@example.com", "name": "Ana Asker", "groups": ["staff"]},
    "u-mia": {"email": "mia@example.com", "name": "Mia Manager", "groups": ["staff"]},
    "u-bob": {"email": "bob@example.com", "name": "Bob Owner", "groups": ["staff"]},
}
GRANT, GROUP = "group:Prod Admins", "Prod Admins"
# The expiry job runs every 2 s here (access.check_interval), so a 20-second grant ends within the test.
ACCESS = {"check_interval": "2s",
          "catalogue": {"demo": {GRANT: {"owner": "bob@example.com", "risk": "high", "max_duration": "7d"}}}}


@pytest.fixture(scope="module")
def idp() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread(port=0, require_nonce=True) as server:
        base = f"http://localhost:{server.server_port}"
        for sub, claims in USERS.items():
            req = urllib.request.Request(f"{base}/users/{sub}", data=json.dumps(claims).encode(), method="PUT",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 204
        yield base


def _members(scim: ScimPeer, group: str) -> set[str]:
    """The group's members' userNames, read from the app itself."""
    status, body = http(f"{scim.url}Groups?count=100", headers={"Authorization": f"Bearer {scim.token}"})
    assert status == 200
    names = {u["id"]: u["userName"] for u in scim_users(scim.url, scim.token)}
    for g in json.loads(body).get("Resources", []):
        if g["displayName"] == group:
            return {names.get(m["value"], m["value"]) for m in g.get("members") or []}
    return set()


async def _sign_in(b: Browser, url: str, idp: str, sub: str) -> None:
    await b.goto(url + "access")
    if (await b.js("location.origin")) != idp:  # still signed in as someone else
        await b.click("form.logout button")
        await b.goto(url + "access")
    assert (await b.js("location.origin")) == idp
    await b.fill("input[name=sub]", sub)
    await b.click("form button[type=submit]")
    await b.wait_for("location.pathname === '/access' && !!document.getElementById('signed-in-as')", 20,
                     f"/access signed in as {sub}")


def _call(url: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    code, raw = http(url + path, data=data, method="POST" if data is not None else "GET",
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode(errors="replace")


def _request(url: str, rid: str) -> dict[str, Any]:
    code, doc = _call(url, "api/v1/access/requests", ADMIN_TOKEN)
    assert code == 200, doc
    found = [r for r in doc["requests"] if r["id"] == rid]
    assert found, doc
    return found[0]


def _setup(scim: ScimPeer, tmp_path: Path, idp: str) -> tuple[Path, str, dict[str, str]]:
    """Ana (E0000001, managed by Mia E0000002) and Bob (the group's owner) in HR; jml with OIDC."""
    rows = [person(1, work_email="ana@example.com", manager_id="E0000002"), person(2, work_email="mia@example.com"),
            person(3, work_email="bob@example.com")]
    write_export(tmp_path / "exports", "export-1.csv", rows)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cfg = write_config(tmp_path, scim_url=scim.url, port=port, extra={
        "server": {"listen": f"127.0.0.1:{port}", "shutdown_grace": "3s", "admin_token_env": "JML_ADMIN_TOKEN",
                   "public_url": url.rstrip("/"),
                   "oidc": {"issuer": idp, "client_id": "jml", "client_secret_env": "JML_OIDC_SECRET",
                            "scopes": ["openid", "email", "profile"], "roles": {"staff": "viewer"}}},
        "access": ACCESS})
    env = {"SCIM_TOKEN": scim.token, "JML_ADMIN_TOKEN": ADMIN_TOKEN, "JML_OIDC_SECRET": "e2e-oidc-secret-1234"}
    return cfg, url, env


def _jml(cfg: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([jml_bin(), "--config", str(cfg), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd=cfg.parent, check=False)


def _trail(lines: str) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for line in lines.splitlines():
        if line.strip():
            r = json.loads(line)
            by_kind.setdefault(str(r.get("kind")), []).append(r)
    return by_kind


def _expired_and_verified(url: str, scim: ScimPeer, rid: str) -> dict[str, Any]:
    """Wait for the daemon's expiry job to end the grant and read the app back; the member is gone."""
    wait_until(lambda: _request(url, rid)["removal_verified_at"], 60, 0.5, what="the expired grant's removal verified")
    assert "ana@example.com" not in _members(scim, GROUP)
    done = _request(url, rid)
    assert done["state"] == "expired" and done["end_reason"] == "expired"
    assert not done["removal_breached"] and done["ended_at"] <= done["removal_verified_at"] <= done["removal_deadline"]
    return done


async def test_request_two_approvals_granted_then_expired_in_the_browser(scim: ScimPeer, tmp_path: Path,
                                                                         idp: str) -> None:
    cfg, url, env = _setup(scim, tmp_path, idp)
    with start_serve(cfg, env=env) as served:
        served.wait_ready()
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 3, 30, what="three accounts in the app")
        async with chromium() as b:
            # -- Ana asks for Prod Admins for herself, for 20 seconds
            await _sign_in(b, url, idp, "u-ana")
            assert await b.js("document.querySelector('input[name=employee_id]').value") == "E0000001"
            await b.fill("input[name=grant]", GRANT)
            await b.fill("input[name=reason]", "incident 42")
            await b.fill("input[name=duration]", "20s")
            await b.screenshot("issue18-01-request-form")
            await b.click("#request-submit")
            flash = await b.text("#flash")
            assert flash.startswith("requested ar-"), flash
            rid = flash.split()[-1]
            assert "0/2" in await b.text("table.access-requests")
            await b.screenshot("issue18-02-requested")
            # She may not approve her own request: no button, and the form posted anyway is refused.
            assert await b.js(f"!!document.getElementById('approve-{rid}')") is False
            refused = await b.js(
                f"fetch('/access/{rid}/approve', {{method: 'POST', body: new URLSearchParams({{csrf_token: "
                "document.querySelector('input[name=csrf_token]').value}), redirect: 'manual'})"
                ".then(async r => [r.status, await r.text()])")
            assert refused[0] == 403 and "you requested it" in refused[1], refused
            # -- Mia, her manager in HR, approves: one of two
            await _sign_in(b, url, idp, "u-mia")
            await b.click(f"#approve-{rid}")
            assert "1 of 2 approvals" in await b.text("#flash")
            assert await b.js(f"!!document.getElementById('approve-{rid}')") is False  # she has approved it
            await b.screenshot("issue18-03-one-of-two-approvals")
            assert "ana@example.com" not in _members(scim, GROUP)  # one approval grants nothing
            # -- Bob, the group's owner, approves: granted
            await _sign_in(b, url, idp, "u-bob")
            await b.click(f"#approve-{rid}")
            assert "approved" in await b.text("#flash")
            await b.screenshot("issue18-04-approved")
            # -- the daemon pushes it to the app within seconds
            wait_until(lambda: "ana@example.com" in _members(scim, GROUP), 15, 0.3, what="Ana in Prod Admins")
            req = _request(url, rid)
            assert req["state"] == "active"
            assert [(a["approver"].split()[2], a["basis"]) for a in req["approvers"]] == [
                ("email=mia@example.com", "manager"), ("email=bob@example.com", "owner")]
            # -- 20 seconds later it expires: removed by the daemon and read back from the app
            _expired_and_verified(url, scim, rid)
            await b.goto(url)  # Bob is a viewer: the status page's card shows the removal verified
            card = await b.text("#access-beyond-rules")
            assert rid in card and "removed, verified" in card, card
            await b.screenshot("issue18-05-expired-removal-verified")
        _, metrics = http(url + "metrics")
        assert 'jml_access_expiry_seconds_count{connector="demo"} 1.0' in metrics.decode()
        # -- the audit trail, as an auditor exports it, names each person
        export = _jml(cfg, env, "audit", "export")
        assert export.returncode == 0, export.stderr
        by_kind = _trail(export.stdout)
        assert "email=ana@example.com" in by_kind["access_request"][0]["actor"]
        assert by_kind["access_request"][0]["data"]["request"] == rid
        assert ["email=mia@example.com" in by_kind["access_vote"][0]["actor"],
                "email=bob@example.com" in by_kind["access_vote"][1]["actor"]] == [True, True]
        granted = by_kind["access_granted"][0]
        assert "email=ana@example.com" in granted["data"]["requested_by"] and len(granted["data"]["approvers"]) == 2
        assert (by_kind["access_expired"][0]["subject"], by_kind["access_expired"][0]["data"]["request"]) == (
            "E0000001", rid)
        assert by_kind["access_removal_verified"][0]["data"]["request"] == rid
        assert _jml(cfg, env, "audit", "verify").returncode == 0
        assert served.stop() == 0


async def test_request_two_approvals_granted_then_expired_on_the_api(scim: ScimPeer, tmp_path: Path,
                                                                     idp: str) -> None:
    cfg, url, env = _setup(scim, tmp_path, idp)
    tokens = {}
    for name, role in (("hr-desk", "hr"), ("approver-1", "approver"), ("approver-2", "approver")):
        made = _jml(cfg, env, "token", "create", name, "--role", role)
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.split()[0]
    with start_serve(cfg, env=env) as served:
        served.wait_ready()
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 3, 30, what="three accounts in the app")
        # -- HR asks for Prod Admins for Ana, for 20 seconds
        code, req = _call(url, "api/v1/access/requests", tokens["hr-desk"], {
            "employee_id": "E0000001", "connector": "demo", "grant": GRANT, "reason": "incident 43",
            "duration": "20s"})
        assert code == 201 and req["state"] == "pending" and req["required"] == 2, req
        rid = req["id"]
        # -- whoever asked may not approve
        code, doc = _call(url, f"api/v1/access/requests/{rid}/approve", tokens["hr-desk"], {})
        assert code == 403 and "you requested it" in doc["error"], doc
        # -- two approvers, each once
        code, doc = _call(url, f"api/v1/access/requests/{rid}/approve", tokens["approver-1"], {})
        assert code == 202 and doc["state"] == "pending" and "1 of 2 approvals" in doc["message"], doc
        code, doc = _call(url, f"api/v1/access/requests/{rid}/approve", tokens["approver-1"], {})
        assert code == 403 and "already approved" in doc["error"], doc
        assert "ana@example.com" not in _members(scim, GROUP)
        code, doc = _call(url, f"api/v1/access/requests/{rid}/approve", tokens["approver-2"], {})
        assert code == 200 and doc["state"] == "active" and doc["plan_ids"], doc
        wait_until(lambda: "ana@example.com" in _members(scim, GROUP), 15, 0.3, what="Ana in Prod Admins")
        # -- 20 seconds later: expired, removed, read back
        _expired_and_verified(url, scim, rid)
        code, raw = http(url + "api/v1/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert code == 200
        by_kind = _trail(raw.decode())
        assert by_kind["access_request"][0]["actor"].startswith("api-token=hr-desk role=hr")
        assert [v["actor"].split()[0] for v in by_kind["access_vote"]] == ["api-token=approver-1",
                                                                            "api-token=approver-2"]
        assert by_kind["access_expired"][0]["data"]["request"] == rid
        verified = by_kind["access_removal_verified"][0]
        assert verified["data"]["request"] == rid and verified["data"]["breached"] is False
        assert served.stop() == 0
