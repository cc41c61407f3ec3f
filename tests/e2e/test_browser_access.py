"""Access requests in headless Chromium, signed in through a real OpenID provider, against `jml serve`
as a process and a real SCIM app: Ana asks for a high-risk group for herself; she cannot approve it;
her manager (from HR) and the group's owner approve it; the daemon grants it in the app; one minute
later it expires, the daemon removes it and reads the app back (the removal's clock stops); the
audit trail names each person. Screenshots land in test-artifacts/browser/."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import http, person, scim_users, start_serve, wait_until, write_config, write_export
from tests.e2e.test_browser import ADMIN_TOKEN, CHROMIUM, Browser, chromium
from tests.peers import ScimPeer, free_port

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (run tests/e2e/ensure_chromium.sh)")

USERS = {
    "u-ana": {"email": "ana@example.com", "name": "Ana Asker", "groups": ["staff"]},
    "u-mia": {"email": "mia@example.com", "name": "Mia Manager", "groups": ["staff"]},
    "u-bob": {"email": "bob@example.com", "name": "Bob Owner", "groups": ["staff"]},
}


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


def _api(url: str, path: str) -> Any:
    code, body = http(url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert code == 200, body[:300]
    return json.loads(body)


async def test_request_two_approvals_granted_then_expired_in_the_browser(scim: ScimPeer, tmp_path: Path,
                                                                         idp: str) -> None:
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
        "access": {"catalogue": {"demo": {"group:Prod Admins": {"owner": "bob@example.com", "risk": "high"}}}}})
    env = {"SCIM_TOKEN": scim.token, "JML_ADMIN_TOKEN": ADMIN_TOKEN, "JML_OIDC_SECRET": "e2e-oidc-secret-1234"}
    with start_serve(cfg, env=env) as served:
        served.wait_ready()
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 3, 30, what="three accounts in the app")
        async with chromium() as b:
            # -- Ana asks for Prod Admins for herself, for one minute
            await _sign_in(b, url, idp, "u-ana")
            assert await b.js("document.querySelector('input[name=employee_id]').value") == "E0000001"
            await b.fill("input[name=grant]", "group:Prod Admins")
            await b.fill("input[name=reason]", "incident 42")
            await b.fill("input[name=duration]", "1m")
            await b.click("#request-submit")
            flash = await b.text("#flash")
            assert flash.startswith("requested ar-"), flash
            rid = flash.split()[-1]
            await b.screenshot("access-01-requested")
            # She may not approve her own request: no button, and the form is refused.
            assert await b.js(f"!!document.getElementById('approve-{rid}')") is False
            # -- Mia, her manager in HR, approves: one of two
            await _sign_in(b, url, idp, "u-mia")
            await b.click(f"#approve-{rid}")
            assert "1 of 2 approvals" in await b.text("#flash")
            # -- Bob, the group's owner, approves: granted
            await _sign_in(b, url, idp, "u-bob")
            await b.click(f"#approve-{rid}")
            assert "approved" in await b.text("#flash")
            await b.screenshot("access-02-approved")
        # -- the daemon pushes it to the app within seconds
        wait_until(lambda: "ana@example.com" in _members(scim, "Prod Admins"), 30, what="Ana in Prod Admins")
        req = _api(url, "api/v1/access/requests")["requests"][0]
        assert req["id"] == rid and req["state"] == "active"
        assert [(a["approver"].split()[2], a["basis"]) for a in req["approvers"]] == [
            ("email=mia@example.com", "manager"), ("email=bob@example.com", "owner")]
        # -- a minute later it expires: removed by the daemon and read back from the app
        wait_until(lambda: _api(url, "api/v1/access/requests")["requests"][0]["removal_verified_at"], 200, 1,
                   what="the expired grant's removal verified")
        assert "ana@example.com" not in _members(scim, "Prod Admins")
        done = _api(url, "api/v1/access/requests")["requests"][0]
        assert done["state"] == "expired" and not done["removal_breached"]
        _, body = http(url + "api/v1/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        records = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            by_kind.setdefault(str(r.get("kind")), []).append(r)
        assert "email=ana@example.com" in by_kind["access_request"][0]["actor"]
        assert ["email=mia@example.com" in by_kind["access_vote"][0]["actor"],
                "email=bob@example.com" in by_kind["access_vote"][1]["actor"]] == [True, True]
        assert by_kind["access_expired"][0]["subject"] == "E0000001"
        assert by_kind["access_removal_verified"][0]["data"]["request"] == rid
        _, metrics = http(url + "metrics")
        assert 'jml_access_expiry_seconds_count{connector="demo"} 1.0' in metrics.decode()
        assert served.stop() == 0
