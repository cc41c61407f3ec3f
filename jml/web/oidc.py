"""OpenID Connect sign-in: authorization code flow with PKCE (S256), state and nonce.

GET /login → the IdP's authorization endpoint → GET /auth/callback?code&state → the token
endpoint (with the PKCE verifier) → the ID token, whose signature and claims (iss, aud, exp,
iat, nbf, nonce, sub) are checked by joserfc against the IdP's published keys. Groups and the
person claim come from the ID token, else from the userinfo endpoint.

The provider's metadata comes from `<issuer>/.well-known/openid-configuration`; its keys are
re-read when a token names a key id we have not seen (the IdP rotated its keys).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from jml.config import OidcConfig, resolve_secret
from jml.errors import ConfigError

PENDING_TTL = 600.0  # seconds a sign-in may take at the IdP
MAX_PENDING = 2000
METADATA_TTL = 3600.0
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
MAX_DOC = 1_000_000


class OidcError(Exception):
    """The sign-in failed; the message is safe to show (never a token)."""


@dataclass
class Pending:
    state: str
    nonce: str
    verifier: str
    next: str
    expires: float


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested claims (e.g. Keycloak's `realm_access.roles`)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class OidcClient:
    cfg: OidcConfig
    redirect_uri: str
    pending: dict[str, Pending] = field(default_factory=dict)
    _meta: dict[str, Any] | None = None
    _meta_at: float = 0.0
    _keys: KeySet | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # ---- provider documents ----------------------------------------------------------
    async def _get_json(self, session: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
        async with session.get(url, timeout=HTTP_TIMEOUT, **kw) as r:
            body = await r.content.read(MAX_DOC + 1)
            if r.status != 200 or len(body) > MAX_DOC:
                raise OidcError(f"the identity provider answered {r.status} for {url.split('?')[0]}")
            try:
                return json.loads(body)
            except ValueError:
                raise OidcError(f"the identity provider sent malformed JSON from {url.split('?')[0]}") from None

    async def metadata(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with self._lock:
            if self._meta is None or time.monotonic() - self._meta_at > METADATA_TTL:
                doc = await self._get_json(session, self.cfg.issuer + "/.well-known/openid-configuration")
                if not isinstance(doc, dict) or str(doc.get("issuer", "")).rstrip("/") != self.cfg.issuer:
                    raise OidcError("the identity provider's discovery document names another issuer")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(doc.get(key), str):
                        raise OidcError(f"the identity provider's discovery document has no {key}")
                self._meta, self._meta_at, self._keys = doc, time.monotonic(), None
            return self._meta

    async def keys(self, session: aiohttp.ClientSession, *, refresh: bool = False) -> KeySet:
        meta = await self.metadata(session)
        if self._keys is None or refresh:
            doc = await self._get_json(session, meta["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(doc)
            except (JoseError, ValueError, TypeError, KeyError):
                raise OidcError("the identity provider's keys could not be read") from None
        return self._keys

    def client_secret(self) -> str | None:
        try:
            return resolve_secret(self.cfg, "client_secret", "server.oidc", required=False)
        except ConfigError:
            return None

    # ---- the flow --------------------------------------------------------------------
    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, p in self.pending.items() if p.expires <= now]:
            del self.pending[k]
        while len(self.pending) >= MAX_PENDING:
            del self.pending[min(self.pending.values(), key=lambda p: p.expires).state]

    async def begin(self, session: aiohttp.ClientSession, next_: str) -> tuple[str, Pending]:
        meta = await self.metadata(session)
        self._expire()
        p = Pending(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48), next_,
                    time.monotonic() + PENDING_TTL)
        self.pending[p.state] = p
        query = urlencode({
            "response_type": "code", "client_id": self.cfg.client_id, "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.cfg.scopes), "state": p.state, "nonce": p.nonce,
            "code_challenge": pkce_challenge(p.verifier), "code_challenge_method": "S256",
        })
        endpoint = meta["authorization_endpoint"]
        return endpoint + ("&" if "?" in endpoint else "?") + query, p

    def take(self, state: str) -> Pending | None:
        """The pending sign-in for `state`, used once."""
        self._expire()
        return self.pending.pop(state, None) if state else None

    async def finish(self, session: aiohttp.ClientSession, code: str, p: Pending) -> dict[str, Any]:
        """Exchange the code; the validated ID token's claims (plus userinfo's, when needed)."""
        meta = await self.metadata(session)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": p.verifier}
        secret = self.client_secret()
        # A confidential client authenticates with client_secret_basic (one method only, RFC 6749 2.3);
        # a public client names itself and relies on PKCE.
        auth = aiohttp.BasicAuth(quote(self.cfg.client_id, safe=""), quote(secret, safe="")) if secret else None
        if auth is None:
            form["client_id"] = self.cfg.client_id
        async with session.post(meta["token_endpoint"], data=form, auth=auth, timeout=HTTP_TIMEOUT,
                                headers={"Accept": "application/json"}) as r:
            body = await r.content.read(MAX_DOC + 1)
            if r.status != 200:
                raise OidcError(f"the identity provider refused the sign-in code ({r.status})")
        try:
            tokens = json.loads(body)
        except ValueError:
            raise OidcError("the identity provider's token answer is not JSON") from None
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not isinstance(id_token, str):
            raise OidcError("the identity provider sent no ID token")
        claims = await self._validate(session, id_token, p.nonce, meta)
        if claim(claims, self.cfg.roles_claim) is None or claim(claims, self.cfg.person_claim) is None:
            extra = await self._userinfo(session, meta, tokens.get("access_token"), str(claims["sub"]))
            claims = {**extra, **claims}
        return claims

    async def _validate(self, session: aiohttp.ClientSession, id_token: str, nonce: str,
                        meta: dict[str, Any]) -> dict[str, Any]:
        allowed = [a for a in meta.get("id_token_signing_alg_values_supported", ALGORITHMS) if a in ALGORITHMS]
        for attempt in range(2):
            keys = await self.keys(session, refresh=attempt > 0)
            try:
                token = jwt.decode(id_token, keys, algorithms=allowed or ALGORITHMS)
                break
            except JoseError as e:
                if attempt == 0 and type(e).__name__ in ("InvalidKeyIdError", "MissingKeyError"):
                    continue  # the IdP rotated its keys: read them again, once
                raise OidcError(f"the ID token is not valid ({e.error})") from None
            except (ValueError, TypeError):
                raise OidcError("the ID token is malformed") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=int(self.cfg.clock_skew.total_seconds()),
            iss={"essential": True, "value": self.cfg.issuer},
            aud={"essential": True, "value": self.cfg.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(token.claims)
        except JoseError as e:
            raise OidcError(f"the ID token is not valid ({e.error}: {getattr(e, 'claim', '')})") from None
        aud = token.claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and token.claims.get("azp") != self.cfg.client_id:
            raise OidcError("the ID token was issued to another client (azp)")
        return dict(token.claims)

    async def _userinfo(self, session: aiohttp.ClientSession, meta: dict[str, Any], access_token: Any,
                        sub: str) -> dict[str, Any]:
        url = meta.get("userinfo_endpoint")
        if not isinstance(url, str) or not isinstance(access_token, str):
            return {}
        doc = await self._get_json(session, url, headers={"Authorization": f"Bearer {access_token}"})
        if not isinstance(doc, dict) or doc.get("sub") != sub:
            raise OidcError("the identity provider's userinfo names another subject")
        return doc
