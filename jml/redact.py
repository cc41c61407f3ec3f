"""Keep secrets out of every string jml emits (logs, errors, pages, audit).

Secrets are registered when the config resolves them; anything that looks like a
credential in an Authorization header or a URL's userinfo is masked too, so a vendor
echoing a header back in an error body does not leak it.
"""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

MASK = "***"

# Bearer/Basic/token credentials and user:password@ in URLs.
_GENERIC = re.compile(
    r"(?i)(\b(?:bearer|basic|token)\s+)[A-Za-z0-9._~+/=\-]{6,}|(//[^/\s:@]+:)[^@\s/]+(@)"
)


def register_secret(value: str | None) -> None:
    """Remember a secret so `redact` masks it wherever it appears."""
    global _pattern
    if not value or len(value) < 4:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _GENERIC.sub(_mask_generic, text)


def _mask_generic(m: re.Match[str]) -> str:
    if m.group(1):
        return m.group(1) + MASK
    return f"{m.group(2)}{MASK}{m.group(3)}"
