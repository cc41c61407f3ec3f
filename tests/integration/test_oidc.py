"""OIDC sign-in against a real OpenID provider on loopback (PyPI `oidc-provider-mock`: Authlib's
authorization server with discovery, JWKS, signed ID tokens and userinfo).

The browser is aiohttp with a cookie jar: GET /login → the provider's authorize form (the person
picks their subject) → /auth/callback → a session whose roles come from the person's groups.
Four-eyes is exercised with people: the one whose offboard was held cannot approve it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import oidc_provider_mock  # in the dev extra
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jml import config as config_mod
from jml.context import ServiceContext
from jml.outbox_workers import build_engine
from jml.runtime import Runtime
from jml.web import add_routes
from jml.web.oidc import OidcClient, OidcError, Pending
from tests.integration.test_web import NOW, TOKEN, _seed

PEOPLE = {
    "u-ana": {"email": "ana.smith@acme.example", "name": "Ana Smith", "groups": ["hr-team", "security"]},
    "u-bob": {"email": "bob.jones@acme.example", "name": "Bob Jones", "groups": ["security"]},
    "u-cy": {"email": "cy@acme.example", "name": "Cy Approver", "groups": ["security", "auditors"]},
    "u-eve": {"email": "eve@acme.example", "name": "Eve Nobody", "groups": ["marketing"]},
    "u-hank": {"email": "hank@acme.example", "name": "Hank HR", "groups": ["hr-team", "security"]},
    "u-ops": {"email": "ops@acme.example", "name": "Op Erator", "groups": ["it-ops"]},
}


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread(port=0, require_nonce=True) as server:
        base = f"http://localhost:{server.server_port}"
        import urllib.request

        for sub, claims in PEOPLE.items():
            req = urllib.request.Request(f"{base}/users/{sub}", data=json.dumps(claims).encode(),
                                         method="PUT", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 204
        yield base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Env:
    def __init__(self, base: str, rt: Runtime) -> None:
        self.base = base
        self.rt = rt


@pytest.fixture
async def env(tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch,
              request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    monkeypatch.setenv("JML_TEST_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JML_TEST_SCIM", "scim-token-not-used")
    monkeypatch.setenv("JML_TEST_OIDC_SECRET", "oidc-client-secret-value")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    guard = getattr(request, "param", {})
    cfg = config_mod.from_dict({
        "state": {"url": f"sqlite:///{tmp_path / 'jml.db'}"},
        "server": {"admin_token_env": "JML_TEST_ADMIN_TOKEN", "public_url": base,
                   "oidc": {"issuer": provider, "client_id": "jml", "client_secret_env": "JML_TEST_OIDC_SECRET",
                            "scopes": ["openid", "email", "profile"],
                            "roles": {"hr-team": "hr", "security": ["approver"], "auditors": "auditor",
                                      "it-ops": "operator"}}},
        "guard": guard,
        "policy": {"rules": [{"name": "everyone", "when": {"status": ["Active", "Leave"]},
                              "grant": {"demo": ["All Staff"]}}]},
        "connectors": {"demo": {"type": "scim", "url": "http://127.0.0.1:9/v2/", "token_env": "JML_TEST_SCIM"}},
    }, tmp_path)
    rt = Runtime(cfg, clock=lambda: NOW)
    _seed(rt)
    app = web.Application()
    add_routes(app, ServiceContext(rt=rt, engine=build_engine(rt), started_at=NOW))
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield Env(base, rt)
    finally:
        await server.close()
        rt.store.close()


async def sign_in(env: Env, sub: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientResponse]:
    """The whole round trip; returns the browser and the callback's answer."""
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await browser.get(env.base + "/login?next=/people", allow_redirects=False)
    assert r.status == 303, await r.text()
    authorize = r.headers["Location"]
    q = parse_qs(urlsplit(authorize).query)
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"][0] and q["nonce"][0] and q["state"][0]
    assert q["redirect_uri"] == [env.base + "/auth/callback"]
    r = await browser.get(authorize)
    assert r.status == 200  # the provider's sign-in form
    r = await browser.post(authorize, data={"sub": sub}, allow_redirects=False)
    assert r.status == 302, await r.text()
    back = r.headers["Location"]
    assert back.startswith(env.base + "/auth/callback?")
    return browser, await browser.get(back, allow_redirects=False)


async def _csrf(browser: aiohttp.ClientSession, env: Env) -> str:
    page = await (await browser.get(env.base + "/")).text()
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert m
    return m.group(1)


async def test_sign_in_maps_groups_to_roles_and_names_the_person(env: Env) -> None:
    browser, r = await sign_in(env, "u-ana")
    async with browser:
        assert r.status == 200
        assert 'http-equiv="refresh" content="0;url=/people"' in await r.text()
        session_cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("jml_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie
        page = await browser.get(env.base + "/people?q=ana")
        assert page.status == 200
        text = await page.text()
        assert "Signed in as Ana Smith &lt;ana.smith@acme.example&gt; (approver, hr)" in text
        assert (await browser.get(env.base + "/api/v1/audit")).status == 403  # not an auditor
        records = list(env.rt.audit.records())
        sign = [rec for rec in records if rec["kind"] == "sign_in"]
        assert sign[0]["actor"] == "person sub=u-ana email=ana.smith@acme.example role=approver,hr addr=127.0.0.1"
        assert sign[0]["data"]["person"] == "E100"  # linked to the HR row by work_email
        # Sign out ends the session.
        csrf = await _csrf(browser, env)
        r = await browser.post(env.base + "/logout", data={"csrf_token": csrf}, allow_redirects=False)
        assert r.status == 303
        assert (await browser.get(env.base + "/", allow_redirects=False)).status == 303


async def test_person_whose_groups_map_to_no_role_gets_nothing(env: Env) -> None:
    browser, r = await sign_in(env, "u-eve")
    async with browser:
        assert r.status == 403
        text = await r.text()
        assert "none of your groups gives you a role" in text and "<form" not in text
        assert 'href="/people"' not in text  # a plain page: no navigation
        assert not [c for c in r.headers.getall("Set-Cookie", []) if c.startswith("jml_session=")]
        assert (await browser.get(env.base + "/", allow_redirects=False)).status == 303
        assert (await browser.get(env.base + "/api/v1/status")).status == 401
    assert any(rec["kind"] == "sign_in_refused" for rec in env.rt.audit.records())


async def test_callback_refuses_a_forged_or_replayed_state(env: Env) -> None:
    browser, r = await sign_in(env, "u-bob")
    async with browser:
        assert r.status == 200
        # Replaying the same callback (code and state used once) fails.
        again = await browser.get(str(r.url), allow_redirects=False)
        assert again.status == 400
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        r = await other.get(env.base + "/auth/callback?code=x&state=forged", allow_redirects=False)
        assert r.status == 400


async def test_id_token_checks_nonce_and_signature(env: Env, provider: str) -> None:
    cfg = env.rt.config.server.oidc
    assert cfg is not None
    client = OidcClient(cfg, env.base + "/auth/callback")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        url, pending = await client.begin(http, "/")
        r = await http.post(url, data={"sub": "u-bob"}, allow_redirects=False)
        code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        wrong = Pending(pending.state, "another-nonce", pending.verifier, "/", pending.expires)
        with pytest.raises(OidcError, match="nonce"):
            await client.finish(http, code, wrong)
        url, pending = await client.begin(http, "/")
        r = await http.post(url, data={"sub": "u-bob"}, allow_redirects=False)
        code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        claims = await client.finish(http, code, pending)
        assert claims["sub"] == "u-bob" and claims["groups"] == ["security"]
        meta = await client.metadata(http)
        # A token whose signature does not match the provider's keys is refused.
        async with http.post(meta["token_endpoint"], data={
                "grant_type": "authorization_code", "code": "nope", "client_id": "jml"}) as bad:
            assert bad.status >= 400
        good = await _fresh_id_token(client, http)
        head, body, sig = good.split(".")
        forged = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
        with pytest.raises(OidcError):
            await client._validate(http, forged, "n", meta)


async def _fresh_id_token(client: OidcClient, http: aiohttp.ClientSession) -> str:
    url, pending = await client.begin(http, "/")
    r = await http.post(url, data={"sub": "u-bob"}, allow_redirects=False)
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    meta = await client.metadata(http)
    async with http.post(meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri,
            "code_verifier": pending.verifier}, auth=aiohttp.BasicAuth("jml", "oidc-client-secret-value")) as tok:
        doc: dict[str, Any] = await tok.json()
    token: str = doc["id_token"]
    return token


@pytest.mark.parametrize("env", [{"max_event_leavers_per_hour": 0, "approvals_required": 2}], indirect=True)
async def test_four_eyes_with_people(env: Env) -> None:
    """Hank (hr + approver) offboards Ana; the guard holds it; Hank cannot approve his own request;
    Bob's approval is one of two; the break-glass token's is the second."""
    ana, r = await sign_in(env, "u-hank")
    async with ana:
        assert r.status == 200
        csrf = await _csrf(ana, env)
        r = await ana.post(env.base + "/api/v1/offboard", json={"employee_id": "E100", "reason": "layoff"},
                           headers={"X-CSRF-Token": csrf})
        assert r.status == 202, await r.text()
        doc = await r.json()
        assert doc["held"] is True
        held = [p for p in env.rt.outbox.plans(["held"]) if p.origin == "offboard"]
        assert len(held) == 1
        pid = held[0].id
        r = await ana.post(env.base + f"/api/v1/plans/{pid}/approve", headers={"X-CSRF-Token": csrf})
        assert r.status == 409 and "requested by you" in (await r.json())["error"]
    bob, r = await sign_in(env, "u-bob")
    async with bob:
        csrf = await _csrf(bob, env)
        r = await bob.post(env.base + f"/api/v1/plans/{pid}/approve", headers={"X-CSRF-Token": csrf})
        assert r.status == 202 and (await r.json())["state"] == "waiting"
        r = await bob.post(env.base + f"/api/v1/plans/{pid}/approve", headers={"X-CSRF-Token": csrf})
        assert r.status == 409  # Bob does not count twice
        page = await (await bob.get(env.base + "/")).text()
        assert "Approvals 1 of 2" in page and "requested by person sub=u-hank" in page
    async with aiohttp.ClientSession() as admin:
        r = await admin.post(env.base + f"/api/v1/plans/{pid}/approve",
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200 and (await r.json())["state"] == "queued"
    info = env.rt.outbox.plan(pid)
    assert info is not None and info.state == "queued"
    recs = list(env.rt.audit.records())
    offboard = [x for x in recs if x["kind"] == "offboard"]
    assert offboard[0]["actor"] == "person sub=u-hank email=hank@acme.example role=approver,hr addr=127.0.0.1"
    votes = [x for x in recs if x["kind"] == "approval_vote"]
    assert votes[0]["actor"].startswith("person sub=u-bob email=bob.jones@acme.example")
    final = next(x for x in recs if x["kind"] == "approval")
    assert final["actor"].startswith("break-glass via=api")
    assert final["data"]["votes"] == 2 and len(final["data"]["approvers"]) == 2
    # Who approved is readable in the trail (not mistaken for a credential and redacted).
    bob, admin = sorted(final["data"]["approvers"], key=lambda a: not a.startswith("person"))
    assert bob == "person sub=u-bob email=bob.jones@acme.example person=E200 role=approver addr=127.0.0.1"
    assert admin == "break-glass via=api role=admin addr=127.0.0.1"
    assert final["data"]["requested_by"].startswith("person sub=u-hank")


def test_claims_by_dotted_path() -> None:
    from jml.web.oidc import claim, pkce_challenge

    claims = {"groups": ["a"], "realm_access": {"roles": ["jml-admins"]}, "x.y": 1}
    assert claim(claims, "groups") == ["a"]
    assert claim(claims, "realm_access.roles") == ["jml-admins"]
    assert claim(claims, "x.y") == 1 and claim(claims, "nope.no") is None
    # RFC 7636 appendix B's example verifier and challenge.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
