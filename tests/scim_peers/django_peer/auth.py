"""The access check django-scim2-server calls (setting SCIM2_SERVER_AUTH_CHECK): a static bearer token."""

from __future__ import annotations

import hmac
import os

from django.http import HttpRequest


def bearer_token(request: HttpRequest) -> bool:
    expected = os.environ.get("JML_SCIM_PEER_TOKEN", "")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), expected)
