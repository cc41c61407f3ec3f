"""The AWS IAM Identity Center SCIM dialect, as pure functions (no I/O).

Sources: IAM Identity Center SCIM implementation developer guide (CreateUser, PutUser,
ListUsers, ListGroups, PatchGroup, "Limitations from SCIM specification").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.scim.protocol import error_message
from connectors.scim.transport import default_classify
from jml.errors import ConnectorError, PermanentError

# CreateUser / PutUser reject a user without these (ValidationException, HTTP 400).
REQUIRED_NAME_KEYS = ("given_name", "family_name", "display_name")


def with_required_names(attributes: Mapping[str, str], username: str) -> dict[str, str]:
    """AWS needs name.givenName, name.familyName and displayName. HR data may lack them: fill
    from the display name's words, then the username, so a create is never refused for it."""
    out = dict(attributes)
    words = (out.get("display_name") or "").split()
    given = out.get("given_name") or (words[0] if words else "") or username
    family = out.get("family_name") or (" ".join(words[1:]) if len(words) > 1 else "") or username
    out["given_name"], out["family_name"] = given, family
    out["display_name"] = out.get("display_name") or f"{given} {family}".strip()
    return out


def aws_error_message(body: Any) -> str:
    """AWS bodies carry `detail` and a string `status`, sometimes `schema` instead of
    `schemas`, never `scimType`: the generic reader already takes `detail`."""
    message = error_message(body)
    if not message and isinstance(body, Mapping):
        message = str(body.get("message") or body.get("__type") or "")
    return message


def classify(connector: str, status: int, body: Any, retry_after: float | None) -> ConnectorError:
    """Branch on the HTTP status only: the AWS body names no exception type (AWS SCIM error responses)."""
    message = aws_error_message(body)
    if status == 401:
        return PermanentError(
            connector, "the SCIM access token was rejected: check token_env / token_file (Identity Center "
            "SCIM tokens expire one year after creation; rotate it in the Identity Center console)",
            status=status, vendor_message=message)
    if status == 403:
        return PermanentError(connector, "the SCIM access token may not do this (AccessDeniedException)",
                              status=status, vendor_message=message)
    if status == 400:
        return PermanentError(connector, "Identity Center refused the request (ValidationException)",
                              status=status, vendor_message=message)
    return default_classify(connector, status, {"detail": message} if message else body, retry_after)
