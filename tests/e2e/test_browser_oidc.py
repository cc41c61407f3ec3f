"""Single sign-on in headless Chromium: `jml serve` as a process, a real OpenID provider on loopback
(PyPI `oidc-provider-mock`), the whole authorization-code + PKCE round trip in the browser.

An HR person signs in, is named on every page, finds someone; their role shows no approve button
and the API refuses them an approval; they sign out. A person whose groups map to no role gets the
plain 403 page and no session. Screenshots land in test-artifacts/browser/.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import http, person, scim_users, start_serve, wait_until, write_config, write_export
from tests.e2e.test_browser import ADMIN_TOKEN, CHROMIUM, chromium
from tests.peers import ScimPeer, free_port

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (run tests/e2e/ensure_chromium.sh)")

USERS = {
    "u-hana": {"email": "hana@example.com", "name": "Hana HR", "groups": ["hr-team"]},
    "u-eve": {"email": "eve@example.com", "name": "Eve Nobody", "groups": ["marketing"]},
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


async def test_single_sign_on_in_the_browser(scim: ScimPeer, tmp_path: Path, idp: str) -> None:
    write_export(tmp_path / "exports", "export-1.csv", [person(i) for i in range(1, 5)])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cfg = write_config(tmp_path, scim_url=scim.url, port=port, extra={"server": {
        "listen": f"127.0.0.1:{port}", "shutdown_grace": "3s", "admin_token_env": "JML_ADMIN_TOKEN",
        "public_url": url.rstrip("/"),
        "oidc": {"issuer": idp, "client_id": "jml", "client_secret_env": "JML_OIDC_SECRET",
                 "scopes": ["openid", "email", "profile"], "roles": {"hr-team": "hr", "security": "approver"}}}})
    env = {"SCIM_TOKEN": scim.token, "JML_ADMIN_TOKEN": ADMIN_TOKEN, "JML_OIDC_SECRET": "e2e-oidc-secret-1234"}
    with start_serve(cfg, env=env) as served:
        served.wait_ready()
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 4, 30, what="four accounts in the app")
        async with chromium() as b:
            # -- jml sends the browser to the identity provider
            await b.goto(url + "people")
            assert (await b.js("location.origin")) == idp
            assert "code_challenge_method=S256" in await b.js("location.search")
            await b.screenshot("oidc-01-idp")
            await b.fill("input[name=sub]", "u-hana")
            await b.click("form button[type=submit]")
            # -- back at jml, signed in, on the page first asked for
            await b.wait_for("location.pathname === '/people' && !!document.getElementById('signed-in-as')", 20,
                             "the people page after sign-in")
            who = await b.text("#signed-in-as")
            assert who == "Signed in as Hana HR <hana@example.com> (hr)", who
            assert await b.js("document.cookie") == ""  # HttpOnly
            await b.fill("input[name=q]", "first3")
            await b.click("form.search button")
            assert "user3@example.com" in await b.text("table.results")
            await b.screenshot("oidc-02-signed-in")
            # -- the status page names them too; an hr person sees no approve button
            await b.goto(url)
            assert "Signed in as Hana HR" in await b.text("#signed-in-as")
            assert await b.js("document.querySelectorAll('form.approve').length") == 0
            # -- the session carries the role into the API (the page's CSRF token, same origin)
            status = await b.js("fetch('/api/v1/status').then(r => r.status)")
            assert status == 200
            refused = await b.js(
                "fetch('/api/v1/plans/nope/approve', {method: 'POST', headers: {'X-CSRF-Token': "
                "document.querySelector('meta[name=csrf-token]').content}}).then(r => r.status)")
            assert refused == 403
            # -- sign out
            await b.click("form.logout button")
            assert (await b.path()).startswith("/login")
            assert "You are signed out" in await b.text()
            code, _ = http(url + "api/v1/status")
            assert code == 401

            # -- a person the IdP knows, whose groups give no role: a plain 403, no session
            await b.goto(url)
            assert (await b.js("location.origin")) == idp
            await b.fill("input[name=sub]", "u-eve")
            await b.click("form button[type=submit]")
            await b.wait_for("location.pathname === '/auth/callback'", 20, "the callback page")
            text = await b.text()
            assert "No access" in text and "none of your groups gives you a role" in text
            await b.screenshot("oidc-03-no-role")
            await b.goto(url + "api/v1/status")
            assert "sign in" in await b.text()  # 401: no session was opened
        code, body = http(url + "api/v1/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert code == 200
        kinds = [json.loads(line).get("kind") for line in body.decode().splitlines() if line.strip()]
        assert "sign_in" in kinds and "sign_in_refused" in kinds
        assert "e2e-oidc-secret-1234" not in served.logs()
        assert served.stop() == 0
