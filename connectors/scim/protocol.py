"""SCIM 2.0 requests and responses, without I/O (scim2-client style: prepare, then check).

Here: the prepared requests, filters, capabilities, the User and Group bodies of POST and PUT,
and the readers of what servers answer. PATCH bodies (RFC 7644 §3.5.2 PatchOp messages) are
built in connectors/scim/patches.py, which uses the mapping below (CORE_PATHS, Shape, ...).

Everything sent is built with scim2-models (User, EnterpriseUser, Group; PatchOp in patches.py),
so a payload that RFC 7643 would reject never leaves jml. Responses are read leniently: real
apps add their own extension schemas and non-RFC fields (Slack's profile extension, AWS's
string `status`), which the strict models refuse, so `parse_model` drops unknown top-level
keys and user/group bodies are read as plain mappings by the small readers below.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic
from scim2_models import (
    Address,
    Context,
    Email,
    EnterpriseUser,
    Group,
    Manager,
    Name,
    ServiceProviderConfig,
    User,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
FullUser = User[EnterpriseUser]
M = TypeVar("M", bound=pydantic.BaseModel)

# jml attribute key -> where it lives in a SCIM User (RFC 7643 §4.1, §4.3). `location` and
# `country` go into the work address; `employment_type` is userType.
CORE_PATHS: dict[str, str] = {
    "given_name": "name.givenName",
    "family_name": "name.familyName",
    "display_name": "displayName",
    "title": "title",
    "employment_type": "userType",
}
ENTERPRISE_KEYS: dict[str, str] = {
    "department": "department",
    "cost_center": "costCenter",
    "employee_number": "employeeNumber",
}


@dataclass(frozen=True, slots=True)
class ScimRequest:
    """One prepared request: `path` is relative to the connector's base URL."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    payload: Mapping[str, Any] | None = None
    expected: frozenset[int] = frozenset({200})
    write: bool = False  # writes take a rate-limit token first
    if_match: str | None = None  # RFC 7644 §3.14 versioning


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the ServiceProviderConfig (RFC 7643 §5) and ResourceTypes announce."""

    patch: bool = True
    etag: bool = False
    filter: bool = True
    max_results: int | None = None
    bulk: bool = False
    cursor: bool = False
    enterprise: bool = False


# ---- filters (RFC 7644 §3.4.2.2) ---------------------------------------------------

def escape_filter_value(value: str) -> str:
    """A filter string literal is JSON-like: escape the backslash first, then the quote."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def eq_filter(attribute: str, value: str) -> str:
    return f'{attribute} eq "{escape_filter_value(value)}"'


# ---- lenient parsing ----------------------------------------------------------------

def parse_model(cls: type[M], body: Any) -> M | None:
    """Validate `body` as `cls`, dropping top-level keys the model does not know."""
    if not isinstance(body, Mapping):
        return None
    data = dict(body)
    for _ in range(3):
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as e:
            extra = {str(err["loc"][0]) for err in e.errors() if err["type"] == "extra_forbidden" and err["loc"]}
            if not extra:
                return None
            data = {k: v for k, v in data.items() if k not in extra}
    return None


def capabilities(spc_body: Any, resource_types: Any, schemas: Any) -> Capabilities:
    spc = parse_model(ServiceProviderConfig, spc_body)
    enterprise = ENTERPRISE in _schema_ids(resource_types, schemas)
    if spc is None:
        return Capabilities(enterprise=enterprise)
    pag = spc.pagination
    return Capabilities(
        patch=bool(spc.patch and spc.patch.supported),
        etag=bool(spc.etag and spc.etag.supported),
        filter=not (spc.filter is not None and spc.filter.supported is False),
        max_results=spc.filter.max_results if spc.filter else None,
        bulk=bool(spc.bulk and spc.bulk.supported),
        # RFC 9865: prefer cursors only when the server says index paging is off or not the default.
        cursor=bool(pag and pag.cursor and (pag.index is False or pag.default_pagination_method == "cursor")),
        enterprise=enterprise,
    )


def _schema_ids(resource_types: Any, schemas: Any) -> set[str]:
    found: set[str] = set()
    for rt in resources_of(resource_types):
        if rt.get("name") == "User" or rt.get("id") == "User":
            found.update(str(e.get("schema")) for e in rt.get("schemaExtensions") or [] if isinstance(e, Mapping))
    found.update(str(s.get("id")) for s in resources_of(schemas))
    return found


USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
# jml key -> the top-level core User attribute that carries it (RFC 7643 §4.1).
CORE_ATTRIBUTE_OF: dict[str, str] = {"title": "title", "employment_type": "userType", "location": "addresses",
                                     "country": "addresses", "display_name": "displayName"}


def user_schema(schemas: Any) -> tuple[frozenset[str], frozenset[str]] | None:
    """(declared, required) attribute names of the core User schema as /Schemas gives
    them (RFC 7643 §7), or None when the server does not describe it."""
    for schema in resources_of(schemas):
        if schema.get("id") != USER_SCHEMA:
            continue
        declared, required = set(), set()
        for attr in schema.get("attributes") or []:
            if not isinstance(attr, Mapping) or not attr.get("name"):
                continue
            name = str(attr["name"])
            declared.add(name)
            if attr.get("required") is True:
                required.add(name)
            for sub in attr.get("subAttributes") or []:
                # A required sub-attribute of an optional attribute (emails.value) binds only
                # when the attribute is sent at all.
                if isinstance(sub, Mapping) and sub.get("name") and sub.get("required") is True \
                        and attr.get("required") is True:
                    required.add(f"{name}.{sub['name']}")
        return frozenset(declared), frozenset(required)
    return None


def resources_of(body: Any) -> list[Mapping[str, Any]]:
    """The `Resources` of a ListResponse (RFC 7644 §3.4.2); a bare list is accepted too."""
    items = body.get("Resources") if isinstance(body, Mapping) else body
    return [r for r in items or [] if isinstance(r, Mapping)] if isinstance(items, list) else []


def error_message(body: Any) -> str:
    """The vendor's own words: RFC 7644 §3.12 `detail`, Slack legacy `Errors.description`,
    GitHub/REST `message`, or the first line of a text body (an HTML error page served as
    application/scim+json is reduced to its text: never the markup)."""
    if isinstance(body, str):
        return first_line(body)
    if not isinstance(body, Mapping):
        return ""
    errors = body.get("Errors")
    if isinstance(errors, Mapping):
        return str(errors.get("description") or errors.get("code") or "")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return str(errors[0].get("description") or errors[0].get("detail") or "")
    parts = [str(body[k]) for k in ("scimType", "detail", "message") if body.get(k)]
    return ": ".join(parts)


_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]*>", re.S | re.I)


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of a plain or HTML text, unescaped and shortened."""
    if "<" in text and ">" in text:
        text = html.unescape(_TAGS.sub("\n", text))
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def scim_type(body: Any) -> str:
    """RFC 7644 §3.12 scimType of an error body ('' when absent)."""
    return str(body.get("scimType") or "") if isinstance(body, Mapping) else ""


# ---- users --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shape:
    """How this server wants a User (learnt: connectors/scim/dialect.py). `omit` holds jml
    keys not to send (refused, dropped or undeclared), plus `externalId` and `emails.type`."""

    omit: frozenset[str] = frozenset()

    @property
    def email_plain(self) -> bool:
        return "emails.type" in self.omit


def formatted_name(a: Mapping[str, str]) -> str | None:
    """name.formatted (some apps require it; RFC 7643 §4.1.1 defines it): given + family."""
    text = " ".join(v for v in (a.get("given_name"), a.get("family_name")) if v)
    return text or None


def build_user(
    username: str,
    external_id: str | None,
    active: bool,
    attributes: Mapping[str, str],
    *,
    enterprise: bool,
    manager_ref: str | None = None,
    shape: Shape = Shape(),
) -> User[Any]:
    """The full desired User. Empty attributes are left out (not sent as empty strings);
    name.formatted and displayName are derived when HR has none (apps require them)."""
    a = {k: v for k, v in attributes.items() if v and k not in shape.omit}
    name = None
    if a.get("given_name") or a.get("family_name"):
        name = Name(given_name=a.get("given_name"), family_name=a.get("family_name"), formatted=formatted_name(a))
    address = None
    if a.get("location") or a.get("country"):
        address = [Address(type="work", locality=a.get("location"), country=a.get("country"), primary=True)]
    email = None
    if a.get("email"):
        email = [Email(value=a["email"]) if shape.email_plain else Email(value=a["email"], type="work", primary=True)]
    display = a.get("display_name") or ("display_name" not in shape.omit and formatted_name(a)) or None
    cls = FullUser if enterprise else User
    user: User[Any] = cls(
        user_name=username,
        external_id=(external_id or None) if "externalId" not in shape.omit else None,
        active=active,
        name=name,
        display_name=display,
        title=a.get("title"),
        user_type=a.get("employment_type"),
        emails=email,
        addresses=address,
    )
    if enterprise:
        ext = EnterpriseUser(
            employee_number=a.get("employee_number"),
            cost_center=a.get("cost_center"),
            department=a.get("department"),
            manager=Manager(value=manager_ref) if manager_ref and "manager_id" not in shape.omit else None,
        )
        if ext.model_dump(exclude_none=True):
            user[EnterpriseUser] = ext
    return user


def creation_payload(user: User[Any]) -> dict[str, Any]:
    return user.model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def replacement_payload(current: Mapping[str, Any], desired: User[Any], removed: Iterable[str] = ()) -> dict[str, Any]:
    """PUT body (RFC 7644 §3.5.1): the read-back resource with our attributes laid over it,
    so attributes jml does not manage survive the full replace; `removed` jml keys are dropped."""
    ours = desired.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    merged = {k: v for k, v in current.items() if k not in ("id", "meta", "groups")}
    for key in removed:
        _drop(merged, key)
    for key, value in ours.items():
        if key == "schemas":
            merged[key] = sorted(set(current.get("schemas") or []) | set(value))
        elif key == ENTERPRISE and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _drop(resource: dict[str, Any], key: str) -> None:
    path = CORE_PATHS.get(key) or {"email": "emails", "location": "addresses", "country": "addresses"}.get(key)
    if path is None and key in ENTERPRISE_KEYS and isinstance(resource.get(ENTERPRISE), Mapping):
        resource[ENTERPRISE] = {k: v for k, v in resource[ENTERPRISE].items() if k != ENTERPRISE_KEYS[key]}
    elif path and "." in path:
        head, tail = path.split(".", 1)
        if isinstance(resource.get(head), Mapping):
            resource[head] = {k: v for k, v in resource[head].items() if k != tail}
    elif path:
        resource.pop(path, None)


def unwritable_keys(*, enterprise: bool) -> set[str]:
    """jml attribute keys a User cannot carry on this server (no SCIM attribute for them)."""
    return {"github_username"} | (set() if enterprise else {"manager_id", *ENTERPRISE_KEYS})


def user_attributes(body: Mapping[str, Any]) -> dict[str, str]:
    """jml attribute keys from a User resource as the server returned it."""
    out: dict[str, str] = {}
    raw_name = body.get("name")
    name: Mapping[str, Any] = raw_name if isinstance(raw_name, Mapping) else {}
    _set(out, "given_name", name.get("givenName"))
    _set(out, "family_name", name.get("familyName"))
    _set(out, "display_name", body.get("displayName"))
    _set(out, "title", body.get("title"))
    _set(out, "employment_type", body.get("userType"))
    emails = [e for e in body.get("emails") or [] if isinstance(e, Mapping)]
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    _set(out, "email", primary.get("value") if primary else None)
    addresses = [a for a in body.get("addresses") or [] if isinstance(a, Mapping)]
    work = next((a for a in addresses if a.get("type") == "work"), addresses[0] if addresses else None)
    if work:
        _set(out, "location", work.get("locality"))
        _set(out, "country", work.get("country"))
    ext = body.get(ENTERPRISE)
    if isinstance(ext, Mapping):
        for key, attr in ENTERPRISE_KEYS.items():
            _set(out, key, ext.get(attr))
    return out


def _set(out: dict[str, str], key: str, value: Any) -> None:
    if value not in (None, ""):
        out[key] = str(value)


def is_active(body: Mapping[str, Any]) -> bool:
    # RFC 7643 §4.1.1 leaves `active` optional; a server that omits it has no disabled state.
    value = body.get("active", True)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def mismatches(body: Mapping[str, Any], wanted: Mapping[str, str], *, enterprise: bool) -> list[str]:
    """The jml keys of `wanted` that the read-back resource does not carry. Keys the
    mapping cannot express on this server (enterprise off, manager, github) are skipped."""
    have = user_attributes(body)
    skip = {"manager_id", "github_username"} | (set() if enterprise else set(ENTERPRISE_KEYS))
    return [k for k, v in wanted.items() if k not in skip and (have.get(k) or "") != (v or "")]


# ---- groups -------------------------------------------------------------------------

def group_payload(display_name: str) -> dict[str, Any]:
    return Group(display_name=display_name).model_dump(scim_ctx=Context.RESOURCE_CREATION_REQUEST)


def member_values(member_ids: Iterable[str], ref_base: str | None = None) -> list[dict[str, str]]:
    """Member objects; with `ref_base`, each carries the `$ref` some servers require."""
    if ref_base is None:
        return [{"value": m} for m in member_ids]
    return [{"value": m, "$ref": f"{ref_base}{m}"} for m in member_ids]


def member_ids(group: Mapping[str, Any]) -> set[str]:
    return {str(m["value"]) for m in group.get("members") or [] if isinstance(m, Mapping) and m.get("value")}


def group_name_of(grant: str) -> str:
    """`group:NAME` or a bare NAME (type scim) -> NAME."""
    return grant.removeprefix("group:")


def group_replacement(group: Mapping[str, Any], members: Iterable[str], ref_base: str | None = None) -> dict[str, Any]:
    """PUT body for a group when PATCH is unavailable: same group, this member list."""
    g = Group(display_name=str(group.get("displayName") or ""), external_id=group.get("externalId"),
              members=member_values(sorted(members), ref_base))
    return g.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)


# ---- requests (RFC 7644 §3.2 endpoints, §3.4.2 query, §3.5 modify, §3.6 delete) -------

def get(path: str, **params: str) -> ScimRequest:
    return ScimRequest("GET", path, params=params)


def search(endpoint: str, filter_: str | None = None, *, count: int | None = None, start_index: int | None = None,
           cursor: str | None = None, attributes: str | None = None,
           excluded: str | None = None) -> ScimRequest:
    params: dict[str, str] = {}
    if filter_:
        params["filter"] = filter_  # aiohttp URL-encodes the whole value
    if count is not None:
        params["count"] = str(count)
    if start_index is not None:
        params["startIndex"] = str(start_index)
    if cursor is not None:
        params["cursor"] = cursor  # RFC 9865 §2; an empty cursor asks for the first page
    if attributes:
        params["attributes"] = attributes
    if excluded:
        params["excludedAttributes"] = excluded
    return ScimRequest("GET", endpoint, params=params)


def post(endpoint: str, payload: Mapping[str, Any]) -> ScimRequest:
    return ScimRequest("POST", endpoint, payload=payload, expected=frozenset({200, 201}), write=True)


def put(path: str, payload: Mapping[str, Any], if_match: str | None = None) -> ScimRequest:
    return ScimRequest("PUT", path, payload=payload, expected=frozenset({200, 204}), write=True, if_match=if_match)


def patch(path: str, payload: Mapping[str, Any], if_match: str | None = None, *,
          attributes: str | None = None) -> ScimRequest:
    # 200 with the resource or 204 without it (RFC 7644 §3.5.2); with `attributes` the
    # server MUST answer 200 with the resource (those attributes, and `id`).
    return ScimRequest("PATCH", path, params={"attributes": attributes} if attributes else {}, payload=payload,
                       expected=frozenset({200, 204}), write=True, if_match=if_match)


def delete(path: str) -> ScimRequest:
    return ScimRequest("DELETE", path, expected=frozenset({200, 204}), write=True)
