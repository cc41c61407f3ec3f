"""Reading a SCIM server's answers for what they say about its dialect (pure; no I/O).

Status codes alone lie in both directions: a duplicate userName comes back as 500 with
"unique constraint" in the text, a PATCH path the server never implemented as 400
`invalidPath`, 400 `noTarget`, 400 `mutability` or 501. These functions turn an answer into
one of jml's decisions: adopt, write by PUT instead, stop sending an attribute.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from jml.errors import ConnectorError

# RFC 7644 §3.12 scimTypes (and 501) with which servers refuse a PATCH form or path they
# do not implement, as opposed to a value they do not like.
PATCH_REFUSED_TYPES = ("invalidPath", "noTarget", "mutability", "invalidSyntax")
PATCH_REFUSED = frozenset({501})

_CONFLICT = re.compile(r"\b(unique|uniqueness|already (exists|taken|in use)|duplicate|exists|taken|conflict)",
                       re.I)

# jml attribute keys that may be dropped for a server that will not keep them. Never these:
# userName, active, group membership and delete (a server that cannot do those cannot be
# provisioned: a dead letter, an SLA breach and an alert).
OPTIONAL_KEYS = frozenset({
    "title", "employment_type", "location", "country", "department", "cost_center", "employee_number",
    "manager_id", "display_name", "given_name", "family_name", "email", "externalId", "emails.type",
})

# Words in an error text -> the jml keys they name. Longest first, so `emails.type` wins
# over `emails`, and `name.givenName` over `name`.
_NAMES: list[tuple[str, tuple[str, ...]]] = sorted([
    ("title", ("title",)),
    ("userType", ("employment_type",)),
    ("addresses", ("location", "country")),
    ("locality", ("location",)),
    ("country", ("country",)),
    ("emails.type", ("emails.type",)),
    ("emails.primary", ("emails.type",)),
    ("primary", ("emails.type",)),
    ("externalId", ("externalId",)),
    ("department", ("department",)),
    ("costCenter", ("cost_center",)),
    ("employeeNumber", ("employee_number",)),
    ("manager", ("manager_id",)),
    ("enterprise:2.0:User", ("department", "cost_center", "employee_number", "manager_id")),
    ("displayName", ("display_name",)),
    ("name.givenName", ("given_name",)),
    ("givenName", ("given_name",)),
    ("name.familyName", ("family_name",)),
    ("familyName", ("family_name",)),
], key=lambda pair: -len(pair[0]))


def is_conflict(e: ConnectorError) -> bool:
    """A create refused because the account exists (409, or 400/500 that says so)."""
    if e.status == 409:
        return True
    return e.status in (400, 500) and bool(_CONFLICT.search(e.vendor_message or ""))


def patch_refused(e: ConnectorError) -> bool:
    """The server does not implement this PATCH (form or path), as opposed to a bad value."""
    if e.status in PATCH_REFUSED:
        return True
    text = e.vendor_message or ""
    return e.status == 400 and (any(t in text for t in PATCH_REFUSED_TYPES) or "not implemented" in text.lower()
                                or "not supported" in text.lower())


def refused_keys(message: str, sent: Iterable[str]) -> list[str]:
    """The optional jml keys among `sent` that an error text names ('' → none)."""
    sent = set(sent)
    found: list[str] = []
    rest = message
    for word, keys in _NAMES:
        if re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", rest):
            found += [k for k in keys if k in sent and k not in found]
            rest = rest.replace(word, " ")
    return found


def refused_optional(message: str, sent: Iterable[str]) -> list[str]:
    return [k for k in refused_keys(message, sent) if k in OPTIONAL_KEYS]
