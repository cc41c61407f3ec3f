"""scim2-server dressed as the AWS IAM Identity Center SCIM endpoint.

Every rule below is a documented limit of the IAM Identity Center SCIM implementation
(developer guide: "Limitations from SCIM specification", CreateUser, PutUser, ListUsers,
ListGroups, PatchGroup; https://docs.aws.amazon.com/singlesignon/latest/developerguide/):

* URL shape `https://scim.<region>.amazonaws.com/<tenant>/scim/v2/`: served under `scim_url`.
* Filters: `eq` only, optionally joined with `and`; Users by (userName) or (externalId) [or id];
  Groups by (displayName), (externalId), (members.value) or (id and members). Anything else: 400.
  A members filter naming a user that does not exist: 404 (ListGroups "Errors").
* Paging: `startIndex` (and, on Users, `attributes` / `excludedAttributes`) is not supported;
  `count` 1..100 (default 100); `cursor` (empty on the first request) switches the answer to
  `itemsPerPage` + `nextCursor`, without totalResults.
* Users: one email and it must be primary; one phone number; one address; `groups` cannot be
  set; name.givenName, name.familyName and displayName are required on create and replace.
* Groups: GetGroup and ListGroups return an empty `members` list; PutGroup is not an operation;
  PatchGroup takes only displayName / members / externalId, at most 100 membership changes per
  request, and neither "replace" of members nor "remove all members" (remove, path `members`,
  no value); a second group with the same displayName is a 409.
* Errors carry `detail`, a *string* `status`, a non-standard `schema` array (`schemas` not always
  there), `exceptionRequestId`, `timeStamp`, and no `scimType` (VENDORS.md §4).
"""

from __future__ import annotations

import base64
import contextvars
import datetime as dt
import json
import re
import urllib.parse
import uuid
from collections import deque
from typing import Any

from aiohttp import web

from tests.vendor_peers.proxy import VendorProxy

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
MAX_PAGE = 100
MAX_MEMBER_CHANGES = 100
_CURSOR_RE = re.compile(r"^[-a-zA-Z0-9+=/:_]*$")
_COMPARISON = r'([A-Za-z][\w.]*)\s+eq\s+"((?:[^"\\]|\\.)*)"'
_FILTER_RE = re.compile(rf"^\s*{_COMPARISON}(?:\s+and\s+{_COMPARISON})?\s*$", re.IGNORECASE)
USER_FILTERS = [{"username"}, {"externalid"}, {"id"}]
GROUP_FILTERS = [{"displayname"}, {"externalid"}, {"members.value"}, {"id"}, {"id", "members"}]

_request_line: contextvars.ContextVar[str] = contextvars.ContextVar("_request_line", default="")


def request_line() -> str:
    return _request_line.get()


# What rewrite() learnt about the request, for transform_response() of the same request (one task).
_paging: contextvars.ContextVar[tuple[bool, int] | None] = contextvars.ContextVar("_paging", default=None)


def aws_error(status: int, detail: str, *, with_schemas: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema": [ERROR_SCHEMA],
        "detail": detail,
        "status": str(status),
        "exceptionRequestId": str(uuid.uuid4()),
        "timeStamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
    }
    if with_schemas:
        body["schemas"] = [ERROR_SCHEMA]
    return body


def encode_cursor(start: int) -> str:
    return base64.urlsafe_b64encode(f"idx:{start}".encode()).decode()


def decode_cursor(cursor: str) -> int | None:
    if cursor == "":
        return 1
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except ValueError:
        return None
    if not text.startswith("idx:") or not text[4:].isdigit():
        return None
    return int(text[4:])


def parse_filter(expr: str) -> dict[str, str] | None:
    """`a eq "x" [and b eq "y"]` -> {a.lower(): x}; None if AWS would not accept it."""
    m = _FILTER_RE.match(expr)
    if not m:
        return None
    out: dict[str, str] = {}
    groups = m.groups()
    for attr, value in zip(groups[0::2], groups[1::2], strict=True):
        if attr is not None:
            out[attr.lower()] = json.loads(f'"{value}"')
    return out


class AwsScimProxy(VendorProxy):
    def __init__(self, upstream: str, tenant: str = "9067729b3d-94f1e0a4-a1b2-4c3d") -> None:
        super().__init__(upstream)
        self.prefix = f"/{tenant}/scim/v2"
        # Every 400 the wrapper sent: a request real AWS would have refused. Tests assert it stays empty.
        self.violations: list[str] = []
        self.member_changes: list[int] = []  # membership changes per forwarded group PATCH
        # Answers for the next writes (POST/PUT/PATCH/DELETE), before any check: 429s, 400s.
        self.write_faults: deque[web.Response] = deque()

    def fail_next_write(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self.write_faults.append(web.json_response(aws_error(status, detail), status=status, headers=headers))

    @property
    def scim_url(self) -> str:
        return self.url.rstrip("/") + self.prefix + "/"

    def _reject(self, status: int, detail: str) -> web.Response:
        if status == 400:
            self.violations.append(f"{request_line()} -> {detail}")
        return web.json_response(aws_error(status, detail), status=status)

    # ---- the checks --------------------------------------------------------------------
    async def check(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        _request_line.set(f"{request.method} {request.path_qs}")
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and self.write_faults:
            return self.write_faults.popleft()
        if not request.path.startswith(self.prefix + "/"):
            return self._reject(404, "Not found")
        parts = [p for p in request.path[len(self.prefix):].split("/") if p]
        resource = parts[0] if parts else ""
        ident = parts[1] if len(parts) > 1 else None
        method = request.method
        if resource not in ("Users", "Groups", "ServiceProviderConfig", "Schemas", "ResourceTypes") or len(parts) > 2:
            return self._reject(400, f"{method} {request.path} is not supported")
        if method == "GET" and ident is None and resource in ("Users", "Groups"):
            return await self._check_list(request, resource)
        if resource == "Users" and method in ("POST", "PUT"):
            problem = user_problem(body)
            return self._reject(400, problem) if problem else None
        if resource == "Users" and method == "PATCH":
            problem = user_patch_problem(body)
            return self._reject(400, problem) if problem else None
        if resource == "Groups" and method == "PUT":
            return self._reject(400, "PutGroup is not supported: use PATCH")
        if resource == "Groups" and method == "POST":
            return await self._check_group_create(request, body)
        if resource == "Groups" and method == "PATCH":
            problem, changes = group_patch_problem(body)
            if problem:
                return self._reject(400, problem)
            self.member_changes.append(changes)
        return None

    async def _check_list(self, request: web.Request, resource: str) -> web.StreamResponse | None:
        q = request.query
        if "startIndex" in q:
            return self._reject(400, "startIndex is not supported: use cursor")
        if resource == "Users" and ("attributes" in q or "excludedAttributes" in q):
            return self._reject(400, "attributes and excludedAttributes are not supported")
        if "count" in q:
            try:
                count = int(q["count"])
            except ValueError:
                count = 0
            if not 1 <= count <= MAX_PAGE:
                return self._reject(400, f"count must be between 1 and {MAX_PAGE}")
        if "cursor" in q and (not _CURSOR_RE.match(q["cursor"]) or decode_cursor(q["cursor"]) is None):
            return self._reject(400, "invalid cursor")
        if "filter" in q:
            parsed = parse_filter(q["filter"])
            allowed = USER_FILTERS if resource == "Users" else GROUP_FILTERS
            if parsed is None or set(parsed) not in allowed:
                return self._reject(400, f"unsupported filter: {q['filter']}")
            member = parsed.get("members.value") or parsed.get("members")
            if member is not None and not await self._exists(request, f"/Users/{urllib.parse.quote(member)}"):
                return self._reject(404, f"member {member} not found")
        return None

    async def _check_group_create(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        if not isinstance(body, dict) or not body.get("displayName"):
            return self._reject(400, "displayName is required")
        if len(body.get("members") or []) > MAX_MEMBER_CHANGES:
            return self._reject(400, f"at most {MAX_MEMBER_CHANGES} members in one request")
        flt = urllib.parse.quote(f'displayName eq "{_escape(body["displayName"])}"')
        found = await self._get(request, f"/Groups?filter={flt}")
        if isinstance(found, dict) and found.get("totalResults"):
            return web.json_response(aws_error(409, "Duplicate GroupDisplayName", with_schemas=True), status=409)
        return None

    async def _get(self, request: web.Request, path: str) -> Any:
        assert self._session is not None
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with self._session.get(self.upstream + path, headers=headers) as resp:
            if resp.status != 200:
                return None
            return await resp.json(content_type=None)

    async def _exists(self, request: web.Request, path: str) -> bool:
        return await self._get(request, path) is not None

    # ---- translation onto scim2-server -------------------------------------------------
    async def rewrite(self, method: str, path: str, query: str, body: Any) -> tuple[str, str, str, Any]:
        path = path[len(self.prefix):]
        _paging.set(None)
        if method == "GET" and path in ("/Users", "/Groups"):
            q = urllib.parse.parse_qs(query, keep_blank_values=True)
            count = int(q.get("count", [str(MAX_PAGE)])[0])
            out: dict[str, str] = {"count": str(count)}
            if "filter" in q:
                out["filter"] = q["filter"][0]
            if "cursor" in q:
                start = decode_cursor(q["cursor"][0]) or 1
                out["startIndex"] = str(start)
                _paging.set((True, start))
            query = urllib.parse.urlencode(out)
        return method, path, query, body

    async def transform_response(self, method: str, path: str, status: int, body: Any) -> tuple[int, Any]:
        if status >= 400:
            detail = body.get("detail", "") if isinstance(body, dict) else str(body or "")
            return status, aws_error(status, detail or "Request failed", with_schemas=status == 409)
        if path == "/ServiceProviderConfig":
            return status, _service_provider_config()
        if not isinstance(body, dict):
            return status, body
        resources = body.get("Resources") if "Resources" in body else [body]
        for r in resources or []:
            if isinstance(r, dict):
                (r.get("meta") or {}).pop("version", None)  # AWS: meta.version not supported
                if path.startswith("/Groups"):
                    r["members"] = []  # GetGroup/ListGroups return an empty member list
                else:
                    r.pop("groups", None)  # the groups attribute is not supported on users
        paging = _paging.get()
        if paging is not None and "Resources" in body:
            start = paging[1]
            total = int(body.get("totalResults", 0))
            shown = len(body.get("Resources") or [])
            body = {"schemas": body.get("schemas"), "itemsPerPage": shown, "Resources": body.get("Resources")}
            if start + shown <= total and shown:
                body["nextCursor"] = encode_cursor(start + shown)
        return status, body


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _service_provider_config() -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 1, "maxPayloadSize": 1048576},
        "filter": {"supported": True, "maxResults": MAX_PAGE},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                                   "description": "Authentication scheme using the OAuth Bearer Token Standard",
                                   "primary": True}],
    }


# ---- pure rules (also used by the wrapper's own tests) -----------------------------------

def _ci(body: dict[str, Any], key: str) -> Any:
    for k, v in body.items():
        if k.lower() == key.lower():
            return v
    return None


def user_problem(body: Any) -> str | None:
    """Why CreateUser / PutUser would refuse this body (None: it would accept it)."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not _ci(body, "userName"):
        return "userName is required"
    if _ci(body, "groups") is not None:
        return "groups cannot be set on a user"
    name = _ci(body, "name") or {}
    if not isinstance(name, dict) or not name.get("givenName") or not name.get("familyName"):
        return "name.givenName and name.familyName are required"
    if not _ci(body, "displayName"):
        return "displayName is required"
    emails = _ci(body, "emails") or []
    if len(emails) > 1:
        return "only one email is supported"
    if emails and emails[0].get("primary") is not True:
        return "the email must be primary"
    for key in ("phoneNumbers", "addresses"):
        if len(_ci(body, key) or []) > 1:
            return f"only one value of {key} is supported"
    return None


def user_patch_problem(body: Any) -> str | None:
    ops = body.get("Operations") if isinstance(body, dict) else None
    if not isinstance(ops, list) or not ops:
        return "Operations is required"
    for op in ops:
        path = str(op.get("path") or "")
        value = op.get("value")
        if path.lower() == "groups" or (isinstance(value, dict) and _ci(value, "groups") is not None):
            return "groups cannot be set on a user"
        emails = value if path.lower() == "emails" else (_ci(value, "emails") if isinstance(value, dict) else None)
        if isinstance(emails, list) and (len(emails) > 1 or (emails and emails[0].get("primary") is not True)):
            return "only one email is supported and it must be primary"
        if str(op.get("op", "")).lower() == "remove" and path in ("name.givenName", "name.familyName", "displayName"):
            return f"{path} is required"
    return None


def group_patch_problem(body: Any) -> tuple[str | None, int]:
    """(why PatchGroup would refuse it, number of membership changes)."""
    ops = body.get("Operations") if isinstance(body, dict) else None
    if not isinstance(ops, list) or not ops:
        return "Operations is required", 0
    changes = 0
    for op in ops:
        kind = str(op.get("op", "")).lower()
        path = str(op.get("path") or "")
        value = op.get("value")
        low = path.lower()
        if not path:
            if kind != "replace" or not isinstance(value, dict):
                return f"op {kind} without a path is not supported", 0
            if {k.lower() for k in value} - {"displayname", "externalid"}:
                return "replace without a path may only set displayName or externalId", 0
        elif low == "members":
            if kind == "replace":
                return "replacing all group memberships is not supported", 0
            if kind == "remove" and not value:
                return "removing all group memberships is not supported", 0
            if not isinstance(value, list):
                return "members value must be a list", 0
            changes += len(value)
        elif low.startswith("members[") and kind == "remove":
            changes += 1
        elif low not in ("displayname", "externalid"):
            return "only displayName, members and externalId can be patched", 0
    if changes > MAX_MEMBER_CHANGES:
        return f"{changes} membership changes in one request; at most {MAX_MEMBER_CHANGES} are allowed", 0
    return None, changes
