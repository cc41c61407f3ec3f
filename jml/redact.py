"""Keep secrets out of every string jml emits (logs, errors, pages, audit).

Secrets are registered when the config resolves them; a credential after Bearer/Basic/token
and the password of a URL are masked too, so a vendor echoing a header back in an error
body does not leak it.

Redaction works on structure, never on serialised JSON (issue 14: an HR title `SRE//oncall`
let a userinfo regex swallow JSON up to a later `:` and `@`, and the audit row stopped
being JSON): `redact_data` walks dicts and lists, masks the values of known secret field
names and passes every string through `redact`; `redact` masks registered secrets, a
credential after an auth scheme, and only the password of a URL that urllib parses as
`scheme://user:password@host`. None of these patterns can cross a quote, a backslash or
whitespace, so text that was JSON stays JSON.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_generation = 0  # one more with every secret registered: what was redacted before may need it again

MASK = "***"

# A credential after an auth scheme. It must look like one (a digit or one of ._~+/=- in it,
# or 20+ characters): "Basic Operations Manager" is a job title, not a header.
# After "Bearer" (RFC 6750 §2.1) any token68-like word is the credential: no job title says Bearer.
_SCHEME = re.compile(
    r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=\-]{6,})"
    r"|(\b(?:basic|token)\s+)"
    r"((?=[A-Za-z0-9._~+/=\-]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{6,}|[A-Za-z0-9._~+/=\-]{20,})"
)
# A URL with userinfo: RFC 3986 scheme, then userinfo characters (unreserved, pct-encoded,
# sub-delims, ':'), then '@'. No quote, backslash, whitespace or '/' can be part of it.
_URL_USERINFO = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[A-Za-z0-9\-._~%!$&'()*+,;=:]*@")

# Field names whose values are secrets wherever they appear in a record (compared
# case-insensitively, '-' read as '_').
SECRET_FIELDS = frozenset({
    "password", "passwd", "secret", "client_secret", "token", "access_token", "refresh_token", "id_token",
    "api_key", "apikey", "api_token", "authorization", "proxy_authorization", "cookie", "set_cookie",
    "private_key", "bearer", "x_api_key",
})


def register_secret(value: str | None) -> None:
    """Remember a secret so `redact` masks it wherever it appears."""
    global _pattern, _generation
    if not value or len(value) < 4 or value in _secrets:  # (known already: every request's token)
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))
        _redact_cached.cache_clear()  # a text that had nothing to mask may have now
        _generation += 1  # and every redacting_memo forgets what it kept


# The words _SCHEME starts with: an ASCII text without any of them has no auth credential.
_SCHEME_WORDS = ("bearer", "basic", "token")


def redact(text: str) -> str:
    """`text` with registered secrets, auth-scheme credentials and URL passwords masked."""
    if not text:
        return text
    if len(text) <= 256:
        # An audit trail repeats the same short texts (actions, connectors, group names) hundreds
        # of thousands of times: each is redacted once (the cache is emptied when a secret is registered).
        return _redact_cached(text)
    return _redact(text)


@functools.lru_cache(maxsize=65536)
def _redact_cached(text: str) -> str:
    return _redact(text)


def _redact(text: str) -> str:
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_USERINFO.sub(_mask_url, text)
    if text.isascii():  # (non-ASCII text may spell a scheme with letters that IGNORECASE folds: U+0131, U+017F, U+212A)
        lowered = text.lower()
        if not any(w in lowered for w in _SCHEME_WORDS):
            return text
    return _SCHEME.sub(_mask_scheme, text)


@functools.lru_cache(maxsize=4096)
def is_secret_field(name: str) -> bool:
    return name.casefold().replace("-", "_") in SECRET_FIELDS


def redact_data(data: Any) -> Any:
    """A copy of `data` (JSON-like: dicts, lists, scalars) with the values of secret field
    names masked and every string through `redact`. Keys are kept (they are structure)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: (_masked(v) if isinstance(k, str) and is_secret_field(k) else redact_data(v))
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


def redacting_memo() -> Callable[[Any], Any]:
    """`redact_data` of one value, for a long run of records that repeat a few texts (connector,
    action, group and rule names in a plan's 288k operations): each distinct text is redacted once
    (a dict probe after that, where `redact`'s LRU costs a call), and again after a secret is
    registered. Keep it for one run: it holds every distinct text it saw."""
    memo: dict[str, str] = {}
    seen = _generation

    def clean(value: Any) -> Any:
        nonlocal seen
        if type(value) is not str:
            return redact_data(value)
        if seen != _generation:
            memo.clear()
            seen = _generation
        out = memo.get(value)
        if out is None:
            out = memo[value] = redact(value)
        return out

    return clean


class Redacted:
    """JSON-like data its maker has already redacted as `redact_data` would (every string through
    `redact`, no secret field name among its keys): the audit trail stores `data` without walking
    it again (a 100k-person plan's operation chunks are 1.4M strings)."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def _masked(value: Any) -> Any:
    # An empty or absent secret is not one: keep None/""/False (they say "not set").
    if value is None or value == "" or value is False:
        return value
    return MASK


def _mask_scheme(m: re.Match[str]) -> str:
    return (m.group(1) or m.group(3)) + MASK


def _mask_url(m: re.Match[str]) -> str:
    """`scheme://user:password@` -> `scheme://user:***@`, judged by urllib; anything urllib
    does not read as a URL with a password is left as it was."""
    prefix = m.group(0)
    try:
        password = urlsplit(prefix + "host").password
    except ValueError:
        return prefix
    if not password:
        return prefix
    scheme, _, userinfo = prefix[:-1].partition("://")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:{MASK}@"
