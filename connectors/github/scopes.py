"""`jml check` for GitHub: reach the API with the token and say, in plain words, what is missing.

A classic personal access token lists its scopes in the `X-OAuth-Scopes` response header
(docs.github.com "Scopes for OAuth apps"). Org mode needs `admin:org` (inviting and
removing members); EMU mode needs `scim:enterprise` (the setup user's token). Fine-grained
tokens and GitHub App tokens carry no such header: we say so and test access instead.
"""

from __future__ import annotations

from urllib.parse import quote

from connectors.base import CheckFinding
from connectors.github._http import GithubHttp, vendor_message
from jml.errors import ConnectorError

# A scope implies the ones listed under it (only what matters here).
_IMPLIES = {"admin:org": {"admin:org", "write:org", "read:org"}}


def granted(header: str) -> set[str]:
    scopes: set[str] = set()
    for scope in (s.strip() for s in header.split(",")):
        if scope:
            scopes |= _IMPLIES.get(scope, {scope})
    return scopes


async def check_scopes(http: GithubHttp, *, required: str, org: str | None = None,
                       enterprise: str | None = None) -> list[CheckFinding]:
    findings: list[CheckFinding] = []
    try:
        me = await http.request("GET", "/user", ok=frozenset({401, 403, 404}), what="read the token's user")
    except ConnectorError as exc:
        return [CheckFinding(False, f"cannot reach GitHub at {http.base}: {exc}")]
    if me.status == 401:
        return [CheckFinding(False, f"GitHub rejected the token (bad credentials): {vendor_message(me.body)}")]
    login = str((me.body or {}).get("login", "")) if me.status == 200 else ""
    findings.append(CheckFinding(True, f"reached {http.base} as {login or 'an app installation'}"))
    header = me.headers.get("X-OAuth-Scopes")
    if header is None:
        findings.append(CheckFinding(True, "the token is not a classic personal access token, so its scopes "
                                     "cannot be listed; checking access directly"))
    elif required not in granted(header):
        has = ", ".join(sorted(s.strip() for s in header.split(",") if s.strip())) or "no scopes"
        findings.append(CheckFinding(False, f"the token lacks the scope {required} (it has: {has})"))
    else:
        findings.append(CheckFinding(True, f"the token has the scope {required}"))
    if org is not None:
        findings.append(await _org_role(http, org, login))
    if enterprise is not None:
        findings.append(await _scim_reachable(http, enterprise))
    return findings


async def _org_role(http: GithubHttp, org: str, login: str) -> CheckFinding:
    if not login:
        return CheckFinding(True, f"cannot tell whether the token may manage members of {org}")
    try:
        reply = await http.request("GET", f"/orgs/{quote(org, safe='')}/memberships/{quote(login, safe='')}",
                                   ok=frozenset({403, 404}), what="read own org membership")
    except ConnectorError as exc:
        return CheckFinding(False, f"cannot read membership of {login} in {org}: {exc}")
    if reply.status != 200:
        return CheckFinding(False, f"{login} is not a member of the organization {org} "
                            f"(or the org does not exist): {vendor_message(reply.body)}")
    role = (reply.body or {}).get("role")
    if role != "admin":
        return CheckFinding(False, f"{login} is a {role} of {org}, not an owner: only owners can invite and "
                            "remove members")
    return CheckFinding(True, f"{login} is an owner of {org}")


async def _scim_reachable(http: GithubHttp, enterprise: str) -> CheckFinding:
    path = f"/scim/v2/enterprises/{quote(enterprise, safe='')}/Users"
    try:
        reply = await http.request("GET", path, params={"count": "1"}, ok=frozenset({401, 403, 404}),
                                   what="list SCIM users")
    except ConnectorError as exc:
        return CheckFinding(False, f"cannot reach the enterprise SCIM API: {exc}")
    if reply.status == 200:
        return CheckFinding(True, f"reached {http.base}{path}")
    return CheckFinding(False, f"the enterprise SCIM API refused the token (HTTP {reply.status}): "
                        f"{vendor_message(reply.body)} — it needs the setup user's classic token with scim:enterprise")
