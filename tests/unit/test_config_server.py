"""The server section's sign-in keys and guard.approvals_required: validated, with the key named."""

from __future__ import annotations

from typing import Any

import pytest

from jml import config as config_mod
from jml.errors import ConfigError

OIDC = {"issuer": "https://acme.okta.com/", "client_id": "jml", "client_secret_env": "JML_OIDC_SECRET",
        "roles": {"hr-team": "hr", "security": ["approver", "auditor"], "jml-admins": "admin"}}


def _load(server: dict[str, Any], **extra: Any) -> config_mod.Config:
    return config_mod.from_dict({"server": server, **extra})


def test_oidc_config_and_role_mapping() -> None:
    cfg = _load({"public_url": "https://jml.acme.example/", "trusted_proxies": ["10.0.0.0/8", "::1"],
                 "oidc": OIDC})
    oidc = cfg.server.oidc
    assert oidc is not None and oidc.issuer == "https://acme.okta.com"  # trailing slash dropped
    assert cfg.server.public_url == "https://jml.acme.example"
    assert oidc.scopes == ["openid", "email", "profile", "groups"] and oidc.roles_claim == "groups"
    assert oidc.person_claim == "email"
    assert oidc.roles_for(["security", "hr-team", "unknown"]) == {"approver", "auditor", "hr"}
    assert oidc.roles_for(["marketing"]) == frozenset()
    assert oidc.roles_for("jml-admins") == {"admin"}
    assert oidc.roles_for(None) == frozenset() and oidc.roles_for({"hr-team": 1}) == frozenset()
    assert cfg.guard.approvals_required == 1


@pytest.mark.parametrize(("server", "extra", "key", "words"), [
    ({"oidc": OIDC}, {}, "server", "public_url"),
    ({"public_url": "https://j", "oidc": {**OIDC, "roles": {"x": "root"}}}, {}, "server.oidc.roles", "unknown role"),
    ({"public_url": "https://j", "oidc": {**OIDC, "bogus": 1}}, {}, "server.oidc.bogus", "unknown key"),
    ({"public_url": "https://j", "oidc": {**OIDC, "issuer": "acme.okta.com"}}, {}, "server.oidc.issuer", "https"),
    ({"trusted_proxies": ["10.0.0.0/33"]}, {}, "server.trusted_proxies", "not an address"),
    ({"public_url": "jml.acme.example"}, {}, "server.public_url", "http"),
    ({"max_connections": 0}, {}, "server.max_connections", ""),
    ({}, {"guard": {"approvals_required": 0}}, "guard.approvals_required", ""),
])
def test_bad_server_keys_are_named(server: dict[str, Any], extra: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(server, **extra)
    assert key in str(e.value) and words in str(e.value)
